"""A compact decode forward with a static key/value cache, over an HF model's own weights.

Why not drive the ``transformers`` modules: at the sizes glotta trains on a CPU, a one-token
forward is a few hundred microseconds of arithmetic buried under milliseconds of Python (masks
rebuilt per call, cache objects, module hooks, ``ModelOutput``s). :class:`KVDecoder` runs the
same arithmetic as ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` in eval mode with the model's own
parameter tensors (a model loaded once serves both paths; only weights with short rows get a
transposed copy) and a handful of tensor operations per layer:

- the cache is one preallocated ``[rows, kv_heads, length, head_dim]`` key and value tensor
  per layer, written in place at each row's own positions (one indexed assignment), so rows of
  different lengths share a batch without padding tokens: row ``b`` holds its tokens at
  positions ``0..n_b-1`` and a query at position ``p`` sees the keys ``0..p`` of its row;
- attention reads only the filled prefix ``[:, :, :upto]`` (a view, no copy); grouped-query
  heads are folded into the query axis (``[rows, kv_heads, group * T, head_dim]``) so keys and
  values are never repeated;
- logits are computed for one position per row (the last real one), never the whole prompt;
- on a CPU, weights whose rows are their shorter side (the LM head, GPT-2's MLP output) are
  used through a transposed copy, which MKL reads ~1.7-2.7x faster (see ``_long_rows``).

Rows are compact: rows ``0..B-1`` are the running batch; :meth:`move_row` fills a hole left by a
finished row (``glotta serve``). Capacity grows on demand (:meth:`reserve`), so a server does not
reserve ``max_batch x context`` positions up front.

Other causal LMs (any HF class) get :class:`RecomputeDecoder`: the same interface, a token
buffer instead of keys and values, and a full forward per step (correct, slow; glotta's own
families never take it).
"""

from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from glotta.models import context_length


def make_decoder(model, rows: int = 1, length: int = 0, compile: bool = False):
    """The fastest exact decoder for ``model``: :class:`KVDecoder` for GPT-2 and Llama-style
    models in their usual configurations, else :class:`RecomputeDecoder`.

    ``compile`` wraps :meth:`KVDecoder.forward` in ``torch.compile`` (dynamic shapes). Off by
    default: a decode step is bound by reading the weights, which compiling does not change, so
    on a 2-core CPU it does not pay (batch 1, GPT-2 6 x 384, 32k vocabulary: 22 ms per token
    compiled against 18-25 eager) and the compile itself takes minutes.
    """
    length = length or context_length(model)
    if KVDecoder.supports(model):
        decoder = KVDecoder(model, rows, length)
        if compile:
            decoder.forward = torch.compile(decoder.forward, dynamic=True)
        return decoder
    return RecomputeDecoder(model, rows, length)


def _grown(tensor: torch.Tensor, rows: int, length: int, dim: int) -> torch.Tensor:
    """``tensor`` copied into a larger zeroed one (rows on dim 0, positions on ``dim``)."""
    shape = list(tensor.shape)
    shape[0], shape[dim] = rows, length
    bigger = tensor.new_zeros(shape)
    index = [slice(0, n) for n in tensor.shape]
    bigger[tuple(index)] = tensor
    return bigger


