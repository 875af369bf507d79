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
from glotta.models.gguf_spec import GGUFSpec, float32_state, head_is_tied, unsupported

if TYPE_CHECKING:
    import numpy as np
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
    rotary_positions = True
    model_class = "LlamaForCausalLM"
    auto_class = "AutoModelForCausalLM"
    decode_layout = "llama-style"

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

    has_residual_projections = True

    def residual_projections(self, model):
        return [m for b in self.blocks(model) for m in (b.self_attn.o_proj, b.mlp.down_proj)]

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

    def gguf(self, model) -> GGUFSpec:
        """llama.cpp's "llama" architecture (grouped-query attention, RoPE base, tied or not)."""
        from gguf import Keys

        c = model.config
        rope = c.rope_parameters or {}
        if rope.get("rope_type", "default") != "default":
            raise unsupported("llama", "rope_parameters.rope_type", rope.get("rope_type"),
                              "only plain RoPE (a base, no scaling) is exported")  # fmt: skip
        if c.hidden_act != "silu" or c.attention_bias or c.mlp_bias:
            raise unsupported("llama", "hidden_act / attention_bias / mlp_bias",
                              (c.hidden_act, c.attention_bias, c.mlp_bias),
                              "llama.cpp's llama is SwiGLU without biases")  # fmt: skip
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv_heads = c.num_key_value_heads or c.num_attention_heads
        metadata = {
            Keys.LLM.CONTEXT_LENGTH: c.max_position_embeddings,
            Keys.LLM.EMBEDDING_LENGTH: c.hidden_size,
            Keys.LLM.FEED_FORWARD_LENGTH: c.intermediate_size,
            Keys.LLM.BLOCK_COUNT: c.num_hidden_layers,
            Keys.LLM.VOCAB_SIZE: c.vocab_size,
            Keys.Attention.HEAD_COUNT: c.num_attention_heads,
            Keys.Attention.HEAD_COUNT_KV: kv_heads,
            Keys.Attention.KEY_LENGTH: head_dim,
            Keys.Attention.VALUE_LENGTH: head_dim,
            Keys.Attention.LAYERNORM_RMS_EPS: c.rms_norm_eps,
            Keys.Rope.DIMENSION_COUNT: head_dim,
            # The base of the last training phase: extend_context writes it into the config.
            Keys.Rope.FREQ_BASE: float(rope.get("rope_theta", DEFAULT_ROPE_THETA)),
        }
        state = float32_state(model.base_model)
        tensors = [("token_embd.weight", state["embed_tokens.weight"])]
        for i in range(c.num_hidden_layers):
            p = f"layers.{i}."
            tensors += [
                (f"blk.{i}.attn_norm.weight", state[p + "input_layernorm.weight"]),
                (f"blk.{i}.attn_q.weight",
                 rope_pairs_interleaved(state[p + "self_attn.q_proj.weight"], c.num_attention_heads)),
                (f"blk.{i}.attn_k.weight",
                 rope_pairs_interleaved(state[p + "self_attn.k_proj.weight"], kv_heads)),
                (f"blk.{i}.attn_v.weight", state[p + "self_attn.v_proj.weight"]),
                (f"blk.{i}.attn_output.weight", state[p + "self_attn.o_proj.weight"]),
                (f"blk.{i}.ffn_norm.weight", state[p + "post_attention_layernorm.weight"]),
                (f"blk.{i}.ffn_gate.weight", state[p + "mlp.gate_proj.weight"]),
                (f"blk.{i}.ffn_up.weight", state[p + "mlp.up_proj.weight"]),
                (f"blk.{i}.ffn_down.weight", state[p + "mlp.down_proj.weight"]),
            ]  # fmt: skip
        tensors.append(("output_norm.weight", state["norm.weight"]))
        if not head_is_tied(model):  # tied: llama.cpp reuses token_embd when output is absent
            head = model.get_output_embeddings().weight.detach().float().numpy()
            tensors.append(("output.weight", head))
        return GGUFSpec("llama", metadata, tensors)


def rope_pairs_interleaved(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder a query/key projection's output rows from HF's rotate-half RoPE layout to the
    interleaved one of llama.cpp's "llama" rope.

    HF rotates dimension j of a head together with j + head_dim/2; GGML's normal rope rotates
    2j with 2j+1. Putting row j at 2j and row j + head_dim/2 at 2j+1 in every head makes both
    rotate the same pairs by the same angles, so q.k, and the attention, are unchanged.
    """
    out_dim = weight.shape[0]
    half = out_dim // n_heads // 2
    return weight.reshape(n_heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
