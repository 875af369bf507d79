"""The corpus stage: raw inputs -> cleaned, deduplicated train/valid/test document files.

    glotta run RECIPE            # runs this stage first, into RUN_DIR/corpus/
    glotta corpus RECIPE --set corpus.inputs='["texts/*.txt.gz"]'

Writes ``train.jsonl``, ``valid.jsonl``, ``test.jsonl`` (one ``{"text": ...}`` per line),
``stats.json`` (what came in, what went out, why documents were dropped) and, last,
``COMPLETE.json``. One pass, streaming: memory is the dedup set (~70 B per unique document).
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from glotta.config import CorpusConfig
from glotta.corpus.clean import DROP_REASONS_CLEAN, clean_text, length_drop_reason
from glotta.corpus.dedup import ExactDedup, assign_split, check_fractions
from glotta.corpus.markup import convert_markup
from glotta.corpus.readers import READER_SKIP_REASONS, iter_documents
from glotta.documents import SPLITS, DocumentWriter
from glotta.errors import GlottaError
from glotta.rundir import begin_stage, mark_complete, stage_fingerprint, write_json_atomic

DROP_REASONS = (*READER_SKIP_REASONS, *DROP_REASONS_CLEAN, "duplicate")
STATS_FILE = "stats.json"

# What to tell the user when a corpus comes out empty, by the reason that dropped the most.
_ADVICE = {
    "invalid_json": "check that the files are JSON Lines (one object per line)",
    "missing_field": "set corpus.text_fields to the field that holds the text",
    "bad_tsv_row": "check corpus.tsv_columns against the files' columns",
    "empty": "check corpus.format and corpus.txt_documents",
    "too_short": "lower corpus.min_chars or use corpus.txt_documents = 'paragraphs' or 'file'",
    "too_long": "raise corpus.max_chars (0 = no limit) or split the text into documents",
    "duplicate": "the inputs repeat the same text; add more distinct text",
}


def check_config(cfg: CorpusConfig) -> None:
    """Reject settings that cannot work, naming the key, before any file is touched."""
    check_fractions(cfg.valid_fraction, cfg.test_fraction)
    if cfg.min_chars < 0 or cfg.max_chars < 0 or cfg.max_documents < 0:
        raise GlottaError("corpus.min_chars, max_chars and max_documents must not be negative")
    if 0 < cfg.max_chars < cfg.min_chars:
        raise GlottaError(
            f"corpus.max_chars = {cfg.max_chars} is below corpus.min_chars = {cfg.min_chars}"
        )
    if not cfg.text_fields:
        raise GlottaError("corpus.text_fields is empty: name the field(s) that hold the text")
    if not cfg.tsv_columns or min(cfg.tsv_columns) < 0:
        raise GlottaError(f"corpus.tsv_columns = {cfg.tsv_columns}: give 0-based column numbers")


def run_corpus(cfg: CorpusConfig, out_dir: Path) -> dict[str, Any]:
    """Run the corpus stage into ``out_dir``; return the statistics also saved as stats.json."""
    out_dir = Path(out_dir)
    check_config(cfg)
    documents = iter_documents(cfg)  # resolves inputs now: a missing file fails before any work
    begin_stage(out_dir)
    # Outputs of an earlier run must not survive next to a failed one and look current.
    for name in (*(f"{s}.jsonl" for s in SPLITS), STATS_FILE):
        (out_dir / name).unlink(missing_ok=True)

    started = time.perf_counter()
    writers: dict[str, DocumentWriter] = {}
    try:
        for split in SPLITS:
            writers[split] = DocumentWriter(out_dir / f"{split}.jsonl")
        with contextlib.closing(documents):  # closes the open input file on early exit
            counts = _process(cfg, documents, writers)
        if writers["train"].documents == 0:
            raise GlottaError(_empty_message(cfg, counts, writers))
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        writer.close()

    stats = _stats(cfg, counts, writers, time.perf_counter() - started)
    write_json_atomic(out_dir / STATS_FILE, stats)
    print(format_summary(stats), file=sys.stderr)
    summary = {
        "documents_in": stats["documents_in"],
        "documents_out": stats["documents_out"],
        "bytes_out": stats["bytes_out"],
        **{f"{s}_documents": stats["splits"][s]["documents"] for s in SPLITS},
    }
    mark_complete(out_dir, "corpus", stage_fingerprint(cfg), summary)  # last: the stage is done
    return stats


def clean_document(cfg: CorpusConfig, raw_text: str) -> tuple[str, str | None]:
    """Markup conversion, cleaning and the length filter: the text and its drop reason (or None)."""
    text = clean_text(convert_markup(raw_text, cfg.markup), cfg.normalization)
    return text, length_drop_reason(text, cfg.min_chars, cfg.max_chars)


def _process(cfg: CorpusConfig, documents, writers: dict[str, DocumentWriter]) -> dict:
    """The pipeline proper: markup -> clean -> length filter -> dedup -> split -> write."""
    dropped: Counter[str] = Counter()
    files: Counter[str] = Counter()
    dedup = ExactDedup() if cfg.dedup else None
    documents_in = bytes_in = utf8_replaced = 0
    if cfg.max_documents:
        documents = itertools.islice(documents, cfg.max_documents)
    progress = tqdm(
        documents,
        desc="corpus",
        unit=" docs",
        total=cfg.max_documents or None,
        file=sys.stderr,
        disable=None,  # no bar when stderr is not a terminal (logs, CI)
        mininterval=1.0,
    )
    for raw in progress:
        documents_in += 1
        files[raw.source] += 1
        utf8_replaced += raw.utf8_replaced
        if raw.skip:
            dropped[raw.skip] += 1
            continue
        bytes_in += len(raw.text.encode("utf-8"))
        text, reason = clean_document(cfg, raw.text)
        if reason is None and dedup is not None and dedup.is_duplicate(text):
            reason = "duplicate"
        if reason:
            dropped[reason] += 1
            continue
        split = assign_split(text, cfg.split_salt, cfg.valid_fraction, cfg.test_fraction)
        writers[split].write(text)
    progress.close()
    return {
        "documents_in": documents_in,
        "bytes_in": bytes_in,
        "dropped": dropped,
        "files": files,
        "utf8_replaced": utf8_replaced,
        "max_documents_reached": bool(cfg.max_documents) and documents_in >= cfg.max_documents,
    }


def _stats(cfg: CorpusConfig, counts: dict, writers: dict, elapsed: float) -> dict[str, Any]:
    splits = {s: {"documents": w.documents, "bytes": w.bytes} for s, w in writers.items()}
    return {
        "inputs": list(cfg.inputs) if cfg.inputs else [f"hf://{cfg.hf_dataset}"],
        "documents_in": counts["documents_in"],
        "bytes_in": counts["bytes_in"],  # UTF-8 bytes of the texts as read, before cleaning
        "documents_out": sum(s["documents"] for s in splits.values()),
        "bytes_out": sum(s["bytes"] for s in splits.values()),
        "splits": splits,
        "dropped": {reason: counts["dropped"][reason] for reason in DROP_REASONS},
        "invalid_utf8_replaced": counts["utf8_replaced"],
        "max_documents_reached": counts["max_documents_reached"],
        "files": dict(counts["files"]),
        "elapsed_seconds": round(elapsed, 3),
    }


def format_summary(stats: dict[str, Any]) -> str:
    """A few human-readable lines: what came in, what went out, why documents were dropped."""
    n_files = len(stats["files"])
    sp = stats["splits"]
    lines = [
        f"corpus: read {stats['documents_in']:,} documents ({_mb(stats['bytes_in'])}) from "
        f"{n_files:,} source{'s' * (n_files != 1)} in {stats['elapsed_seconds']:.1f} s",
        f"corpus: kept {stats['documents_out']:,} ({_mb(stats['bytes_out'])}): "
        + " / ".join(f"{s} {sp[s]['documents']:,}" for s in SPLITS),
    ]
    dropped = {r: n for r, n in stats["dropped"].items() if n}
    if dropped:
        lines.append(
            f"corpus: dropped {sum(dropped.values()):,}: "
            + ", ".join(f"{r} {n:,}" for r, n in sorted(dropped.items(), key=lambda x: -x[1]))
        )
    if stats["invalid_utf8_replaced"]:
        lines.append(
            f"corpus: {stats['invalid_utf8_replaced']:,} documents had invalid UTF-8 "
            "(bad bytes replaced by U+FFFD)"
        )
    if stats["max_documents_reached"]:
        lines.append("corpus: stopped at corpus.max_documents")
    return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _empty_message(cfg: CorpusConfig, counts: dict, writers: dict) -> str:
    where = ", ".join(cfg.inputs) if cfg.inputs else f"hf://{cfg.hf_dataset}"
    kept = sum(w.documents for w in writers.values())
    dropped = {r: n for r, n in counts["dropped"].items() if n}
    if kept:
        return (
            f"corpus from {where}: all {kept} kept documents went to valid/test and none to "
            "train; add more text or lower corpus.valid_fraction/test_fraction"
        )
    if not dropped:
        return f"corpus from {where} is empty: the inputs contain no documents"
    main = max(dropped, key=dropped.get)
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(dropped.items(), key=lambda x: -x[1]))
    return (
        f"corpus from {where} is empty after cleaning: all {counts['documents_in']} documents "
        f"were dropped ({reasons}); {_ADVICE[main]}"
    )


__all__ = ["DROP_REASONS", "check_config", "format_summary", "run_corpus"]
