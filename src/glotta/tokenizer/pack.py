"""The pack stage: tokenize the corpus splits into binary token shards.

    glotta run RECIPE            # runs this stage after the tokenizer stage, into RUN_DIR/shards/
    glotta pack RECIPE --set pack.threads=8

Reads ``RUN_DIR/corpus/{train,valid,test}.jsonl`` and ``RUN_DIR/tokenizer/tokenizer.json``; writes
``{train,valid,test}.bin`` (see :mod:`glotta.tokenizer.shards`: header, then the ids of every
document followed by eos), ``meta.json`` and, last, ``COMPLETE.json``. ``pack.threads`` cores
encode (0 = all of them):

- a split over 32 MiB is cut into ~4 MiB ranges of whole lines, encoded by one worker process
  per core (each a single-threaded encoder) and written in file order;
- a smaller one is encoded here, on the ``tokenizers`` thread pool (``encode_batch``), one batch
  at a time on a helper thread while the next is parsed and the previous one written.

Either way memory is a few batches per core whatever the corpus size, and the shard is the same
byte for byte (see :mod:`glotta.tokenizer.encode`). A byte-level BPE tokenizer (glotta's ``bpe``
and ``roberta-bpe``, GPT-2's) is encoded by :mod:`glotta.tokenizer.byte_level`, ~3x faster on
one core with the same ids; other tokenizers by ``tokenizers`` itself.

``meta.json``::

    {"format": "glotta-tokens", "version": 1, "header_bytes": 64,
     "vocab_size": 32000, "eos_id": 0, "eos_token": "<|endoftext|>",
     "dtype": "uint16", "token_bytes": 2,
     "splits": {"train": {"file": "train.bin", "documents": ..., "tokens": ...,
                          "utf8_bytes": ..., "characters": ...}, "valid": {...}, "test": {...}},
     "seconds": ..., "tokens_per_second": ...}

``tokens`` counts the ids in the file, one eos per document included; ``utf8_bytes`` and
``characters`` are those of the original document texts (bits per byte divides by utf8_bytes).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from tqdm import tqdm

from glotta.config import PackConfig
from glotta.documents import SPLITS
from glotta.errors import GlottaError
from glotta.rundir import (
    RunDir,
    begin_stage,
    is_complete,
    mark_complete,
    stage_fingerprint,
    write_json_atomic,
)
from glotta.tokenizer.encode import (
    EncodedRange,
    EncoderPool,
    document_batches,
    line_ranges,
    load_trained_tokenizer,
    text_encoder,
    widen_word_cache,
)
from glotta.tokenizer.shards import (
    HEADER_BYTES,
    VERSION,
    ShardWriter,
    documents_to_ids,
    token_dtype,
)

META_FILE = "meta.json"
FORMAT = "glotta-tokens"  # meta.json's name for the shard format of glotta.tokenizer.shards


def pack_fingerprint(cfg: PackConfig, run_dir: RunDir) -> str:
    """The pack settings chained with the tokenizer stage's fingerprint (itself chained to corpus)."""
    return stage_fingerprint(cfg, run_dir.tokenizer)


# Splits larger than this are encoded by worker processes (one per core, each on ranges of
# RANGE_BYTES); smaller ones in this process, where starting the workers would cost more than
# they save (~1 s against ~4 s of encoding at 16 MiB on two cores).
WORKERS_FROM_BYTES = 32 * 2**20
RANGE_BYTES = 4 * 2**20  # ~1 s of encoding on one core: small tails, cheap hand-offs


def pack_split(
    tokenizer: Tokenizer,
    source: Path,
    target: Path,
    vocab_size: int,
    eos_id: int,
    batch_documents: int,
    workers: EncoderPool | None = None,
    desc: str = "",
) -> dict[str, int]:
    """Tokenize the documents of ``source`` (JSONL) into the shard ``target``; return counts.

    With ``workers`` and a source over :data:`WORKERS_FROM_BYTES`, its byte ranges are encoded
    by the worker processes; otherwise here, see :func:`_encode_here`. Either way documents
    are written in their reading order, so the shard does not depend on where they were encoded.
    """
    progress = tqdm(
        total=source.stat().st_size, unit="B", unit_scale=True, desc=desc, file=sys.stderr
    )
    with progress, ShardWriter(target, vocab_size, eos_id) as writer:
        if workers is not None and workers.processes > 1 and progress.total > WORKERS_FROM_BYTES:
            encoded = workers.encode(source, line_ranges(source, RANGE_BYTES), batch_documents)
        else:
            encoded = _encode_here(tokenizer, source, vocab_size, eos_id, batch_documents)
        utf8_bytes = characters = 0
        for part in encoded:
            writer.write_ids(part.ids, part.documents)
            utf8_bytes += part.utf8_bytes
            characters += part.characters
            progress.update(part.source_bytes)
        progress.set_postfix(tokens=f"{writer.tokens:,}")
    return {
        "file": target.name,
        "documents": writer.documents,
        "tokens": writer.tokens,
        "utf8_bytes": utf8_bytes,
        "characters": characters,
    }


