"""Batched decoding for every caller: ``glotta generate`` (``generate_batch``) and ``glotta serve``.

Both promise that a sequence's output depends only on its prompt, settings and seed, not on what
else shares its batch; one loop keeps that promise in one place.

:class:`DecodeScheduler` runs rows over one ``glotta.decode`` decoder:

- :meth:`~DecodeScheduler.admit` prefills new rows together (right-padded; logits only at each
  prompt's last token) into the next free decoder rows and samples their first tokens;
- :meth:`~DecodeScheduler.step` runs one forward for every running row (its last token at its
  own position) and samples the next token of each;
- :meth:`~DecodeScheduler.finish` / :meth:`~DecodeScheduler.cancel` end a row (a stop string, a
  client gone); finished rows leave before the next forward, the last running row moving into
  each hole, so the batch stays compact.

A step is batch-shaped: all rows' logits, then :meth:`~DecodeScheduler.sample` (one token per
row, each row with its own ``torch.Generator``), then per-row bookkeeping (EOS, token limit,
context). :class:`TextStreamer` turns one row's tokens into text pieces for a reader (UTF-8
hold-back, stop strings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from glotta.config import GenerateConfig
from glotta.decode import make_decoder
from glotta.models import context_length
from glotta.sampling import sample_next


@dataclass(eq=False)
class Row:
    """One sequence to decode: its prompt, sampling settings and seed, and what it produced."""

    prompt: list[int]
    cfg: GenerateConfig  # temperature, top_k, top_p, repetition_penalty, max_new_tokens
    seed: int | None = None  # of its own generator (None: cfg.seed)
    eos_id: int | None = None  # sampling it ends the row, unsent (None: an ordinary token)
    new_ids: list[int] = field(default_factory=list)
    # None while running; "stop" (EOS or a stop rule), "length" (max_new_tokens or the
    # context; also a prompt that leaves no room), "cancelled".
    finish_reason: str | None = None
    batch_peak: int = 1  # the most rows it was decoded together with (itself included)
    history: torch.Tensor | None = None  # prompt + accepted tokens (repetition penalty, input)
    length: int = 0  # tokens in history; the last is not yet in the cache
    generator: torch.Generator | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class DecodeScheduler:
    """Rows decoded together, one forward per step. ``max_rows`` caps how far the decoder's
    row capacity doubles ahead of need (a server's batch limit); it admits any number."""

    def __init__(self, model, max_rows: int = 1) -> None:
        self.model = model
        self.context = context_length(model)
        self.device = next(model.parameters()).device
        self.max_rows = max_rows
        self.running: list[Row] = []  # row i of the decoder is running[i]
        self.decoder = None  # made at the first admission, grown as needed

    @torch.inference_mode()
    def admit(self, rows: list[Row]) -> list[tuple[Row, int | None]]:
        """Prefill ``rows`` and sample their first tokens; what :meth:`step` returns.

        A prompt longer than the context keeps its end; an empty one, one that fills the
        context, or ``max_new_tokens`` <= 0 finishes at once ("length") with no token.
        """
        self.drop_finished()
        results: list[tuple[Row, int | None]] = []
        live = []
        for row in rows:
            prompt = row.prompt[-self.context :]
            if not prompt or len(prompt) >= self.context or row.cfg.max_new_tokens <= 0:
                row.finish_reason = "length"
                results.append((row, None))
                continue
            seed = row.cfg.seed if row.seed is None else row.seed
            row.generator = torch.Generator(device="cpu").manual_seed(seed)
            size = min(self.context, len(prompt) + row.cfg.max_new_tokens) + 1
            row.history = torch.zeros(size, dtype=torch.long, device=self.device)
            row.history[: len(prompt)] = torch.tensor(prompt, device=self.device)
            row.length = len(prompt)
            live.append(row)
        if not live:
            return results
        self._reserve(live)
        width = max(row.length for row in live)
        ids = torch.zeros(len(live), width, dtype=torch.long, device=self.device)
        for i, row in enumerate(live):  # right-padded with zeros (never attended to)
            ids[i, : row.length] = row.history[: row.length]
        positions = torch.arange(width, device=self.device).expand(len(live), width)
        last = torch.tensor([row.length - 1 for row in live], device=self.device)
        logits = self.decoder.forward(ids, positions, last, first_row=len(self.running))
        self.running.extend(live)
        return results + self._accept(live, logits)

    @torch.inference_mode()
    def step(self) -> list[tuple[Row, int | None]]:
        """One forward for every running row; ``(row, token)`` per row in row order, ``token``
        None where the row sampled EOS. A row that reached its limit has ``finish_reason``
        "length" (its last token included). Empty when no row is running."""
        self.drop_finished()
        rows = self.running
        if not rows:
            return []
        ids = torch.stack([row.history[row.length - 1] for row in rows]).unsqueeze(1)
        positions = torch.tensor([[row.length - 1] for row in rows], device=self.device)
        last = torch.zeros(len(rows), dtype=torch.long, device=self.device)
        logits = self.decoder.forward(ids, positions, last)
        for row in rows:
            row.batch_peak = max(row.batch_peak, len(rows))
        return self._accept(rows, logits)

    def sample(self, rows: list[Row], logits: torch.Tensor) -> list[int]:
        """The next token of each row from ``logits`` ``[rows, vocab]``: each row's own
        settings, history (repetition penalty) and generator."""
        return [
            sample_next(logits[i], row.history[: row.length], row.cfg, row.generator)
            for i, row in enumerate(rows)
        ]

    def finish(self, row: Row, reason: str = "stop") -> None:
        """End ``row`` (e.g. a stop string); it leaves the batch before the next forward."""
        row.finish_reason = reason

    def cancel(self, row: Row) -> None:
        self.finish(row, "cancelled")

    def clear(self) -> None:
        """Forget every row (after a failed step); the decoder's memory is kept for reuse."""
        self.running = []

    def drop_finished(self) -> None:
        """Remove finished rows: the last running row moves into each hole (one row copy)."""
        for slot in reversed(range(len(self.running))):
            if self.running[slot].finished:
                end = len(self.running) - 1
                if slot != end:
                    self.decoder.move_row(end, slot)
                    self.running[slot] = self.running[end]
                self.running.pop()

    def _accept(self, rows: list[Row], logits: torch.Tensor) -> list[tuple[Row, int | None]]:
        results: list[tuple[Row, int | None]] = []
        for row, token in zip(rows, self.sample(rows, logits), strict=True):
            if row.eos_id is not None and token == row.eos_id:
                row.finish_reason = "stop"
                results.append((row, None))
                continue
            row.history[row.length] = token
            row.length += 1
            row.new_ids.append(token)
            if len(row.new_ids) >= row.cfg.max_new_tokens or row.length >= self.context:
                row.finish_reason = "length"
            results.append((row, token))
        return results

    def _reserve(self, new: list[Row]) -> None:
        """Decoder rows and positions for the running rows plus ``new``, doubling (capped at
        ``max_rows`` and the context) so that a server regrows its cache rarely."""
        rows = len(self.running) + len(new)
        longest = max(len(row.history) for row in [*self.running, *new])
        rows = min(max(rows, 2 ** (rows - 1).bit_length()), max(self.max_rows, rows))
        length = min(2 ** (longest - 1).bit_length(), self.context)
        if self.decoder is None:
            self.decoder = make_decoder(self.model, rows, length)
        else:
            self.decoder.reserve(rows, length)


class TextStreamer:
    """One row's new tokens as text pieces, sent as soon as they are final.

    A piece is held back while the text ends in an incomplete UTF-8 character (the tokenizer
    decodes it as U+FFFD until its remaining bytes arrive) and while its end could still
    become the start of a stop string; a stop string ends the text just before it.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.hold = max((len(s) - 1 for s in stop), default=0)
        self.ids: list[int] = []
        self.text = ""  # the decoded continuation so far (cut at a stop string)
        self.emitted = ""  # the part of it already handed out

    def push(self, token: int) -> tuple[str, bool]:
        """The text that ``token`` makes final ('' if none), and whether a stop string ended
        the text (then the piece is the last one)."""
        self.ids.append(token)
        text = self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return "", False
        for stop in self.stop:
            at = text.find(stop, max(0, len(self.emitted) - len(stop)))
            if at >= 0:
                self.text = text[:at]
                return self.flush(), True
        return self._take(text[: len(text) - self.hold]), False

    def flush(self) -> str:
        """Everything not yet handed out (held back for UTF-8 or stop strings): the end."""
        return self._take(self.text)

    def _take(self, text: str) -> str:
        if text.startswith(self.emitted) and len(text) > len(self.emitted):
            piece, self.emitted = text[len(self.emitted) :], text
            return piece
        return ""