class KVDecoder:
    """Decode forward for ``gpt2`` and ``llama`` models with a static per-layer KV cache."""

    @staticmethod
    def supports(model) -> bool:
        config = model.config
        if model.training:  # dropout would be on: the HF modules are the reference then
            return False
        if config.model_type == "gpt2":
            return not (
                getattr(config, "add_cross_attention", False)
                or getattr(config, "scale_attn_by_inverse_layer_idx", False)
            )
        if config.model_type == "llama":
            rope = getattr(model.model.rotary_emb, "rope_type", "default")
            return (
                "dynamic" not in rope  # those change the frequencies with the length
                and getattr(config, "pretraining_tp", 1) == 1
                and getattr(config, "partial_rotary_factor", 1.0) == 1.0
            )
        return False

    def __init__(self, model, rows: int, length: int) -> None:
        self.model = model
        config = model.config
        self.arch = config.model_type
        self.context = context_length(model)
        param = model.get_input_embeddings().weight
        self.device, self.dtype = param.device, param.dtype
        self.n_head = config.num_attention_heads
        self.n_kv = getattr(config, "num_key_value_heads", None) or self.n_head
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_head
        if self.arch == "gpt2":
            self.scale = 1 / math.sqrt(self.head_dim) if config.scale_attn_weights else 1.0
            self.eps = config.layer_norm_epsilon
            self.blocks = model.transformer.h
            # GPT-2's "gelu_new" is the tanh approximation: one fused op instead of six.
            tanh = config.activation_function in ("gelu_new", "gelu_pytorch_tanh")
            self.act = _gelu_tanh if tanh else self.blocks[0].mlp.act
        else:
            self.scale = self.head_dim**-0.5
            self.eps = config.rms_norm_eps
            self.blocks = model.model.layers
            # cos/sin of every position once, from the model's own rotary module (its inv_freq
            # and attention scaling), so a position is one row lookup per step.
            rotary = model.model.rotary_emb
            positions = torch.arange(self.context, device=self.device)[None]
            cos, sin = rotary(param[:1, None], positions)
            self.cos, self.sin = cos[0], sin[0]
        # Transposed copies of the weights with short rows, by parameter (see _long_rows).
        self.long_rows: dict[int, torch.Tensor] = {}
        matmuls = [m for m in self.blocks.modules() if isinstance(m, (nn.Linear, Conv1D))]
        for weight in (*(m.weight for m in matmuls), model.get_output_embeddings().weight):
            copy = _long_rows(weight)
            if copy is not None:
                self.long_rows[id(weight)] = copy
        self.rows, self.length = 0, 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.reserve(rows, length)

    @torch.inference_mode()
    def reserve(self, rows: int, length: int) -> None:
        """Room for at least ``rows`` rows of ``length`` positions (kept cache contents)."""
        length = min(max(length, 1), self.context)
        if rows <= self.rows and length <= self.length:
            return
        rows, length = max(rows, self.rows), max(length, self.length)
        if not self.keys:
            shape = (rows, self.n_kv, length, self.head_dim)
            make = lambda: torch.zeros(shape, device=self.device, dtype=self.dtype)  # noqa: E731
            self.keys = [make() for _ in self.blocks]
            self.values = [make() for _ in self.blocks]
        else:
            self.keys = [_grown(k, rows, length, 2) for k in self.keys]
            self.values = [_grown(v, rows, length, 2) for v in self.values]
        self.rows, self.length = rows, length

    @torch.inference_mode()
    def move_row(self, source: int, target: int) -> None:
        """Copy row ``source``'s cache into row ``target`` (filling a finished row's place)."""
        for cache in (*self.keys, *self.values):
            cache[target] = cache[source]

    @torch.inference_mode()
    def forward(
        self, ids: torch.Tensor, positions: torch.Tensor, last: torch.Tensor, first_row: int = 0
    ) -> torch.Tensor:
        """Logits ``[B, vocab]`` at column ``last[b]`` of each row.

        ``ids`` and ``positions`` are ``[B, T]``: the tokens of rows ``first_row..first_row+B-1``
        and the positions they take. Their keys and values are written there; each query
        attends to its row's positions up to its own. Right padding is allowed (pad tokens
        write positions that a row overwrites before it reads them).
        """
        batch, width = ids.shape
        rows = slice(first_row, first_row + batch)
        group = self.n_head // self.n_kv
        single = batch == 1 and width == 1  # batch-1 decoding: the common case, kept lean
        if single:
            at = int(positions[0, 0])
            upto, bias = at + 1, None  # one query at the end of its row: every key is visible
        else:
            upto = int(positions.max()) + 1
            row_index = torch.arange(first_row, first_row + batch, device=self.device)[:, None]
            # Key j is visible to the query at position p iff j <= p: [B, 1, group * T, upto].
            visible = torch.arange(upto, device=self.device) <= positions[:, :, None]
            mask = visible[:, None].repeat(1, 1, group, 1) if group > 1 else visible[:, None]
            bias = torch.zeros(mask.shape, device=self.device, dtype=self.dtype)
            bias.masked_fill_(~mask, float("-inf"))
        if self.arch == "gpt2":
            transformer = self.model.transformer
            x = transformer.wte.weight[ids] + transformer.wpe.weight[positions]
        else:
            x = self.model.model.embed_tokens.weight[ids]
            cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        for layer, block in enumerate(self.blocks):
            if self.arch == "gpt2":
                attn = block.attn
                h = F.layer_norm(x, x.shape[-1:], block.ln_1.weight, block.ln_1.bias, self.eps)
                q, k, v = self._conv1d(h, attn.c_attn).split(attn.split_size, dim=2)
            else:
                attn = block.self_attn
                h = F.rms_norm(x, x.shape[-1:], block.input_layernorm.weight, self.eps)
                q, k, v = (self._linear(h, p) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
            q = q.view(batch, width, self.n_head, self.head_dim).transpose(1, 2)
            k = k.view(batch, width, self.n_kv, self.head_dim).transpose(1, 2)
            v = v.view(batch, width, self.n_kv, self.head_dim).transpose(1, 2)
            if self.arch == "llama":
                q = q * cos + _rotate_half(q) * sin
                k = k * cos + _rotate_half(k) * sin
            keys, values = self.keys[layer], self.values[layer]
            if single:
                keys[first_row, :, at] = k[0, :, 0]
                values[first_row, :, at] = v[0, :, 0]
            else:  # [row, :, position] <- [B, T, kv_heads, head_dim]
                keys[row_index, :, positions] = k.transpose(1, 2)
                values[row_index, :, positions] = v.transpose(1, 2)
            q = q.reshape(batch, self.n_kv, group * width, self.head_dim)
            scores = (q * self.scale) @ keys[rows, :, :upto].transpose(-1, -2)
            if bias is not None:
                scores = scores + bias
            out = torch.softmax(scores, dim=-1) @ values[rows, :, :upto]
            out = out.view(batch, self.n_head, width, self.head_dim).transpose(1, 2)
            out = out.reshape(batch, width, self.n_head * self.head_dim)
            if self.arch == "gpt2":
                x = x + self._conv1d(out, attn.c_proj)
                mlp = block.mlp
                h = F.layer_norm(x, x.shape[-1:], block.ln_2.weight, block.ln_2.bias, self.eps)
                x = x + self._conv1d(self.act(self._conv1d(h, mlp.c_fc)), mlp.c_proj)
            else:
                x = x + self._linear(out, attn.o_proj)
                mlp = block.mlp
                h = F.rms_norm(x, x.shape[-1:], block.post_attention_layernorm.weight, self.eps)
                gated = mlp.act_fn(self._linear(h, mlp.gate_proj)) * self._linear(h, mlp.up_proj)
                x = x + self._linear(gated, mlp.down_proj)
        x = x[torch.arange(batch, device=self.device), last]  # one position per row
        if self.arch == "gpt2":
            ln_f = self.model.transformer.ln_f
            x = F.layer_norm(x, x.shape[-1:], ln_f.weight, ln_f.bias, self.eps)
        else:
            x = F.rms_norm(x, x.shape[-1:], self.model.model.norm.weight, self.eps)
        return self._linear(x, self.model.get_output_embeddings())

    def _conv1d(self, x: torch.Tensor, conv) -> torch.Tensor:
        return _conv1d(x, conv, self.long_rows.get(id(conv.weight)))

    def _linear(self, x: torch.Tensor, layer) -> torch.Tensor:
        return _linear(x, layer, self.long_rows.get(id(layer.weight)))


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


class RecomputeDecoder:
    """The :class:`KVDecoder` interface for any HF causal LM: it keeps the tokens (not keys and
    values) and runs the whole prefix through the model at every call. Exact and slow."""

    def __init__(self, model, rows: int, length: int) -> None:
        self.model = model
        self.context = context_length(model)
        self.device = next(model.parameters()).device
        self.tokens = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self.rows = self.length = 0
        self.reserve(rows, length)

    def reserve(self, rows: int, length: int) -> None:
        length = min(max(length, 1), self.context)
        if rows > self.rows or length > self.length:
            self.rows, self.length = max(rows, self.rows), max(length, self.length)
            self.tokens = _grown(self.tokens, self.rows, self.length, 1)

    def move_row(self, source: int, target: int) -> None:
        self.tokens[target] = self.tokens[source]

    def forward(
        self, ids: torch.Tensor, positions: torch.Tensor, last: torch.Tensor, first_row: int = 0
    ) -> torch.Tensor:
        batch = ids.shape[0]
        row_index = torch.arange(first_row, first_row + batch, device=self.device)[:, None]
        self.tokens.index_put_((row_index, positions), ids)
        ends = positions[torch.arange(batch, device=self.device), last]  # each row's last one
        upto = int(ends.max()) + 1
        mask = (torch.arange(upto, device=self.device) <= ends[:, None]).long()
        logits = self.model(
            input_ids=self.tokens[first_row : first_row + batch, :upto],
            attention_mask=mask,
            use_cache=False,
        ).logits
        return logits[torch.arange(batch, device=self.device), ends]
