"""Decode layouts: a family's transformer block written as a few tensor operations per layer.

``glotta.decode.KVDecoder`` owns the key/value cache, the masks and the rows; what a layer
computes around attention belongs to the architecture, so it lives here, next to the families
that declare it. A family names its layout (``decode_layout = "llama-style"``) or overrides
:meth:`ModelFamily.decode_layout` with its own :class:`DecodeLayout`:

- ``"gpt2-style"``: learned absolute positions added to the embeddings, LayerNorm, one fused
  ``c_attn`` projection, GELU MLP (GPT-2's ``Conv1D`` weights);
- ``"llama-style"``: rotary positions on queries and keys, RMSNorm, separate q/k/v/o
  projections (biases allowed, as Qwen2's), SwiGLU MLP, grouped-query attention. Mistral and
  Qwen2 without a sliding window have this shape.

A layout refuses (:class:`NoDecodeLayout`, with the reason) any model it would compute wrongly:
a configuration option it does not implement, or a block with modules it does not know (Qwen3's
query/key norms, Gemma's extra norms), so a new family cannot decode with silently wrong logits.

The arithmetic is that of the ``transformers`` modules in eval mode, over the model's own
parameter tensors (a model loaded once serves both paths).
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from glotta.errors import GlottaError


class NoDecodeLayout(GlottaError):
    """The model cannot use the static-cache decoder; the message says why."""


class DecodeLayout:
    """What one family's blocks compute, given attention from the decoder.

    Per forward: :meth:`embed` once, then per layer :meth:`qkv` (queries, keys and values at
    their positions), the decoder's attention over its cache, :meth:`finish_block` (output
    projection, residual, MLP), and :meth:`logits` for one position per row.
    """

    def __init__(self, model, context: int) -> None:
        config = model.config
        self.model = model
        self.context = context
        self.blocks: nn.ModuleList = self.find_blocks(model)
        self.n_head = config.num_attention_heads
        self.n_kv = getattr(config, "num_key_value_heads", None) or self.n_head
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_head
        self.scale = self.head_dim**-0.5
        # Transposed copies of the weights with short rows, by parameter (see _long_rows).
        self.long_rows: dict[int, torch.Tensor] = {}
        matmuls = [m for m in self.blocks.modules() if isinstance(m, (nn.Linear, Conv1D))]
        for weight in (*(m.weight for m in matmuls), model.get_output_embeddings().weight):
            copy = _long_rows(weight)
            if copy is not None:
                self.long_rows[id(weight)] = copy

    @classmethod
    def problem(cls, model, context: int) -> str | None:
        """Why this layout would compute ``model`` wrongly, or None when it fits."""
        return None

    def find_blocks(self, model) -> nn.ModuleList:
        raise NotImplementedError

    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Hidden states ``[B, T, width]`` and what :meth:`qkv` needs of the positions."""
        raise NotImplementedError

    def qkv(self, block, x: torch.Tensor, at: Any) -> tuple[torch.Tensor, ...]:
        """Queries ``[B, T, heads, head_dim]``, keys and values ``[B, T, kv_heads, head_dim]``."""
        raise NotImplementedError

    def finish_block(self, block, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The block's output from its input ``x`` and attention's ``[B, T, heads * head_dim]``."""
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits from the last layer's hidden states ``[B, width]``."""
        raise NotImplementedError

    def linear(self, x: torch.Tensor, layer) -> torch.Tensor:
        return _linear(x, layer, self.long_rows.get(id(layer.weight)))

    def conv1d(self, x: torch.Tensor, conv) -> torch.Tensor:
        return _conv1d(x, conv, self.long_rows.get(id(conv.weight)))


class GPT2Layout(DecodeLayout):
    """``GPT2LMHeadModel``: learned positions, pre-LayerNorm, fused ``c_attn``, GELU MLP."""

    @classmethod
    def problem(cls, model, context: int) -> str | None:
        config = model.config
        for option in ("add_cross_attention", "scale_attn_by_inverse_layer_idx"):
            if getattr(config, option, False):
                return f"gpt2-style decoding does not implement {option}"
        return None

    def __init__(self, model, context: int) -> None:
        super().__init__(model, context)
        config = model.config
        self.scale = 1 / math.sqrt(self.head_dim) if config.scale_attn_weights else 1.0
        self.eps = config.layer_norm_epsilon
        # GPT-2's "gelu_new" is the tanh approximation: one fused op instead of six.
        tanh = config.activation_function in ("gelu_new", "gelu_pytorch_tanh")
        self.act = _gelu_tanh if tanh else self.blocks[0].mlp.act

    def find_blocks(self, model) -> nn.ModuleList:
        return model.base_model.h

    def embed(self, ids, positions):
        base = self.model.base_model
        return base.wte.weight[ids] + base.wpe.weight[positions], None

    def qkv(self, block, x, at):
        attn = block.attn
        h = F.layer_norm(x, x.shape[-1:], block.ln_1.weight, block.ln_1.bias, self.eps)
        q, k, v = self.conv1d(h, attn.c_attn).split(attn.split_size, dim=2)
        batch, width = x.shape[:2]
        return (
            q.view(batch, width, self.n_head, self.head_dim),
            k.view(batch, width, self.n_kv, self.head_dim),
            v.view(batch, width, self.n_kv, self.head_dim),
        )

    def finish_block(self, block, x, attended):
        x = x + self.conv1d(attended, block.attn.c_proj)
        mlp = block.mlp
        h = F.layer_norm(x, x.shape[-1:], block.ln_2.weight, block.ln_2.bias, self.eps)
        return x + self.conv1d(self.act(self.conv1d(h, mlp.c_fc)), mlp.c_proj)

    def logits(self, x):
        ln_f = self.model.base_model.ln_f
        x = F.layer_norm(x, x.shape[-1:], ln_f.weight, ln_f.bias, self.eps)
        return self.linear(x, self.model.get_output_embeddings())


# The modules a llama-style block may hold: any other (a query/key norm, an extra norm around
# the MLP) is arithmetic this layout would skip, so such a model is refused instead.
_LLAMA_MODULES = {
    "layer": {"self_attn", "mlp", "input_layernorm", "post_attention_layernorm"},
    "self_attn": {"q_proj", "k_proj", "v_proj", "o_proj"},
    "mlp": {"gate_proj", "up_proj", "down_proj", "act_fn"},
}


class LlamaLayout(DecodeLayout):
    """``LlamaForCausalLM`` and models of its shape: rotary positions, RMSNorm, SwiGLU, GQA."""

    @classmethod
    def problem(cls, model, context: int) -> str | None:
        config = model.config
        rotary = getattr(model.base_model, "rotary_emb", None)
        if rotary is None:
            return "llama-style decoding needs the model's rotary_emb module"
        rope = getattr(rotary, "rope_type", "default")
        if "dynamic" in rope:  # those change the frequencies with the length
            return f"llama-style decoding does not implement rope_type {rope!r}"
        if getattr(config, "pretraining_tp", 1) != 1:
            return "llama-style decoding does not implement pretraining_tp > 1"
        if getattr(config, "partial_rotary_factor", 1.0) != 1.0:
            return "llama-style decoding does not implement partial_rotary_factor"
        window = getattr(config, "sliding_window", None)
        if window is not None and window < context:
            return f"llama-style decoding does not implement a sliding window ({window})"
        if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
            return "llama-style decoding does not implement layers other than full attention"
        layer = model.base_model.layers[0]
        for where, module in (("layer", layer), ("self_attn", layer.self_attn), ("mlp", layer.mlp)):
            extra = {name for name, _ in module.named_children()} - _LLAMA_MODULES[where]
            if extra:
                return f"llama-style decoding does not know the {where} modules {sorted(extra)}"
        return None

    def __init__(self, model, context: int) -> None:
        super().__init__(model, context)
        self.eps = model.config.rms_norm_eps
        self.scale = getattr(self.blocks[0].self_attn, "scaling", self.scale)
        # cos/sin of every position once, from the model's own rotary module (its inv_freq
        # and attention scaling), so a position is one row lookup per forward.
        param = model.get_input_embeddings().weight
        positions = torch.arange(context, device=param.device)[None]
        cos, sin = model.base_model.rotary_emb(param[:1, None], positions)
        self.cos, self.sin = cos[0], sin[0]

    def find_blocks(self, model) -> nn.ModuleList:
        return model.base_model.layers

    def embed(self, ids, positions):
        x = self.model.base_model.embed_tokens.weight[ids]
        return x, (self.cos[positions][:, :, None], self.sin[positions][:, :, None])

    def qkv(self, block, x, at):
        attn = block.self_attn
        h = F.rms_norm(x, x.shape[-1:], block.input_layernorm.weight, self.eps)
        batch, width = x.shape[:2]
        q = self.linear(h, attn.q_proj).view(batch, width, self.n_head, self.head_dim)
        k = self.linear(h, attn.k_proj).view(batch, width, self.n_kv, self.head_dim)
        v = self.linear(h, attn.v_proj).view(batch, width, self.n_kv, self.head_dim)
        cos, sin = at  # [B, T, 1, head_dim]
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin, v

    def finish_block(self, block, x, attended):
        x = x + self.linear(attended, block.self_attn.o_proj)
        mlp = block.mlp
        h = F.rms_norm(x, x.shape[-1:], block.post_attention_layernorm.weight, self.eps)
        gated = mlp.act_fn(self.linear(h, mlp.gate_proj)) * self.linear(h, mlp.up_proj)
        return x + self.linear(gated, mlp.down_proj)

    def logits(self, x):
        x = F.rms_norm(x, x.shape[-1:], self.model.base_model.norm.weight, self.eps)
        return self.linear(x, self.model.get_output_embeddings())


LAYOUTS: dict[str, type[DecodeLayout]] = {"gpt2-style": GPT2Layout, "llama-style": LlamaLayout}


# On a CPU, MKL's one-row product reads a weight at full speed only when the weight's rows
# (its contiguous dimension) are its longer side. Measured cold, 2 threads, AMD EPYC: GPT-2's
# MLP output [1536, 384] (rows of 384) 292 us as stored against 169 us transposed; the LM head
# [32000, 384] 8.8 ms against 3.2 ms transposed; weights whose rows are already the longer side
# (c_attn [384, 1152], c_fc [384, 1536]) are fastest as stored. So a weight with short rows is
# used through a transposed contiguous copy, made once per weight tensor (weakly held; rebuilt
# when the weight changes in place). Costs one copy of those weights: on GPT-2 the MLP outputs
# and the head; on Llama the gate and up projections and the head.
_LONG_ROWS: dict[int, tuple[int, torch.Tensor]] = {}


def _long_rows(weight: torch.Tensor) -> torch.Tensor | None:
    """``weight`` transposed and contiguous where its rows are shorter than its columns and
    it is on a CPU; None where it is best used as it is."""
    if weight.device.type != "cpu" or weight.shape[1] >= weight.shape[0]:
        return None  # GPU BLAS reads either layout at full speed
    key = id(weight)
    found = _LONG_ROWS.get(key)
    if found is None:
        weakref.finalize(weight, _LONG_ROWS.pop, key, None)  # forget it with the weight
    if found is None or found[0] != weight._version:
        with torch.inference_mode(False), torch.no_grad():  # usable in and out of it
            found = _LONG_ROWS[key] = (weight._version, weight.detach().t().contiguous())
    return found[1]


def _conv1d(x: torch.Tensor, conv, transposed: torch.Tensor | None = None) -> torch.Tensor:
    """GPT-2's ``Conv1D`` (weight ``[in, out]``): one ``addmm``, or a ``linear`` with
    ``transposed`` (its ``_long_rows`` copy, ``[out, in]``) when there is one."""
    if transposed is not None:
        return F.linear(x, transposed, conv.bias)
    shape = (*x.shape[:-1], conv.weight.shape[1])
    return torch.addmm(conv.bias, x.reshape(-1, x.shape[-1]), conv.weight).view(shape)


def _linear(x: torch.Tensor, layer, transposed: torch.Tensor | None = None) -> torch.Tensor:
    """``nn.Linear`` (weight ``[out, in]``), through ``transposed`` (``[in, out]``) if given."""
    if transposed is None:
        return F.linear(x, layer.weight, layer.bias)
    y = x @ transposed
    return y if layer.bias is None else y + layer.bias


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
