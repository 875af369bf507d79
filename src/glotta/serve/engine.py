"""Continuous batched decoding for ``glotta serve``: one background thread, one forward pass per
step for every running sequence.

Design (why this cache layout): the running batch keeps ONE transformers ``DynamicCache`` whose
rows are the running sequences, left-padded to a common length, with a 2-D attention mask that
hides the padding and explicit ``position_ids`` per row. This is the plain Hugging Face causal-LM
interface (``past_key_values`` / ``attention_mask`` / ``position_ids``), so GPT-2 and Llama-style
models (rotary positions are taken from ``position_ids``) both work without model-specific code.
A new sequence is prefilled alone (batch 1, no padding: its prompt is computed exactly as
``glotta generate`` computes it) and its cache rows are then padded and concatenated into the
batch between two decode steps; a finished or cancelled sequence's row is dropped and columns
that have become padding in every row are trimmed. A slot-based static cache would avoid the
per-step growth copy, but needs one write position per row, which the transformers cache
classes do not offer; at the batch sizes a CPU serves, the copy is a small share of a step.

Sampling goes through ``glotta.generate.sample_next`` with each sequence's own settings and own
``torch.Generator``, so a request's output does not depend on what else is in the batch.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from glotta.config import GenerateConfig
from glotta.generate import sample_next
from glotta.serve.metrics import Metrics

log = logging.getLogger("glotta.serve")


@dataclass
class Event:
    """What a sequence reports to its request: new text, and at the end a finish reason."""

    index: int  # the choice index inside the request
    text: str = ""
    finish_reason: str | None = None  # "stop", "length", or "error" (then text is the message)
    completion_tokens: int = 0
    batch_peak: int = 0  # the most sequences this one was decoded together with (itself included)


@dataclass
class Sequence:
    """One sequence to decode (one choice of one request)."""

    prompt_ids: list[int]  # the model's input, already prefixed as glotta generate does
    cfg: GenerateConfig  # temperature, top_k, top_p, repetition_penalty, max_new_tokens, seed
    emit: Callable[[Event], None]  # thread-safe: called from the engine thread
    index: int = 0
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # end-of-text is then an ordinary (invisible) token
    cancelled: bool = False  # set by the request handler when the client goes away
    # Engine state.
    generator: torch.Generator | None = None
    history: torch.Tensor | None = None
    length: int = 0  # tokens in history (prompt + generated), the last not yet in the cache
    new_ids: list[int] = field(default_factory=list)
    text: str = ""  # the decoded continuation so far
    emitted: str = ""  # the part of it already sent
    finished: bool = False
    batch_peak: int = 1


class Engine:
    """Runs the decode loop in a daemon thread; ``submit`` hands it sequences."""

    def __init__(
        self,
        model,
        tokenizer: Tokenizer,
        eos_id: int | None,
        max_batch: int,
        max_queue: int,
        metrics: Metrics,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_id = eos_id
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.metrics = metrics
        self.device = next(model.parameters()).device
        config = model.config
        self.context = getattr(config, "n_positions", None) or config.max_position_embeddings
        self._waiting: deque[Sequence] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self.active: list[Sequence] = []
        self._cache = None
        self._mask: torch.Tensor | None = None
        self._thread = threading.Thread(target=self._run, name="glotta-decode", daemon=True)

    # -- the request side (event loop thread) ------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def submit(self, sequences: list[Sequence]) -> bool:
        """Queue all of ``sequences`` (one request's choices) or none: False when the queue
        would exceed ``max_queue`` (the caller answers 503)."""
        with self._cond:
            if len(self._waiting) + len(sequences) > self.max_queue:
                return False
            self._waiting.extend(sequences)
            self.metrics.queue_depth = len(self._waiting)
            self._cond.notify_all()
        return True

    # -- the decode thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._waiting and not self.active:
                    self._cond.wait()
                if self._stopped:
                    return
                admitted = []
                while self._waiting and len(self.active) + len(admitted) < self.max_batch:
                    admitted.append(self._waiting.popleft())
                self.metrics.queue_depth = len(self._waiting)
            try:
                with torch.inference_mode():
                    for seq in admitted:
                        if not seq.cancelled:
                            self._prefill(seq)
                    self._drop_finished()
                    if self.active:
                        self._step()
                        self._drop_finished()
            except Exception as exc:  # never let one bad step kill the server: fail the batch
                log.exception("decode step failed")
                for seq in [*self.active, *admitted]:
                    if not seq.finished:
                        seq.finished = True
                        seq.emit(Event(seq.index, f"decoding failed: {exc}", "error"))
                self.active, self._cache, self._mask = [], None, None
            self.metrics.batch_size = len(self.active)

    def _prefill(self, seq: Sequence) -> None:
        """Run the prompt alone, sample the first token, and join the batch if not finished."""
        from transformers import DynamicCache

        seq.generator = torch.Generator(device="cpu").manual_seed(seq.cfg.seed)
        prompt = seq.prompt_ids[-self.context :]
        seq.history = torch.empty(
            min(self.context, len(prompt) + seq.cfg.max_new_tokens) + 1,
            dtype=torch.long,
            device=self.device,
        )
        seq.history[: len(prompt)] = torch.tensor(prompt, device=self.device)
        seq.length = len(prompt)
        out = self.model(
            input_ids=seq.history[: seq.length].unsqueeze(0),
            past_key_values=DynamicCache(),
            use_cache=True,
            logits_to_keep=1,
        )
        self._accept(seq, out.logits[0, -1])
        if not seq.finished:
            self._join(seq, out.past_key_values)

    def _join(self, seq: Sequence, cache) -> None:
        """Add a prefilled sequence's cache as a new row, left-padding to a common length."""
        length = cache.get_seq_length()
        row_mask = torch.ones(1, length, dtype=torch.long, device=self.device)
        if self._cache is None:
            self._cache, self._mask, self.active = cache, row_mask, [seq]
            return
        width = self._mask.shape[1]
        total = max(width, length)
        for ours, theirs in zip(self._cache.layers, cache.layers, strict=True):
            ours.keys = torch.cat([_left_pad(ours.keys, total), _left_pad(theirs.keys, total)])
            ours.values = torch.cat(
                [_left_pad(ours.values, total), _left_pad(theirs.values, total)]
            )
        self._mask = torch.cat(
            [F.pad(self._mask, (total - width, 0)), F.pad(row_mask, (total - length, 0))]
        )
        self.active.append(seq)

    def _step(self) -> None:
        """One forward pass for every running sequence: its last token at its own position."""
        rows = self.active
        ids = torch.stack([s.history[s.length - 1] for s in rows]).unsqueeze(1)
        positions = torch.tensor([[s.length - 1] for s in rows], device=self.device)
        ones = torch.ones(len(rows), 1, dtype=torch.long, device=self.device)
        mask = torch.cat([self._mask, ones], dim=1)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self._cache,
            use_cache=True,
        )
        self._cache, self._mask = out.past_key_values, mask
        logits = out.logits[:, -1]
        for row, seq in enumerate(rows):
            seq.batch_peak = max(seq.batch_peak, len(rows))
            if not seq.cancelled:
                self._accept(seq, logits[row])

    def _drop_finished(self) -> None:
        """Remove finished and cancelled rows; trim columns that are padding in every row."""
        for seq in self.active:
            if seq.cancelled and not seq.finished:
                seq.finished = True  # the client is gone: nobody to tell
        keep = [i for i, s in enumerate(self.active) if not s.finished]
        if len(keep) == len(self.active):
            return
        if not keep:
            self.active, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, device=self.device)
        mask = self._mask[index]
        start = int(mask.any(dim=0).nonzero()[0])  # first column some row still uses
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        self._mask = mask[:, start:]
        self.active = [self.active[i] for i in keep]

    def _accept(self, seq: Sequence, logits: torch.Tensor) -> None:
        """Sample the next token of ``seq`` and report the text it adds (or its end)."""
        token = sample_next(logits, seq.history[: seq.length], seq.cfg, seq.generator)
        if self.eos_id is not None and token == self.eos_id and not seq.ignore_eos:
            self._finish(seq, "stop")
            return
        seq.history[seq.length] = token
        seq.length += 1
        seq.new_ids.append(token)
        self.metrics.add_generated(1)
        text = seq.text = self.tokenizer.decode(seq.new_ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # else an incomplete UTF-8 character: wait for the rest
            for stop in seq.stop:
                at = text.find(stop, max(0, len(seq.emitted) - len(stop)))
                if at >= 0:
                    seq.text = text[:at]
                    self._finish(seq, "stop")
                    return
            # Hold back what could still become the start of a stop string.
            hold = max((len(s) - 1 for s in seq.stop), default=0)
            self._send(seq, text[: len(text) - hold])
        if len(seq.new_ids) >= seq.cfg.max_new_tokens or seq.length >= self.context:
            self._finish(seq, "length")

    def _send(self, seq: Sequence, text: str) -> None:
        if text.startswith(seq.emitted) and len(text) > len(seq.emitted):
            seq.emit(Event(seq.index, text[len(seq.emitted) :]))
            seq.emitted = text

    def _finish(self, seq: Sequence, reason: str) -> None:
        self._send(seq, seq.text)  # flush what was held back for stop strings or UTF-8
        seq.finished = True
        seq.emit(Event(seq.index, "", reason, len(seq.new_ids), seq.batch_peak))


def _left_pad(tensor: torch.Tensor, total: int) -> torch.Tensor:
    """Pad a (batch, heads, length, dim) cache tensor on the left of its length axis."""
    missing = total - tensor.shape[-2]
    return F.pad(tensor, (0, 0, missing, 0)) if missing else tensor


_ids = itertools.count()


def request_id(prefix: str) -> str:
    """A short unique id for responses (``cmpl-...``), unique within this process."""
    return f"{prefix}-{int(time.time() * 1000):x}{next(_ids):04x}"
