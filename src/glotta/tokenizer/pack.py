"""The pack stage: tokenize the corpus splits into binary token shards.

    glotta run RECIPE            # runs this stage after the tokenizer stage, into RUN_DIR/shards/
    glotta pack RECIPE --set pack.threads=8

Reads ``RUN_DIR/corpus/{train,valid,test}.jsonl`` and ``RUN_DIR/tokenizer/tokenizer.json``; writes
``{train,valid,test}.bin`` (see :mod:`glotta.tokenizer.shards`: header, then the ids of every
document followed by eos), ``meta.json`` and, last, ``COMPLETE.json``. Streaming: memory is one
batch of ``pack.batch_documents`` documents (two in flight), whatever the corpus size. Encoding
runs in the ``tokenizers`` Rust thread pool (``encode_batch``), so it uses every core unless
``pack.threads`` says otherwise, and it overlaps the Python work around it: while one batch is
encoded (without the GIL), the next is read and parsed and the previous one written.

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

import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
from glotta.tokenizer.files import read_tokenizer_file
from glotta.tokenizer.shards import HEADER_BYTES, VERSION, ShardWriter, token_dtype

META_FILE = "meta.json"
FORMAT = "glotta-tokens"  # meta.json's name for the shard format of glotta.tokenizer.shards


def pack_fingerprint(cfg: PackConfig, run_dir: RunDir) -> str:
    """The pack settings chained with the tokenizer stage's fingerprint (itself chained to corpus)."""
    return stage_fingerprint(cfg, run_dir.tokenizer)


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


# Words whose BPE merges the tokenizer remembers. The library's default (10,000) is far below the
# distinct words of a real corpus, so most words were merged again each time they occurred; a
# larger cache encodes ~15% faster and costs tens of MB at most. The ids are the same either way.
BPE_CACHE_WORDS = 2**18


def widen_word_cache(tokenizer: Tokenizer) -> None:
    """Give a BPE model a word cache of :data:`BPE_CACHE_WORDS` (other models have none)."""
    resize = getattr(tokenizer.model, "_resize_cache", None)  # tokenizers >= 0.20, BPE only
    if resize is not None:
        resize(BPE_CACHE_WORDS)


def _document_batches(path: Path, batch_documents: int) -> Iterator[tuple[list[str], int]]:
    """The texts of a JSONL file in batches, each with the bytes of its lines (for progress).

    A batch's lines are parsed as one JSON array: one call into the C parser instead of one per
    line halves the parsing time, which runs beside the encoder and competes with it for cores.
    """
    with open(path, "rb") as f:
        first_line = 1
        while lines := list(itertools.islice(f, batch_documents)):
            try:
                records = json.loads(b"[" + b",".join(lines) + b"]")
                texts = [record["text"] for record in records]
                parsed = len(texts) == len(lines) and all(isinstance(t, str) for t in texts)
            except (ValueError, KeyError, TypeError):
                parsed = False
            if not parsed:  # find the damaged line and name it
                texts = [_parse_line(path, first_line + i, line) for i, line in enumerate(lines)]
            yield texts, sum(map(len, lines))
            first_line += len(lines)


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


def pack_split(
    tokenizer: Tokenizer,
    source: Path,
    target: Path,
    vocab_size: int,
    eos_id: int,
    batch_documents: int,
    desc: str = "",
) -> dict[str, int]:
    """Tokenize the documents of ``source`` (JSONL) into the shard ``target``; return counts.

    One batch is encoded on a worker thread (the Rust encoder releases the GIL) while this
    thread parses the next batch and writes the previous one, so both overlap the encoding.
    Batches are written in their reading order.
    """
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # fast: no offsets
    utf8_bytes = characters = 0
    progress = tqdm(
        total=source.stat().st_size, unit="B", unit_scale=True, desc=desc, file=sys.stderr
    )
    with (
        progress,
        ShardWriter(target, vocab_size, eos_id) as writer,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="glotta-pack") as encoder,
    ):
        in_flight: tuple[Future, int] | None = None

        def write(encoded: tuple[Future, int]) -> None:
            future, batch_bytes = encoded
            writer.write_documents([e.ids for e in future.result()])
            progress.update(batch_bytes)

        for batch, batch_bytes in _document_batches(source, batch_documents):
            submitted = (encoder.submit(encode, batch, add_special_tokens=False), batch_bytes)
            for text in batch:
                utf8_bytes += len(text.encode("utf-8"))
                characters += len(text)
            if in_flight is not None:
                write(in_flight)
            in_flight = submitted
        if in_flight is not None:
            write(in_flight)
        progress.set_postfix(tokens=f"{writer.tokens:,}")
    return {
        "file": target.name,
        "documents": writer.documents,
        "tokens": writer.tokens,
        "utf8_bytes": utf8_bytes,
        "characters": characters,
    }


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
    splits = {
        split: pack_split(
            tokenizer,
            source,
            out_dir / f"{split}.bin",
            vocab_size,
            eos_id,
            cfg.batch_documents,
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


def format_summary(meta: dict[str, Any]) -> str:
    parts = [
        f"{split} {s['tokens']:,} tokens / {s['documents']:,} documents"
        for split, s in meta["splits"].items()
    ]
    return (
        f"pack: {'; '.join(parts)} ({meta['dtype']}, {meta['tokens_per_second'] or 0:,} tokens/s)"
    )
