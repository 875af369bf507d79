"""Perplexity and bits per byte, the lm-eval-harness way.

    perplexity    = exp(total NLL / total predicted tokens)
    bits per byte = (total NLL / ln 2) / total UTF-8 bytes of the original documents

Bits per byte does not depend on the tokenizer, so models with different vocabularies compare
fairly. Every document is scored on its own: an end-of-text token is prepended so that its first
token is predicted too, and documents longer than the context are scored with a sliding window:
each window advances by ``stride`` tokens and scores only the tokens not scored before, with up
to ``context - stride`` tokens of history.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Score:
    """Totals over a set of documents; add scores of several batches or processes with +."""

    nll: float = 0.0  # nats
    tokens: int = 0
    bytes: int = 0
    documents: int = 0

    def __add__(self, other: Score) -> Score:
        return Score(
            self.nll + other.nll,
            self.tokens + other.tokens,
            self.bytes + other.bytes,
            self.documents + other.documents,
        )

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / self.bytes if self.bytes else float("nan")

    @property
    def loss(self) -> float:
        return self.nll / self.tokens if self.tokens else float("nan")

    def as_dict(self) -> dict:
        return {
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
            "loss": self.loss,
            "nll_nats": self.nll,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "documents": self.documents,
        }


@dataclass(frozen=True)
class Window:
    """Model input ``ids[start:end]``; positions ``first_target..end-1`` are scored."""

    document: int
    start: int
    end: int
    first_target: int


def sliding_windows(length: int, context: int, stride: int, document: int = 0) -> Iterator[Window]:
    """Windows over a sequence whose position 0 is the prepended end-of-text token."""
    if not 0 < stride <= context:
        raise ValueError(f"stride must be in 1..context ({context}), got {stride}")
    start, scored_until = 0, 1
    while scored_until < length:
        end = min(start + context, length)
        yield Window(document, start, end, scored_until)
        scored_until = end
        # Advance by stride, keep the input that predicts the next target (end - 1), and let the
        # last window end at the document's end with as much history as fits.
        start = min(start + stride, end - 1, max(0, length - context))


@torch.no_grad()
def score_token_documents(
    model: torch.nn.Module,
    documents: Iterable[tuple[list[int], int]],
    eos_id: int,
    context: int,
    stride: int,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> Score:
    """Score documents given as (token ids, UTF-8 byte count)."""
    model.eval()
    total = Score()
    pending: list[tuple[list[int], Window]] = []

    def flush() -> None:
        nonlocal total
        if pending:
            total.nll += _score_windows(model, pending, eos_id, device)
            pending.clear()

    for index, (ids, n_bytes) in enumerate(documents):
        sequence = [eos_id, *ids]
        total.tokens += len(ids)
        total.bytes += n_bytes
        total.documents += 1
        for window in sliding_windows(len(sequence), context, stride, index):
            pending.append((sequence, window))
            if len(pending) == batch_size:
                flush()
    flush()
    return total


def _score_windows(model, windows: list[tuple[list[int], Window]], pad_id: int, device) -> float:
    """Summed NLL (nats) of the scored positions of a batch of windows (right-padded)."""
    width = max(w.end - w.start for _, w in windows)
    inputs = torch.full((len(windows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(windows), width), -100, dtype=torch.long)
    attention = torch.zeros((len(windows), width), dtype=torch.long)
    for row, (sequence, w) in enumerate(windows):
        chunk = torch.tensor(sequence[w.start : w.end])
        inputs[row, : len(chunk)] = chunk
        attention[row, : len(chunk)] = 1
        # logits at position j predict token j+1; score targets first_target..end-1
        first = w.first_target - w.start - 1
        targets[row, first : len(chunk) - 1] = chunk[first + 1 :]
    logits = model(input_ids=inputs.to(device), attention_mask=attention.to(device)).logits.float()
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        targets.to(device).reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    return float(nll.double().item())


def unigram_baseline(
    train_tokens: np.ndarray, vocab_size: int, documents: Iterable[tuple[list[int], int]]
) -> Score:
    """A context-free model p(token) = (count + 1) / (N + V) fitted on the train shard.

    The floor any language model must clear; it predicts the same tokens as the model's scoring.
    """
    counts = np.zeros(vocab_size, dtype=np.float64)
    chunk = 1 << 24  # count in chunks: the memmap never has to fit in memory
    for start in range(0, len(train_tokens), chunk):
        counts += np.bincount(np.asarray(train_tokens[start : start + chunk]), minlength=vocab_size)
    log_probs = np.log(counts + 1.0) - np.log(counts.sum() + vocab_size)
    total = Score()
    for ids, n_bytes in documents:
        total.nll += float(-log_probs[np.asarray(ids, dtype=np.int64)].sum())
        total.tokens += len(ids)
        total.bytes += n_bytes
        total.documents += 1
    return total
