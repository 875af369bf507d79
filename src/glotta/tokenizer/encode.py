"""Encoding corpus JSONL files into shard ids, in this process or in worker processes.

The pack stage (:mod:`glotta.tokenizer.pack`) decides where the work runs; this module does it:

- ``load_trained_tokenizer``  the run's tokenizer, its eos token and id
- ``document_batches``        the texts of a JSONL file (or of a byte range of it) in batches
- ``line_ranges``             a file cut into byte ranges that start and end at line boundaries
- ``EncoderPool``             worker processes that each hold the tokenizer and encode ranges

Why worker processes: encoding is ~95% of packing, and the ``tokenizers`` thread pool
(``encode_batch``) left cores idle at the end of every batch and while Python parsed and wrote
around it (1.7 of 2 cores busy on a 1 GB corpus). One single-threaded encoder per core, each on
its own range of the file, keeps every core busy (1.98 of 2); the ranges are written in file
order, so the shard is the same byte for byte. The encoder itself is :func:`text_encoder`.
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from glotta.errors import GlottaError
from glotta.tokenizer.byte_level import ByteLevelEncoder
from glotta.tokenizer.files import read_tokenizer_file
from glotta.tokenizer.shards import documents_to_ids

# Words whose BPE merges the tokenizer remembers. The library's default (10,000) is far below the
# distinct words of a real corpus, so most words were merged again each time they occurred; a
# larger cache encodes ~15% faster and costs tens of MB at most. The ids are the same either way.
BPE_CACHE_WORDS = 2**18


def load_trained_tokenizer(tokenizer_dir: Path) -> tuple[Tokenizer, str, int]:
    """The ``tokenizers.Tokenizer`` of a tokenizer folder, its eos token and eos id."""
    # Shards hold every token of every document, whatever the file says about truncation.
    path = tokenizer_dir / "tokenizer.json"
    tokenizer = read_tokenizer_file(path, "run `glotta tokenizer` first")
    eos = None
    config_path = tokenizer_dir / "tokenizer_config.json"
    if config_path.is_file():
        eos = json.loads(config_path.read_text(encoding="utf-8")).get("eos_token")
        if isinstance(eos, dict):  # transformers 4 writes AddedToken objects
            eos = eos.get("content")
    if not eos:
        raise GlottaError(f"{config_path} names no eos_token; re-run `glotta tokenizer`")
    eos_id = tokenizer.token_to_id(eos)
    if eos_id is None:
        raise GlottaError(f"the eos token {eos!r} is not in {path}; re-run `glotta tokenizer`")
    return tokenizer, eos, eos_id


def widen_word_cache(tokenizer: Tokenizer) -> None:
    """Give a BPE model a word cache of :data:`BPE_CACHE_WORDS` (other models have none)."""
    resize = getattr(tokenizer.model, "_resize_cache", None)  # tokenizers >= 0.20, BPE only
    if resize is not None:
        resize(BPE_CACHE_WORDS)


TextEncoder = Callable[[list[str]], list[list[int]]]


def text_encoder(tokenizer: Tokenizer) -> TextEncoder:
    """The fastest exact encoder of ``tokenizer``: texts in, each text's ids out, no special
    tokens added (the shard adds eos itself). :class:`ByteLevelEncoder` where it applies
    (~3x faster on one core, same ids), else the tokenizer's own batch encoder."""
    byte_level = ByteLevelEncoder.for_tokenizer(tokenizer)
    if byte_level is not None:
        return byte_level.encode
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # fast: no offsets
    return lambda texts: [e.ids for e in encode(texts, add_special_tokens=False)]


def document_batches(
    path: Path, batch_documents: int, start: int = 0, end: int | None = None
) -> Iterator[tuple[list[str], int]]:
    """The texts of a JSONL file in batches, each with the bytes of its lines (for progress).

    ``start``/``end`` limit reading to a byte range made by :func:`line_ranges`. A batch's
    lines are parsed as one JSON array: one call into the C parser instead of one per line
    halves the parsing time, which competes with the encoder for cores.
    """
    with open(path, "rb") as f:
        f.seek(start)
        # A range is at most a few MB: read it at once rather than stop a line iterator at `end`.
        lines_source = f if end is None else io.BytesIO(f.read(end - start))
        lines_before = 0  # lines of the range before this batch
        while lines := list(itertools.islice(lines_source, batch_documents)):
            try:
                records = json.loads(b"[" + b",".join(lines) + b"]")
                texts = [record["text"] for record in records]
                parsed = len(texts) == len(lines) and all(isinstance(t, str) for t in texts)
            except (ValueError, KeyError, TypeError):
                parsed = False
            if not parsed:  # find the damaged line and name it
                first_line = _lines_in(path, start) + lines_before + 1
                texts = [_parse_line(path, first_line + i, line) for i, line in enumerate(lines)]
            yield texts, sum(map(len, lines))
            lines_before += len(lines)


