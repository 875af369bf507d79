"""Decoding belongs to the family: a Llama-shaped family added from a test (one file, one
``decode_layout`` line) decodes with transformers' logits, and a model no layout computes
correctly is recomputed with a warning that says why, never decoded wrongly or slowly unseen."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from glotta.config import GenerateConfig, ModelConfig
from glotta.decode import KVDecoder, RecomputeDecoder, make_decoder
from glotta.generate import generate_batch
from glotta.models import decode_layout, family, register_family
from glotta.models.decoding import NoDecodeLayout
from tests.models.mistral_family import MistralFamily

TOKENS = torch.tensor([[0, 7, 3, 19, 22, 5, 40, 2], [0, 11, 12, 13, 14, 15, 16, 17]])
SIZES = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48,
             bos_token_id=0, eos_token_id=0, pad_token_id=0)  # fmt: skip


class Qwen3Family(MistralFamily):
    """Qwen3 normalises queries and keys per head, which the llama-style layout does not: a
    family that names the layout anyway must be refused, not decoded wrongly."""

    name = "test-qwen3"
    model_types = ("qwen3",)


@pytest.fixture(scope="module")
def mistral():
    register_family(MistralFamily())
    torch.manual_seed(0)
    cfg = ModelConfig(arch="test-mistral", preset="tiny")
    return family("test-mistral").build(cfg, 64, 48, {"eos": 0}).eval()


def decoded_logits(decoder, lengths: list[int], steps: int) -> list[torch.Tensor]:
    """Logits of a right-padded prefill of ``lengths`` tokens per row, then ``steps`` single
    tokens per row, as (row, position) -> logits pairs in one list."""
    width = max(lengths)
    prefill = decoder.forward(
        TOKENS[:, :width], torch.arange(width).expand(2, width), torch.tensor(lengths) - 1
    )
    found = [((row, n - 1), prefill[row]) for row, n in enumerate(lengths)]
    for step in range(steps):
        at = torch.tensor([[n + step] for n in lengths])
        logits = decoder.forward(TOKENS.gather(1, at), at, torch.zeros(2, dtype=torch.long))
        found += [((row, int(at[row, 0])), logits[row]) for row in range(2)]
    return found


def test_a_llama_layout_family_from_a_test_decodes_with_transformers_logits(mistral):
    decoder = make_decoder(mistral, 2, 48)
    assert isinstance(decoder, KVDecoder)
    with torch.no_grad():
        full = mistral(TOKENS).logits
    for (row, position), logits in decoded_logits(decoder, [5, 3], 3):
        torch.testing.assert_close(logits, full[row, position], rtol=1e-5, atol=1e-5)

    cfg = GenerateConfig(temperature=0.0, max_new_tokens=10)
    prompt = [0, 5, 9, 17]
    ids = torch.tensor([prompt])
    expected = mistral.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10,
        min_new_tokens=10, pad_token_id=0, eos_token_id=None,
    )[0, len(prompt) :].tolist()  # fmt: skip
    assert generate_batch(mistral, [prompt, [0, 3]], cfg, eos_id=None)[0] == expected


def test_a_window_the_layout_does_not_implement_is_recomputed_with_a_warning(mistral, caplog):
    config = MistralConfig(**SIZES, sliding_window=4)
    torch.manual_seed(0)
    windowed = MistralForCausalLM(config).eval()
    with pytest.raises(NoDecodeLayout, match="sliding window"):
        decode_layout(windowed)
    with caplog.at_level(logging.WARNING, logger="glotta.decode"):
        decoder = make_decoder(windowed, 2, 48)
    assert isinstance(decoder, RecomputeDecoder)
    assert "recomputes the whole prefix" in caplog.text and "sliding window" in caplog.text
    with torch.no_grad():
        full = windowed(TOKENS).logits
    for (row, position), logits in decoded_logits(decoder, [8, 3], 0):
        torch.testing.assert_close(logits, full[row, position], rtol=1e-5, atol=1e-5)


def test_a_block_with_modules_the_layout_does_not_know_is_refused():
    register_family(Qwen3Family())
    torch.manual_seed(0)
    qwen3 = Qwen3ForCausalLM(Qwen3Config(**SIZES, head_dim=8)).eval()
    with pytest.raises(NoDecodeLayout, match=r"self_attn modules \['k_norm', 'q_norm'\]"):
        decode_layout(qwen3)


def test_a_model_no_family_covers_is_recomputed_with_a_warning(caplog):
    torch.manual_seed(0)
    neox = GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=64,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=48,
        )  # fmt: skip
    ).eval()
    with caplog.at_level(logging.WARNING, logger="glotta.decode"):
        assert isinstance(make_decoder(neox), RecomputeDecoder)
    assert "no model family covers 'gpt_neox' models" in caplog.text
    cfg = GenerateConfig(temperature=0.0, max_new_tokens=4)
    assert len(generate_batch(neox, [[0, 1, 2]], cfg, eos_id=None)[0]) == 4
