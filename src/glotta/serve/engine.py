"""Continuous batched decoding for ``glotta serve``: one background thread, one forward pass per
step for every running sequence.

Design: the running batch is the rows of one ``glotta.decode`` decoder (for GPT-2 and
Llama-style models a static key/value cache written in place, the same path as
``glotta.generate.generate_batch``). Every row keeps its tokens at positions ``0..n-1`` of its
own cache row and attends to its own positions only, so sequences of different lengths share a
step without padding tokens or per-step cache copies, and GPT-2's learned and Llama's rotary
positions are each row's true positions. Sequences admitted between two steps (a request's
``n`` choices, a list of prompts, other clients' requests) are prefilled together in one
forward (right-padded; logits only at each prompt's last token) into the next free rows. A
finished or cancelled sequence's row is taken by the last running row (one row copy), so the
batch stays compact. Cache rows and positions grow on demand (doubling, up to ``max_batch``
and the context), so a server does not reserve ``max_batch x context`` positions up front.

Sampling goes through ``glotta.sampling.sample_next`` with each sequence's own settings and own
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
from tokenizers import Tokenizer

from glotta.config import GenerateConfig
from glotta.decode import make_decoder
from glotta.models import context_length
from glotta.sampling import sample_next
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
        self.context = context_length(model)
        self._waiting: deque[Sequence] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        self.active: list[Sequence] = []
        self._decoder = None  # made at the first prefill, grown as needed
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
                    self._prefill([seq for seq in admitted if not seq.cancelled])
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
                self.active = []
            self.metrics.batch_size = len(self.active)

    def _reserve(self, sequences: list[Sequence]) -> None:
        """Rows and positions for the running sequences plus ``sequences`` (doubling, so the
        cache is regrown rarely)."""
        rows = len(self.active) + len(sequences)
        longest = max(len(s.history) for s in [*self.active, *sequences])
        rows = min(max(rows, 2 ** (rows - 1).bit_length()), max(self.max_batch, rows))
        length = min(2 ** (longest - 1).bit_length(), self.context)
        if self._decoder is None:
            self._decoder = make_decoder(self.model, rows, length)
        else:
            self._decoder.reserve(rows, length)

    def _prefill(self, admitted: list[Sequence]) -> None:
        """Run the new prompts together into the next free rows and sample their first tokens;
        the ones not finished by it join the running batch."""
        if not admitted:
            return
        for seq in admitted:
            seq.generator = torch.Generator(device="cpu").manual_seed(seq.cfg.seed)
            prompt = seq.prompt_ids[-self.context :]
            seq.history = torch.zeros(
                min(self.context, len(prompt) + seq.cfg.max_new_tokens) + 1,
                dtype=torch.long,
                device=self.device,
            )
            seq.history[: len(prompt)] = torch.tensor(prompt, device=self.device)
            seq.length = len(prompt)
        self._reserve(admitted)
        width = max(seq.length for seq in admitted)
        ids = torch.zeros(len(admitted), width, dtype=torch.long, device=self.device)
        for row, seq in enumerate(admitted):  # right-padded with zeros (never attended to)
            ids[row, : seq.length] = seq.history[: seq.length]
        positions = torch.arange(width, device=self.device).expand(len(admitted), width)
        last = torch.tensor([seq.length - 1 for seq in admitted], device=self.device)
        first = len(self.active)
        logits = self._decoder.forward(ids, positions, last, first_row=first)
        self.active.extend(admitted)  # rows first.., in order; finished ones leave below
        for row, seq in enumerate(admitted):
            self._accept(seq, logits[row])

    def _step(self) -> None:
        """One forward pass for every running sequence: its last token at its own position."""
        rows = self.active
        ids = torch.stack([s.history[s.length - 1] for s in rows]).unsqueeze(1)
        positions = torch.tensor([[s.length - 1] for s in rows], device=self.device)
        last = torch.zeros(len(rows), dtype=torch.long, device=self.device)
        logits = self._decoder.forward(ids, positions, last)
        for row, seq in enumerate(rows):
            seq.batch_peak = max(seq.batch_peak, len(rows))
            if not seq.cancelled:
                self._accept(seq, logits[row])

    def _drop_finished(self) -> None:
        """Remove finished and cancelled rows: the last running row moves into each hole."""
        for seq in self.active:
            if seq.cancelled and not seq.finished:
                seq.finished = True  # the client is gone: nobody to tell
        for row in reversed(range(len(self.active))):
            if self.active[row].finished:
                end = len(self.active) - 1
                if row != end:
                    self._decoder.move_row(end, row)
                    self.active[row] = self.active[end]
                self.active.pop()

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


_ids = itertools.count()


def request_id(prefix: str) -> str:
    """A short unique id for responses (``cmpl-...``), unique within this process."""
    return f"{prefix}-{int(time.time() * 1000):x}{next(_ids):04x}"
