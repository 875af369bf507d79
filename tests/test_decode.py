"""The static-cache decoder and batched generation: against the transformers models they run.

GPT-2 (learned positions) and Llama (RoPE, grouped-query attention: 4 heads, 2 key/value
heads), tiny random models: logits of the compact forward equal the HF forward's, greedy
decoding gives ``model.generate``'s tokens, a batch of prompts of different lengths gives each
prompt's batch-1 output, and sampling gives the tokens of a reference loop that recomputes the
whole sequence with the HF model at every step and samples with the same seeded sampler.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from glotta.config import GenerateConfig
from glotta.decode import KVDecoder, RecomputeDecoder, make_decoder
from glotta.generate import generate_batch, generate_ids
from glotta.sampling import sample_next

PROMPTS = [[0, 5, 9, 17], [0, 3], [0, 1, 2, 3, 4, 5, 6, 7, 8], [0, 40, 41]]


def tiny_gpt2():
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=48,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request):
    return tiny_gpt2() if request.param == "gpt2" else tiny_llama()


def hf_greedy(model, prompt, new_tokens, penalty=1.0):
    ids = torch.tensor([prompt])
    return model.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
        min_new_tokens=new_tokens, repetition_penalty=penalty, pad_token_id=0, eos_token_id=None,
    )[0, len(prompt) :].tolist()  # fmt: skip


@pytest.mark.parametrize("decoder_class", [KVDecoder, RecomputeDecoder])
def test_decoder_logits_equal_the_hf_forward(model, decoder_class):
    tokens = torch.tensor([[0, 7, 3, 19, 22, 5, 40, 2], [0, 11, 12, 13, 14, 15, 16, 17]])
    with torch.no_grad():
        full = model(tokens).logits
    decoder = decoder_class(model, 2, 48)
    # Prefill rows of different lengths (row 1 right-padded), then one token at a time.
    lengths = [5, 3]
    prefill = decoder.forward(
        tokens[:, :5], torch.arange(5).expand(2, 5), torch.tensor(lengths) - 1
    )
    for row, n in enumerate(lengths):
        torch.testing.assert_close(prefill[row], full[row, n - 1], rtol=1e-5, atol=1e-5)
    for step in range(3):
        at = torch.tensor([[lengths[0] + step], [lengths[1] + step]])
        ids = tokens.gather(1, at)
        logits = decoder.forward(ids, at, torch.zeros(2, dtype=torch.long))
        for row in range(2):
            torch.testing.assert_close(logits[row], full[row, at[row, 0]], rtol=1e-5, atol=1e-5)


def test_glotta_models_get_the_static_cache_decoder(model):
    assert isinstance(make_decoder(model), KVDecoder)
    head = model.get_output_embeddings().weight
    assert id(head) in make_decoder(model).layout.long_rows  # the transposed head copy, on a CPU


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_equals_transformers_generate(model, penalty):
    cfg = GenerateConfig(temperature=0.0, repetition_penalty=penalty, max_new_tokens=20)
    for prompt in PROMPTS:
        assert list(generate_ids(model, prompt, cfg, eos_id=None)) == hf_greedy(
            model, prompt, 20, penalty
        )


def test_batch_rows_equal_their_batch_1_outputs_and_stop_on_their_own(model):
    cfg = GenerateConfig(temperature=0.0, repetition_penalty=1.2, max_new_tokens=12)
    alone = [list(generate_ids(model, p, cfg, eos_id=None)) for p in PROMPTS]
    assert generate_batch(model, PROMPTS, cfg, eos_id=None) == alone
    # Row 0's 4th token as end-of-text: row 0 stops there, rows that never produce it do not.
    eos = alone[0][3]
    expected = [a[: a.index(eos)] if eos in a else a for a in alone]
    assert generate_batch(model, PROMPTS, cfg, eos_id=eos) == expected
    assert len(expected[0]) <= 3 and any(len(e) == 12 for e in expected)
    # A stop rule per row (what stop strings use): row 2 ends after 5 tokens, others run on.
    cut = generate_batch(
        model, PROMPTS, cfg, None, stop=lambda row, ids: row == 2 and len(ids) == 5
    )
    assert cut == [alone[0], alone[1], alone[2][:5], alone[3]]


def reference_sampling(model, prompt, cfg):
    """glotta's sampler over the plain HF forward (whole sequence each step, no cache)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(cfg.max_new_tokens):
            logits = model(torch.tensor([ids])).logits[0, -1]
            ids.append(sample_next(logits, torch.tensor(ids), cfg, generator))
    return ids[len(prompt) :]


def test_sampling_gives_the_reference_samplers_tokens_alone_and_batched(model):
    cfg = GenerateConfig(temperature=0.9, top_k=20, top_p=0.9, repetition_penalty=1.1,
                         max_new_tokens=15, seed=5)  # fmt: skip
    seeds = [5, 6, 7, 8]
    expected = [
        reference_sampling(model, p, dataclasses.replace(cfg, seed=s))
        for p, s in zip(PROMPTS, seeds, strict=True)
    ]
    assert list(generate_ids(model, PROMPTS[0], cfg, None)) == expected[0]
    assert generate_batch(model, PROMPTS, cfg, None, seeds=seeds) == expected
    assert generate_batch(model, PROMPTS, cfg, None) == expected  # default seeds: seed + row


def test_rows_stop_at_the_context_and_empty_prompts_produce_nothing(model):
    cfg = GenerateConfig(temperature=0.0, max_new_tokens=100)
    out = generate_batch(model, [[0, 1, 2], [], list(range(48))], cfg, eos_id=None)
    assert len(out[0]) == 48 - 3 and out[1] == [] and out[2] == []
