"""Llama-style causal LMs (Touvron et al., 2023) through transformers' ``LlamaForCausalLM``:
RMSNorm, SwiGLU feed-forward, rotary positions (RoPE) and grouped-query attention
(``model.n_kv_head`` key/value heads shared by ``n_head / n_kv_head`` query heads each). The same
shape as Mistral, SmolLM2 and Qwen2 (without their sliding windows / biases), which llama.cpp,
vLLM and every inference engine serve.

RoPE has no position table: a longer context needs no new weights, only a larger
``max_position_embeddings`` and, optionally, a larger RoPE base (``rope_theta``) in the phase
that trains at the longer context (Xiong et al., 2023, "Effective long-context scaling").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from glotta.config import ModelConfig
from glotta.models.family import ModelFamily, Shape

if TYPE_CHECKING:
    from transformers import LlamaConfig

DEFAULT_ROPE_THETA = 10000.0

# SmolLM2's shapes are those of HuggingFaceTB/SmolLM2-135M and -360M's config.json (Allal et
# al., 2025): 30 x 576, 9 heads, 3 key/value heads, feed-forward 1536, RoPE base 100,000, tied
# embeddings; 32 x 960, 15 heads, 5 key/value heads, feed-forward 2560. tiny is for tests.
PRESETS = {
    "tiny": Shape(2, 128, 4, 2),
    "smollm2-135m": Shape(30, 576, 9, 3, 1536),
    "smollm2-360m": Shape(32, 960, 15, 5, 2560),
}
PRESET_ROPE_THETA = {"smollm2-135m": 100000.0, "smollm2-360m": 100000.0}


def swiglu_width(n_embd: int) -> int:
    """Feed-forward width that gives SwiGLU's three matrices GPT-2's 8 d^2 parameters: 8/3 d,
    rounded up to a multiple of 32 (Shazeer, 2020; Llama rounds to 256 at larger widths)."""
    return 32 * math.ceil(8 * n_embd / 3 / 32)


class LlamaFamily(ModelFamily):
    name = "llama"
    objectives = ("clm",)
    model_types = ("llama",)
    presets = PRESETS
    pipeline_tag = "text-generation"
    rotary_positions = True
    model_class = "LlamaForCausalLM"
    auto_class = "AutoModelForCausalLM"

    def hf_config(self, cfg: ModelConfig, vocab_size, block_size, special_ids) -> LlamaConfig:
        from transformers import LlamaConfig

        shape = self.shape(cfg)
        theta = cfg.rope_theta or PRESET_ROPE_THETA.get(cfg.preset, DEFAULT_ROPE_THETA)
        eos = special_ids["eos"]
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=shape.n_embd,
            intermediate_size=shape.n_inner or swiglu_width(shape.n_embd),
            num_hidden_layers=shape.n_layer,
            num_attention_heads=shape.n_head,
            num_key_value_heads=shape.n_kv_head or shape.n_head,
            max_position_embeddings=cfg.n_positions or block_size,
            rope_parameters={"rope_type": "default", "rope_theta": theta},
            rms_norm_eps=1e-5,
            # Llama has no residual or embedding dropout; [model].dropout reaches attention.
            attention_dropout=cfg.dropout,
            tie_word_embeddings=cfg.tie_embeddings,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
        )

    def problems(self, cfg: ModelConfig, block_size: int) -> list[str]:
        found = super().problems(cfg, block_size)
        if cfg.init_from or any("preset" in p for p in found):
            return found
        shape = self.shape(cfg)
        kv_heads = shape.n_kv_head or shape.n_head
        if shape.n_head % kv_heads:
            found.append(
                f"model.n_head ({shape.n_head}) must be a multiple of model.n_kv_head ({kv_heads})"
            )
        if (shape.n_embd // shape.n_head) % 2:
            found.append(
                f"model.n_embd / model.n_head = {shape.n_embd // shape.n_head} must be even "
                "(rotary positions rotate pairs of dimensions)"
            )
        return found

    def blocks(self, model):
        return model.base_model.layers

    def extend_context(self, model, n_positions: int, rope_theta: float = 0.0) -> bool:
        config = model.config
        changed = False
        if n_positions > config.max_position_embeddings:
            config.max_position_embeddings = n_positions
            changed = True
        if rope_theta and rope_theta != config.rope_parameters.get("rope_theta"):
            config.rope_parameters = {**config.rope_parameters, "rope_theta": rope_theta}
            # The rotary frequencies are a buffer computed from the base: compute them anew.
            from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

            device = next(model.parameters()).device
            model.base_model.rotary_emb = LlamaRotaryEmbedding(config).to(device)
            changed = True
        return changed

    def card_shape(self, config) -> dict:
        shape = super().card_shape(config)
        shape["kv_heads"] = config.num_key_value_heads
        shape["rope_theta"] = config.rope_parameters.get("rope_theta")
        return shape
