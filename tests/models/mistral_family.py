"""A model family that lives only in the tests: Mistral through transformers' MistralForCausalLM.

It is registered from the test that uses it and touches no other file of glotta — the proof that
a family is one module plus one ``register_family`` line, decoding included (its blocks have
Llama's shape, so it names the shared "llama-style" decode layout).
"""

from __future__ import annotations

from transformers import AutoModelForCausalLM, MistralConfig, MistralForCausalLM

from glotta.models import ModelFamily, Shape


class MistralFamily(ModelFamily):
    name = "test-mistral"
    objectives = ("clm",)
    model_types = ("mistral",)
    presets = {"tiny": Shape(2, 64, 4, 2, 160)}
    rotary_positions = True
    model_class = MistralForCausalLM
    auto_class = AutoModelForCausalLM
    decode_layout = "llama-style"  # generation decodes it with the static KV cache

    def hf_config(self, cfg, vocab_size, block_size, special_ids) -> MistralConfig:
        shape = self.shape(cfg)
        eos = special_ids["eos"]
        return MistralConfig(
            vocab_size=vocab_size,
            hidden_size=shape.n_embd,
            intermediate_size=shape.n_inner,
            num_hidden_layers=shape.n_layer,
            num_attention_heads=shape.n_head,
            num_key_value_heads=shape.n_kv_head,
            max_position_embeddings=cfg.n_positions or block_size,
            sliding_window=None,
            tie_word_embeddings=True,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
        )

    def blocks(self, model):
        return model.base_model.layers

    def extend_context(self, model, n_positions: int, rope_theta: float = 0.0) -> bool:
        if n_positions <= model.config.max_position_embeddings:
            return False
        model.config.max_position_embeddings = n_positions
        return True
