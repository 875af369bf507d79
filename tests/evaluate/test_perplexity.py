"""Perplexity and bits per byte against a plain, independent computation with transformers."""

import json
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


def _nll_of_last_token(model, inputs: list[int]) -> float:
    """-log p(inputs[-1] | inputs[:-1]) from one plain forward pass, log-softmax by hand."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([inputs])).logits[0, -2].double()
    return float(torch.logsumexp(logits, -1) - logits[inputs[-1]])


def test_stride_one_gives_every_token_the_longest_history(model):
    """Independent reference: each token scored on its own with the most history that fits in
    the context (context - 1 tokens before it, the end-of-text token first)."""
    rng = np.random.default_rng(3)
    doc = [int(x) for x in rng.integers(1, 50, size=37)]
    sequence, context = [0, *doc], 16
    expected = sum(
        _nll_of_last_token(model, sequence[max(0, t - context + 1) : t + 1])
        for t in range(1, len(sequence))
    )
    score = score_token_documents(model, [(doc, 37)], 0, context=context, stride=1, batch_size=4)
    assert score.tokens == 37
    assert score.nll == pytest.approx(expected, rel=1e-6)


def _windowed_reference(model, doc: list[int], context: int, stride: int) -> float:
    """The sliding window written out plainly, with transformers' own ``labels=`` loss: windows
    advance by ``stride``; a window scores only the targets no earlier window scored."""
    sequence = [0, *doc]
    total, scored_until, start = 0.0, 1, 0
    while scored_until < len(sequence):
        start = max(0, min(start, len(sequence) - context))
        window = sequence[start : start + context]
        labels = torch.tensor([window])
        first = scored_until - start  # index in the window of the first new target
        labels[0, :first] = -100
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([window]), labels=labels).loss
        count = len(window) - first
        total += loss.item() * count
        scored_until = start + len(window)
        # the next window starts stride later, but never after the input that predicts its
        # first target
        start = min(start + stride, scored_until - 1)
    return total


@pytest.mark.parametrize("stride", [16, 8, 5])
def test_windows_match_a_plain_sliding_window_with_transformers_loss(model, stride):
    """stride = context: windows do not overlap (each starts with only the one token that
    predicts its first target); smaller strides keep context - stride tokens of history."""
    rng = np.random.default_rng(4)
    doc = [int(x) for x in rng.integers(1, 50, size=45)]
    expected = _windowed_reference(model, doc, 16, stride)
    score = score_token_documents(model, [(doc, 45)], 0, context=16, stride=stride, batch_size=3)
    assert score.nll == pytest.approx(expected, rel=1e-5)


def test_stride_equal_to_context_is_worse_than_overlapping_windows_for_a_trained_model(tiny_run):
    """On real held-out Russian, a trained model predicts better with more history: the
    non-overlapping windows (stride = context) score a higher NLL than stride = context / 4."""
    from transformers import AutoTokenizer

    from glotta.models import load_causal_lm

    _, run_dir = tiny_run
    model = load_causal_lm(run_dir.export)
    tokenizer = AutoTokenizer.from_pretrained(run_dir.export)
    lines = (run_dir.corpus / "test.jsonl").read_text("utf-8").splitlines()
    docs = [json.loads(line)["text"] for line in lines][:20]
    encoded = [(tokenizer.encode(d, add_special_tokens=False), len(d.encode())) for d in docs]
    assert sum(len(ids) for ids, _ in encoded) > 400  # long enough for several windows
    eos = tokenizer.eos_token_id
    # a short context, where history matters most to a model trained for 200 steps
    fresh = score_token_documents(model, encoded, eos, context=8, stride=8, batch_size=32)
    overlapping = score_token_documents(model, encoded, eos, context=8, stride=2, batch_size=32)
    assert fresh.tokens == overlapping.tokens
    assert fresh.nll > overlapping.nll


def test_windows_exactly_and_stride_out_of_range():
    from glotta.evaluate.perplexity import Window

    assert list(sliding_windows(5, 16, 8)) == [Window(0, 0, 5, 1)]
    assert list(sliding_windows(20, 8, 8, document=3)) == [
        Window(3, 0, 8, 1),
        Window(3, 7, 15, 8),  # starts at the input that predicts its first target
        Window(3, 12, 20, 15),  # the last window ends at the end, with all the history it fits
    ]
    for stride in (0, 17):
        with pytest.raises(ValueError, match=rf"stride must be in 1..context \(16\), got {stride}"):
            list(sliding_windows(40, 16, stride))


def test_score_as_dict_and_empty_scores():
    score = Score(nll=6.0, tokens=3, bytes=4, documents=2)
    assert score.as_dict() == {
        "perplexity": math.exp(2.0),
        "bits_per_byte": 6.0 / math.log(2) / 4,
        "loss": 2.0,
        "nll_nats": 6.0,
        "tokens": 3,
        "bytes": 4,
        "documents": 2,
    }
    empty = Score().as_dict()
    assert all(math.isnan(empty[k]) for k in ("perplexity", "bits_per_byte", "loss"))


def test_unigram_baseline_sums_documents_and_counts_past_one_chunk():
    """More training tokens than one counting chunk (2**24): every chunk counts."""
    train = np.zeros(2**24 + 3, dtype=np.uint16)
    train[-3:] = [1, 1, 2]  # all non-zero tokens in the second chunk
    docs = [([1, 2], 5), ([0, 0, 1], 7), ([3], 1)]
    score = unigram_baseline(train, vocab_size=4, documents=docs)
    n, v = len(train), 4
    log_p = {t: math.log((c + 1) / (n + v)) for t, c in {0: n - 3, 1: 2, 2: 1, 3: 0}.items()}
    expected = -sum(log_p[t] for ids, _ in docs for t in ids)
    assert score.nll == pytest.approx(expected, rel=1e-12)
    assert (score.tokens, score.bytes, score.documents) == (6, 13, 3)
