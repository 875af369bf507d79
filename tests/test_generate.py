"""Sampling: our loop against transformers' generate and logits processors."""

import dataclasses

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from glotta.config import GenerateConfig
from glotta.generate import generate_ids
from glotta.sampling import _filter_logits


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=64,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_matches_transformers_generate(model, penalty):
    prompt = [0, 5, 9, 17]
    cfg = GenerateConfig(temperature=0.0, repetition_penalty=penalty, max_new_tokens=20)
    ours = list(generate_ids(model, prompt, cfg, eos_id=None))
    reference = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        max_new_tokens=20,
        min_new_tokens=20,
        repetition_penalty=penalty,
        pad_token_id=0,
        eos_token_id=None,
    )[0, len(prompt) :].tolist()
    assert ours == reference


def test_filters_match_transformers_processors():
    torch.manual_seed(1)
    logits = torch.randn(64) * 3
    history = torch.tensor([3, 7, 7, 20])
    cfg = GenerateConfig(temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.2)
    ours = _filter_logits(logits, history, cfg)
    scores = logits[None].clone()
    ids = history[None]
    for processor in (
        RepetitionPenaltyLogitsProcessor(1.2),
        TemperatureLogitsWarper(0.7),
        TopKLogitsWarper(20),
        TopPLogitsWarper(0.8),
    ):
        scores = processor(ids, scores)
    assert torch.equal(torch.isfinite(ours), torch.isfinite(scores[0]))
    finite = torch.isfinite(ours)
    assert torch.allclose(ours[finite], scores[0][finite], atol=1e-5)


def test_sampling_is_seeded_and_stops_at_context(model):
    cfg = GenerateConfig(
        temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=100, seed=3
    )
    a = list(generate_ids(model, [0, 1, 2], cfg, eos_id=None))
    b = list(generate_ids(model, [0, 1, 2], cfg, eos_id=None))
    c = list(generate_ids(model, [0, 1, 2], dataclasses.replace(cfg, seed=4), eos_id=None))
    assert a == b and a != c
    assert len(a) == 64 - 3  # learned positions end at n_positions


def test_top_k_keeps_tokens_tied_with_the_kth_like_transformers():
    logits = torch.tensor([3.0, 1.0, 1.0, 1.0, 0.0, -2.0])
    cfg = GenerateConfig(temperature=1.0, top_k=2, top_p=1.0, repetition_penalty=1.0)
    ours = _filter_logits(logits, torch.tensor([], dtype=torch.long), cfg)
    reference = TopKLogitsWarper(2)(torch.tensor([[0]]), logits[None].clone())[0]
    assert torch.equal(torch.isfinite(ours), torch.isfinite(reference))
    assert int(torch.isfinite(ours).sum()) == 4
