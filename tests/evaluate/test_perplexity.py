"""Perplexity and bits per byte against a plain, independent computation with transformers."""

import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from glotta.evaluate.perplexity import (
    Score,
    score_token_documents,
    sliding_windows,
    unigram_baseline,
)


@pytest.mark.parametrize("length", [2, 5, 16, 17, 40, 101])
@pytest.mark.parametrize("context, stride", [(16, 8), (16, 16), (16, 1), (8, 3)])
def test_sliding_windows_score_every_target_once_with_enough_history(length, context, stride):
    scored = []
    for w in sliding_windows(length, context, stride):
        assert 0 <= w.start < w.first_target < w.end <= length
        assert w.end - w.start <= context
        targets = list(range(w.first_target, w.end))
        scored += targets
        # every scored token sees at least context - stride tokens of history (or all before it)
        assert all(t - w.start >= min(t, context - stride) for t in targets)
    assert scored == list(range(1, length))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=50,
        n_positions=16,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def _independent_nll(model, ids: list[int], eos: int) -> float:
    """Summed NLL of a short document with transformers' own loss (mean over len(ids) labels)."""
    inputs = torch.tensor([[eos, *ids]])
    with torch.no_grad():
        loss = model(input_ids=inputs, labels=inputs).loss
    return loss.item() * len(ids)


def test_matches_transformers_loss_when_documents_fit(model):
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(1, 50, size=n)) for n in (3, 15, 9, 1)]
    byte_counts = [10, 40, 22, 3]
    score = score_token_documents(
        model, zip(docs, byte_counts, strict=True), eos_id=0, context=16, stride=8, batch_size=3
    )
    expected = sum(_independent_nll(model, d, 0) for d in docs)
    assert score.tokens == sum(map(len, docs)) and score.bytes == sum(byte_counts)
    assert score.nll == pytest.approx(expected, rel=1e-5)
    assert score.perplexity == pytest.approx(math.exp(expected / score.tokens), rel=1e-5)
    assert score.bits_per_byte == pytest.approx(expected / math.log(2) / 75, rel=1e-5)


def test_long_documents_use_the_window_context(model):
    """A 40-token document: with stride = context every window starts fresh (less context)."""
    rng = np.random.default_rng(1)
    doc = list(rng.integers(1, 50, size=40))
    overlapping = score_token_documents(model, [(doc, 40)], 0, context=16, stride=4, batch_size=2)
    # Independent check of the first window: identical to transformers on the first 16 inputs.
    first = score_token_documents(model, [(doc[:15], 15)], 0, context=16, stride=4, batch_size=1)
    assert first.nll == pytest.approx(_independent_nll(model, doc[:15], 0), rel=1e-5)
    assert overlapping.tokens == 40
    assert np.isfinite(overlapping.nll) and overlapping.nll > first.nll


def test_batching_does_not_change_the_result(model):
    rng = np.random.default_rng(2)
    docs = [(list(rng.integers(1, 50, size=n)), n) for n in (30, 7, 50, 2)]
    a = score_token_documents(model, docs, 0, context=16, stride=8, batch_size=1)
    b = score_token_documents(model, docs, 0, context=16, stride=8, batch_size=5)
    assert a.nll == pytest.approx(b.nll, rel=1e-6) and a.tokens == b.tokens


def test_unigram_baseline_is_add_one_frequency():
    train = np.array([1, 1, 1, 2, 0], dtype=np.uint16)
    score = unigram_baseline(train, vocab_size=4, documents=[([1, 2], 5)])
    p1, p2 = 4 / 9, 2 / 9  # (count + 1) / (5 + 4)
    assert score.nll == pytest.approx(-math.log(p1) - math.log(p2))
    assert score.tokens == 2 and score.bytes == 5


def test_score_addition():
    total = Score(1.0, 2, 3, 1) + Score(2.0, 3, 4, 1)
    assert (total.nll, total.tokens, total.bytes, total.documents) == (3.0, 5, 7, 2)