def _lines_in(path: Path, end: int) -> int:
    """Newlines in the first ``end`` bytes of ``path`` (only counted to name a damaged line)."""
    count = 0
    with open(path, "rb") as f:
        while end > 0 and (block := f.read(min(end, 1 << 24))):
            count += block.count(b"\n")
            end -= len(block)
    return count


def _parse_line(path: Path, line_number: int, line: bytes) -> str:
    """The text of one JSONL line, or an error naming the line (the corpus file is damaged)."""
    try:
        text = json.loads(line)["text"]
        if isinstance(text, str):
            return text
    except (ValueError, KeyError, TypeError):
        pass
    raise GlottaError(
        f'{path}:{line_number}: not a JSON object with a "text" string; the corpus file is '
        "damaged: run `glotta corpus` again"
    )


def line_ranges(path: Path, range_bytes: int) -> list[tuple[int, int]]:
    """``path`` cut into consecutive ``(start, end)`` byte ranges of about ``range_bytes``, each
    ending after a newline (or at the end of the file), so no line is split or lost."""
    if range_bytes <= 0:
        raise ValueError(f"range_bytes must be positive, got {range_bytes}")
    size = path.stat().st_size
    ranges = []
    with open(path, "rb") as f:
        start = 0
        while start < size:
            f.seek(start + range_bytes)
            f.readline()  # to the end of the line the cut fell in (nothing past the end)
            end = min(f.tell(), size)
            ranges.append((start, end))
            start = end
    return ranges


@dataclass(frozen=True)
class EncodedRange:
    """The shard ids of one byte range of a JSONL file, and the counts ``meta.json`` reports."""

    ids: np.ndarray  # documents_to_ids: every document's ids, each followed by eos
    documents: int
    utf8_bytes: int
    characters: int
    source_bytes: int  # bytes of the JSONL lines read (progress)


_worker: tuple[TextEncoder, int, int] | None = None  # encoder, vocab size, eos id


def _init_worker(tokenizer_dir: str) -> None:
    # One encoder thread per process: the pool itself is the parallelism, and a thread pool per
    # process would only oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    global _worker
    tokenizer, _, eos_id = load_trained_tokenizer(Path(tokenizer_dir))
    widen_word_cache(tokenizer)
    _worker = text_encoder(tokenizer), tokenizer.get_vocab_size(with_added_tokens=True), eos_id


def _encode_range(path: str, start: int, end: int, batch_documents: int) -> EncodedRange:
    assert _worker is not None, "EncoderPool starts its workers with _init_worker"
    encode, vocab_size, eos_id = _worker
    parts, documents, utf8_bytes, characters, source_bytes = [], 0, 0, 0, 0
    for texts, batch_bytes in document_batches(Path(path), batch_documents, start, end):
        parts.append(documents_to_ids(encode(texts), vocab_size, eos_id))
        documents += len(texts)
        utf8_bytes += sum(len(text.encode("utf-8")) for text in texts)
        characters += sum(map(len, texts))
        source_bytes += batch_bytes
    ids = np.concatenate(parts) if parts else documents_to_ids([], vocab_size, eos_id)
    return EncodedRange(ids, documents, utf8_bytes, characters, source_bytes)


class EncoderPool:
    """``processes`` worker processes, each holding the tokenizer of ``tokenizer_dir``.

    Started on the first :meth:`encode` (a run whose splits are all small never pays for it);
    :meth:`close` (``contextlib.closing``) stops the workers and drops work not yet started.
    """

    def __init__(self, tokenizer_dir: Path, processes: int):
        self.tokenizer_dir = tokenizer_dir
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None

    def encode(
        self, path: Path, ranges: list[tuple[int, int]], batch_documents: int
    ) -> Iterator[EncodedRange]:
        """The encoded ranges of ``path``, in the order of ``ranges``.

        At most two ranges per worker are in flight, so memory stays bounded whatever the
        file size. A worker that dies (killed for memory, say) is a GlottaError.
        """
        if self._executor is None:
            # spawn, not fork: this process may hold threads (the tokenizers pool, torch) that
            # fork would copy in a locked state. A process pool, not multiprocessing.Pool: it
            # reports a killed worker instead of waiting for it forever.
            self._executor = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(str(self.tokenizer_dir),),
            )
        pending: collections.deque[Future[EncodedRange]] = collections.deque()
        try:
            for start, end in ranges:
                pending.append(
                    self._executor.submit(_encode_range, str(path), start, end, batch_documents)
                )
                while len(pending) >= 2 * self.processes:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            raise GlottaError(
                f"a pack worker process died while encoding {path} (out of memory?); "
                "set pack.threads lower and run `glotta pack` again"
            ) from None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
