"""GPT-2 (Radford et al., 2019): learned absolute positions, LayerNorm, GELU MLP, tied head."""

from __future__ import annotations

from typing import TYPE_CHECKING

from glotta.config import ModelConfig
from glotta.models.family import ModelFamily, Shape
from glotta.models.gguf_spec import GGUFSpec, float32_state, head_is_tied, unsupported

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

    has_residual_projections = True

    def residual_projections(self, model):
        return [m for b in self.blocks(model) for m in (b.attn.c_proj, b.mlp.c_proj)]

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

    def gguf(self, model) -> GGUFSpec:
        """llama.cpp's "gpt2" architecture: the same blocks, with fused QKV."""
        from gguf import Keys

        c = model.config
        # llama.cpp's GELU is the tanh approximation, which is HF GPT-2's "gelu_new".
        if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            raise unsupported("gpt2", "activation_function", c.activation_function,
                              "llama.cpp's gpt2 uses the tanh GELU (gelu_new)")  # fmt: skip
        if c.scale_attn_by_inverse_layer_idx or c.reorder_and_upcast_attn:
            raise unsupported("gpt2", "scale_attn_by_inverse_layer_idx", True,
                              "llama.cpp scales attention by 1/sqrt(head size) only")  # fmt: skip
        metadata = {
            Keys.LLM.CONTEXT_LENGTH: c.n_positions,
            Keys.LLM.EMBEDDING_LENGTH: c.n_embd,
            Keys.LLM.FEED_FORWARD_LENGTH: c.n_inner or 4 * c.n_embd,
            Keys.LLM.BLOCK_COUNT: c.n_layer,
            Keys.LLM.VOCAB_SIZE: c.vocab_size,
            Keys.Attention.HEAD_COUNT: c.n_head,
            Keys.Attention.LAYERNORM_EPS: c.layer_norm_epsilon,
        }
        state = float32_state(model.base_model)
        tensors = [
            ("token_embd.weight", state["wte.weight"]),
            ("position_embd.weight", state["wpe.weight"]),
        ]
        # HF GPT-2 stores its projections as Conv1D, weight (in, out) for y = x W; GGUF wants
        # nn.Linear's (out, in), so every 2-D block weight is transposed. c_attn's outputs are
        # q, k, v one after the other, the order llama.cpp cuts attn_qkv into.
        names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output",
                 "ln_2": "ffn_norm", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}  # fmt: skip
        for i in range(c.n_layer):
            for hf, ours in names.items():
                weight = state[f"h.{i}.{hf}.weight"]
                tensors.append((f"blk.{i}.{ours}.weight", weight.T if weight.ndim == 2 else weight))
                tensors.append((f"blk.{i}.{ours}.bias", state[f"h.{i}.{hf}.bias"]))
        tensors += [("output_norm.weight", state["ln_f.weight"]),
                    ("output_norm.bias", state["ln_f.bias"])]  # fmt: skip
        if not head_is_tied(model):
            head = model.get_output_embeddings().weight.detach().float().numpy()
            tensors.append(("output.weight", head))
        return GGUFSpec("gpt2", metadata, tensors)


def gpt2_config(cfg: ModelConfig, vocab_size: int, block_size: int, eos_id: int) -> GPT2Config:
    """GPT2Config from a preset (kept for the benchmarks and tests that build GPT-2 directly)."""
    return GPT2Family().hf_config(cfg, vocab_size, block_size, {"eos": eos_id})