def _encode_here(
    tokenizer: Tokenizer, source: Path, vocab_size: int, eos_id: int, batch_documents: int
) -> Iterator[EncodedRange]:
    """The batches of ``source`` encoded in this process, in order.

    One batch is encoded on a helper thread while this thread parses the next batch and
    writes the previous one. With the tokenizers encoder (which releases the GIL and runs on
    its own thread pool) that overlaps the encoding; the byte-level encoder is Python and
    mostly takes turns with them.
    """
    encode = text_encoder(tokenizer)

    def finish(texts: list[str], ids: Future[list[list[int]]], batch_bytes: int) -> EncodedRange:
        return EncodedRange(
            ids=documents_to_ids(ids.result(), vocab_size, eos_id),
            documents=len(texts),
            utf8_bytes=sum(len(text.encode("utf-8")) for text in texts),
            characters=sum(map(len, texts)),
            source_bytes=batch_bytes,
        )

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="glotta-pack") as encoder:
        in_flight = None
        for texts, batch_bytes in document_batches(source, batch_documents):
            submitted = (texts, encoder.submit(encode, texts), batch_bytes)
            if in_flight is not None:
                yield finish(*in_flight)
            in_flight = submitted
        if in_flight is not None:
            yield finish(*in_flight)


def run_pack(cfg: PackConfig, run_dir: RunDir) -> dict[str, Any]:
    """Run the pack stage; return the statistics also saved as ``shards/meta.json``."""
    if not is_complete(run_dir.tokenizer):
        raise GlottaError(
            f"no trained tokenizer in {run_dir.tokenizer}; run `glotta tokenizer` first"
        )
    if cfg.batch_documents <= 0:
        raise GlottaError(f"pack.batch_documents = {cfg.batch_documents} must be positive")
    if cfg.threads < 0:
        raise GlottaError(f"pack.threads = {cfg.threads} must not be negative (0 = all cores)")
    sources = {split: run_dir.corpus / f"{split}.jsonl" for split in SPLITS}
    for path in sources.values():
        if not path.is_file():
            raise GlottaError(f"{path} does not exist; run `glotta corpus` first")
    if cfg.threads > 0:
        # Sizes the tokenizers (Rust rayon) thread pool. It is read when the pool starts, i.e. on
        # the first parallel call in this process; in a process that already trained a tokenizer
        # it has no effect (the pool then has one thread per core).
        os.environ["RAYON_NUM_THREADS"] = str(cfg.threads)
    tokenizer, eos_token, eos_id = load_trained_tokenizer(run_dir.tokenizer)
    widen_word_cache(tokenizer)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    fp = pack_fingerprint(cfg, run_dir)
    out_dir = run_dir.shards
    begin_stage(out_dir)
    for name in (*(f"{s}.bin" for s in SPLITS), META_FILE):
        (out_dir / name).unlink(missing_ok=True)

    started = time.perf_counter()
    with closing(EncoderPool(run_dir.tokenizer, cfg.threads or usable_cpus())) as workers:
        splits = {
            split: pack_split(
                tokenizer,
                source,
                out_dir / f"{split}.bin",
                vocab_size,
                eos_id,
                cfg.batch_documents,
                workers=workers,
                desc=f"pack {split}",
            )
            for split, source in sources.items()
        }
    seconds = time.perf_counter() - started
    total_tokens = sum(s["tokens"] for s in splits.values())
    dtype = token_dtype(vocab_size)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "header_bytes": HEADER_BYTES,
        "vocab_size": vocab_size,
        "eos_id": eos_id,
        "eos_token": eos_token,
        "dtype": dtype.name,
        "token_bytes": dtype.itemsize,
        "splits": splits,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(total_tokens / seconds) if seconds > 0 else None,
    }
    write_json_atomic(out_dir / META_FILE, meta)
    print(format_summary(meta), file=sys.stderr)
    summary = {
        "vocab_size": vocab_size,
        "eos_id": eos_id,
        "dtype": dtype.name,
        **{f"{s}_tokens": splits[s]["tokens"] for s in SPLITS},
    }
    mark_complete(out_dir, "pack", fp, summary)  # last: the stage is done
    return meta


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask, e.g. under taskset or a cgroup)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def format_summary(meta: dict[str, Any]) -> str:
    parts = [
        f"{split} {s['tokens']:,} tokens / {s['documents']:,} documents"
        for split, s in meta["splits"].items()
    ]
    return (
        f"pack: {'; '.join(parts)} ({meta['dtype']}, {meta['tokens_per_second'] or 0:,} tokens/s)"
    )
