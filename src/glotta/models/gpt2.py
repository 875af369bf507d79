"""GPT-2 (Radford et al., 2019): learned absolute positions, LayerNorm, GELU MLP, tied head."""

from __future__ import annotations

from typing import TYPE_CHECKING

from glotta.config import ModelConfig
from glotta.models.family import ModelFamily, Shape

if TYPE_CHECKING:
    from transformers import GPT2Config


class GPT2Family(ModelFamily):
    name = "gpt2"
    objectives = ("clm",)
    model_types = ("gpt2",)
    # small..xl are OpenAI's GPT-2 sizes; tiny is for tests and laptops.
    presets = {
        "tiny": Shape(2, 128, 2),
        "small": Shape(12, 768, 12),
        "medium": Shape(24, 1024, 16),
        "large": Shape(36, 1280, 20),
        "xl": Shape(48, 1600, 25),
    }
    model_class = "GPT2LMHeadModel"
    auto_class = "AutoModelForCausalLM"
    decode_layout = "gpt2-style"

    def hf_config(self, cfg: ModelConfig, vocab_size, block_size, special_ids) -> GPT2Config:
        from transformers import GPT2Config

        shape = self.shape(cfg)
        eos = special_ids["eos"]
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=cfg.n_positions or block_size,
            n_embd=shape.n_embd,
            n_layer=shape.n_layer,
            n_head=shape.n_head,
            n_inner=shape.n_inner or None,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
            tie_word_embeddings=cfg.tie_embeddings,
        )

    def problems(self, cfg: ModelConfig, block_size: int) -> list[str]:
        found = super().problems(cfg, block_size)
        if cfg.n_kv_head:
            found.append("model.n_kv_head: GPT-2 has no grouped-query attention; set it to 0")
        return found

    def blocks(self, model):
        return model.base_model.h

    def context_length(self, config) -> int:
        return int(config.n_positions)

    def set_context_length(self, config, n_positions: int) -> None:
        config.n_positions = n_positions

    def position_embeddings(self, model):
        return model.base_model.wpe

    def card_shape(self, config) -> dict:
        return {
            "layers": config.n_layer,
            "width": config.n_embd,
            "heads": config.n_head,
            "context": config.n_positions,
        }


def gpt2_config(cfg: ModelConfig, vocab_size: int, block_size: int, eos_id: int) -> GPT2Config:
    """GPT2Config from a preset (kept for the benchmarks and tests that build GPT-2 directly)."""
    return GPT2Family().hf_config(cfg, vocab_size, block_size, {"eos": eos_id})
