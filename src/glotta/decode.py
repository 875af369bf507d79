"""A compact decode forward with a static key/value cache, over an HF model's own weights.

Why not drive the ``transformers`` modules: at the sizes glotta trains on a CPU, a one-token
forward is a few hundred microseconds of arithmetic buried under milliseconds of Python (masks
rebuilt per call, cache objects, module hooks, ``ModelOutput``s). :class:`KVDecoder` runs the
same arithmetic in eval mode with a handful of tensor operations per layer. What a layer
computes around attention is the model family's (its decode layout,
``glotta.models.decoding``); this module owns what every layout shares:

- the cache is one preallocated ``[rows, kv_heads, length, head_dim]`` key and value tensor
  per layer, written in place at each row's own positions (one indexed assignment), so rows of
  different lengths share a batch without padding tokens: row ``b`` holds its tokens at
  positions ``0..n_b-1`` and a query at position ``p`` sees the keys ``0..p`` of its row;
- attention reads only the filled prefix ``[:, :, :upto]`` (a view, no copy); grouped-query
  heads are folded into the query axis (``[rows, kv_heads, group * T, head_dim]``) so keys and
  values are never repeated;
- logits are computed for one position per row (the last real one), never the whole prompt.

Rows are compact: rows ``0..B-1`` are the running batch; :meth:`move_row` fills a hole left by a
finished row. Capacity grows on demand (:meth:`reserve`), so a server does not reserve
``max_batch x context`` positions up front.

A model without a decode layout (another architecture, or a setting its family's layout does
not implement) gets :class:`RecomputeDecoder`: the same interface, a token buffer instead of
keys and values, and a full forward per step: exact and slow, and logged as a warning, so a
new family never decodes slowly or wrongly without anyone noticing.
"""

from __future__ import annotations

import logging
import weakref

import torch

from glotta.models import context_length, decode_layout
from glotta.models.decoding import NoDecodeLayout

log = logging.getLogger("glotta.decode")
_warned = weakref.WeakSet()  # models already reported as recomputed: once each, not per call


def make_decoder(model, rows: int = 1, length: int = 0, compile: bool = False):
    """The fastest exact decoder for ``model``: :class:`KVDecoder` where its family has a
    decode layout for it, else :class:`RecomputeDecoder` (with a warning saying why).

    ``compile`` wraps :meth:`KVDecoder.forward` in ``torch.compile`` (dynamic shapes). Off by
    default: a decode step is bound by reading the weights, which compiling does not change, so
    on a 2-core CPU it does not pay (batch 1, GPT-2 6 x 384, 32k vocabulary: 22 ms per token
    compiled against 18-25 eager) and the compile itself takes minutes.
    """
    length = length or context_length(model)
    try:
        decoder = KVDecoder(model, rows, length)
    except NoDecodeLayout as why:
        if model not in _warned:
            _warned.add(model)
            log.warning(
                "glotta: no static-cache decoding for this %s model (%s): every token "
                "recomputes the whole prefix (exact, but slow)",
                model.config.model_type,
                why,
            )
        return RecomputeDecoder(model, rows, length)
    if compile:
        decoder.forward = torch.compile(decoder.forward, dynamic=True)
    return decoder


def _grown(tensor: torch.Tensor, rows: int, length: int, dim: int) -> torch.Tensor:
    """``tensor`` copied into a larger zeroed one (rows on dim 0, positions on ``dim``)."""
    shape = list(tensor.shape)
    shape[0], shape[dim] = rows, length
    bigger = tensor.new_zeros(shape)
    index = [slice(0, n) for n in tensor.shape]
    bigger[tuple(index)] = tensor
    return bigger


class KVDecoder:
    """Decode forward with a static per-layer KV cache, over the family's decode layout
    (raises ``NoDecodeLayout`` for a model that has none)."""

    def __init__(self, model, rows: int, length: int) -> None:
        self.model = model
        self.layout = decode_layout(model)
        self.context = self.layout.context
        param = model.get_input_embeddings().weight
        self.device, self.dtype = param.device, param.dtype
        self.n_head, self.n_kv = self.layout.n_head, self.layout.n_kv
        self.head_dim = self.layout.head_dim
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
            self.keys = [make() for _ in self.layout.blocks]
            self.values = [make() for _ in self.layout.blocks]
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
        layout = self.layout
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
        x, placed = layout.embed(ids, positions)
        for layer, block in enumerate(layout.blocks):
            q, k, v = layout.qkv(block, x, placed)  # [B, T, heads, head_dim]
            keys, values = self.keys[layer], self.values[layer]
            if single:
                keys[first_row, :, at] = k[0, 0]
                values[first_row, :, at] = v[0, 0]
            else:  # [row, :, position] <- [B, T, kv_heads, head_dim]
                keys[row_index, :, positions] = k
                values[row_index, :, positions] = v
            q = q.transpose(1, 2).reshape(batch, self.n_kv, group * width, self.head_dim)
            scores = (q * layout.scale) @ keys[rows, :, :upto].transpose(-1, -2)
            if bias is not None:
                scores = scores + bias
            out = torch.softmax(scores, dim=-1) @ values[rows, :, :upto]
            out = out.view(batch, self.n_head, width, self.head_dim).transpose(1, 2)
            x = layout.finish_block(block, x, out.reshape(batch, width, -1))
        x = x[torch.arange(batch, device=self.device), last]  # one position per row
        return layout.logits(x)


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
