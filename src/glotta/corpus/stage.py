"""The corpus stage: raw inputs -> cleaned, deduplicated train/valid/test document files.

    glotta run RECIPE            # runs this stage first, into RUN_DIR/corpus/
    glotta corpus RECIPE --set corpus.inputs='["texts/*.txt.gz"]'

Writes ``train.jsonl``, ``valid.jsonl``, ``test.jsonl`` (one ``{"text": ...}`` per line),
``stats.json`` (what came in, what went out, why documents were dropped),
``dropped_samples.jsonl`` (a few dropped documents per reason, to check the filters) and, last,
``COMPLETE.json``. One streaming pass: reading and writing here, the per-document work
(``process.py``: markup, cleaning, language, quality, PII, MinHash) in worker processes, or as
datatrove tasks on a cluster (``scale.py``). Memory is the exact-dedup set (~70 B per unique
document) plus the fixed-size near-duplicate filter.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from glotta.config import CorpusConfig
from glotta.corpus.dedup import ExactDedup, assign_split, check_fractions
from glotta.corpus.encoding import encoding_problem
from glotta.corpus.near_dedup import BloomLSH, lsh_parameters
from glotta.corpus.process import DocumentProcessor, Processed, process_stream, worker_count
from glotta.corpus.readers import READER_SKIP_REASONS, iter_documents
from glotta.corpus.settings import corpus_identity, output_settings
from glotta.corpus.steps import step_drop_reasons
from glotta.documents import SPLITS, DocumentWriter
from glotta.errors import GlottaError
from glotta.rundir import begin_stage, mark_complete, stage_fingerprint, write_json_atomic

# Every reason a document can be dropped, in the order the work meets it, with what to tell the
# user when a corpus comes out empty (by the reason that dropped the most). The readers' and the
# per-document steps' reasons come with their declarations; deduplication's are the stage's own.
_DEDUP_ADVICE = {
    "duplicate": "the inputs repeat the same text; add more distinct text",
    "near_duplicate": "raise corpus.near_dedup_threshold or set corpus.near_dedup = false",
}


def drop_advice() -> dict[str, str]:
    """Every drop reason (readers', steps', deduplication's) with its advice, in work order."""
    return {**READER_SKIP_REASONS, **step_drop_reasons(), **_DEDUP_ADVICE}


DROP_REASONS = tuple(drop_advice())  # of the shipped steps; the stage asks drop_advice() anew
STATS_FILE = "stats.json"
SAMPLES_FILE = "dropped_samples.jsonl"
SAMPLE_CHARS = 2000  # dropped documents are cut to this length in the samples file


def check_config(cfg: CorpusConfig) -> None:
    """Reject settings that cannot work, naming the key, before any file is touched."""
    check_fractions(cfg.valid_fraction, cfg.test_fraction)
    if cfg.min_chars < 0 or cfg.max_chars < 0 or cfg.max_documents < 0:
        raise GlottaError("corpus.min_chars, max_chars and max_documents must not be negative")
    if 0 < cfg.max_chars < cfg.min_chars:
        raise GlottaError(
            f"corpus.max_chars = {cfg.max_chars} is below corpus.min_chars = {cfg.min_chars}"
        )
    if problem := encoding_problem(cfg.encoding):
        raise GlottaError(f"corpus.encoding = {cfg.encoding!r}: {problem}")
    if not cfg.text_fields:
        raise GlottaError("corpus.text_fields is empty: name the field(s) that hold the text")
    if not cfg.tsv_columns or min(cfg.tsv_columns) < 0:
        raise GlottaError(f"corpus.tsv_columns = {cfg.tsv_columns}: give 0-based column numbers")
    if cfg.executor != "local" and cfg.max_documents:
        raise GlottaError(
            f"corpus.max_documents works with corpus.executor = 'local' only (not "
            f"{cfg.executor!r}); limit the inputs instead"
        )
    DocumentProcessor(cfg)  # rejects unknown languages and impossible near-dedup settings


# How the work is spread does not change what is written: a run with other values of these keys
# is the same stage (glotta run does not redo it).
def run_corpus(cfg: CorpusConfig, out_dir: Path) -> dict[str, Any]:
    """Run the corpus stage into ``out_dir``; return the statistics also saved as stats.json."""
    out_dir = Path(out_dir)
    check_config(cfg)
    # Taken before reading: an input edited while it is read counts as changed next time.
    identity = corpus_identity(cfg)
    documents = iter_documents(cfg)  # resolves inputs now: a missing file fails before any work
    begin_stage(out_dir)
    # Outputs of an earlier run must not survive next to a failed one and look current.
    for name in (*(f"{s}.jsonl" for s in SPLITS), STATS_FILE, SAMPLES_FILE):
        (out_dir / name).unlink(missing_ok=True)

    started = time.perf_counter()
    writers: dict[str, DocumentWriter] = {}
    try:
        for split in SPLITS:
            writers[split] = DocumentWriter(out_dir / f"{split}.jsonl")
        with contextlib.ExitStack() as stack:
            stack.enter_context(contextlib.closing(documents))  # the open input file
            if cfg.executor == "local":
                if cfg.max_documents:
                    documents = itertools.islice(documents, cfg.max_documents)
                processed = process_stream(cfg, documents)
            else:
                from glotta.corpus.scale import run_sharded

                processed = run_sharded(cfg, out_dir, identity)
            stack.enter_context(contextlib.closing(processed))  # closed first: stops the workers
            counts = _consume(cfg, processed, writers)
        if writers["train"].documents == 0:
            raise GlottaError(_empty_message(cfg, counts, writers))
        _check_held_out(cfg, writers)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        writer.close()

    _write_samples(out_dir / SAMPLES_FILE, counts["samples"])
    stats = _stats(cfg, counts, writers, time.perf_counter() - started)
    write_json_atomic(out_dir / STATS_FILE, stats)
    print(format_summary(stats), file=sys.stderr)
    summary = {
        "documents_in": stats["documents_in"],
        "documents_out": stats["documents_out"],
        "bytes_out": stats["bytes_out"],
        **{f"{s}_documents": stats["splits"][s]["documents"] for s in SPLITS},
    }
    # last: the stage is done
    mark_complete(out_dir, "corpus", stage_fingerprint(identity), summary, inputs=identity.inputs)
    return stats


def _consume(cfg: CorpusConfig, processed, writers: dict[str, DocumentWriter]) -> dict:
    """The serial part: count, exact dedup, near dedup, split, write; keep samples of drops."""
    dropped: Counter[str] = Counter()
    files: Counter[str] = Counter()
    replaced: Counter[str] = Counter()
    encodings: dict[str, str] = {}
    events: Counter[str] = Counter()
    samples: dict[str, list[dict]] = {}
    dedup = ExactDedup() if cfg.dedup else None
    near = BloomLSH(cfg.near_dedup_memory_mb) if cfg.near_dedup else None
    documents_in = bytes_in = documents_replaced = 0
    progress = tqdm(
        processed,
        desc="corpus",
        unit=" docs",
        total=cfg.max_documents or None,
        file=sys.stderr,
        disable=None,  # no bar when stderr is not a terminal (logs, CI)
        mininterval=1.0,
    )
    doc: Processed
    for doc in progress:
        documents_in += 1
        files[doc.source] += 1
        documents_replaced += bool(doc.replaced)
        if doc.replaced:
            replaced[doc.source] += doc.replaced
        encodings.setdefault(doc.source, doc.encoding)
        bytes_in += doc.bytes_in
        events.update(doc.events)
        reason = doc.drop
        if reason is None and dedup is not None and dedup.is_duplicate(doc.text):
            reason = "duplicate"
        if reason is None and near is not None and near.seen_or_add(doc.band_keys):
            reason = "near_duplicate"
        if reason:
            dropped[reason] += 1
            kept = samples.setdefault(reason, [])
            if len(kept) < cfg.dropped_samples and doc.text:
                kept.append(
                    {"reason": reason, "source": doc.source, "text": doc.text[:SAMPLE_CHARS]}
                )
            continue
        split = assign_split(doc.text, cfg.split_salt, cfg.valid_fraction, cfg.test_fraction)
        writers[split].write(doc.text)
    progress.close()
    return {
        "documents_in": documents_in,
        "bytes_in": bytes_in,
        "dropped": dropped,
        "files": files,
        "events": events,
        "samples": samples,
        "near_dedup": _near_dedup_stats(cfg, near),
        "documents_replaced": documents_replaced,
        "replaced": replaced,
        "encodings": encodings,
        "max_documents_reached": bool(cfg.max_documents) and documents_in >= cfg.max_documents,
    }


def _near_dedup_stats(cfg: CorpusConfig, near: BloomLSH | None) -> dict[str, Any] | None:
    if near is None:
        return None
    bands, rows = lsh_parameters(cfg.near_dedup_permutations, cfg.near_dedup_threshold)
    per_key = near.false_positive_rate()
    return {
        "threshold": cfg.near_dedup_threshold,
        "ngram": cfg.near_dedup_ngram,
        "bands": bands,
        "rows": rows,
        "memory_mb": cfg.near_dedup_memory_mb,
        "keys_stored": near.keys_added,
        # A document is wrongly dropped when any of its band keys is a false positive.
        "estimated_false_drop_rate": 1.0 - (1.0 - per_key) ** bands,
    }


def _write_samples(path: Path, samples: dict[str, list[dict]]) -> None:
    """Dropped documents, grouped by reason, for a person to check what the filters removed."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as fh:
        for reason in sorted(samples):
            for sample in samples[reason]:
                fh.write(json.dumps(sample, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _stats(cfg: CorpusConfig, counts: dict, writers: dict, elapsed: float) -> dict[str, Any]:
    splits = {s: {"documents": w.documents, "bytes": w.bytes} for s, w in writers.items()}
    return {
        "inputs": list(cfg.inputs) if cfg.inputs else [f"hf://{cfg.hf_dataset}"],
        "documents_in": counts["documents_in"],
        "bytes_in": counts["bytes_in"],  # UTF-8 bytes of the texts as read, before cleaning
        "documents_out": sum(s["documents"] for s in splits.values()),
        "bytes_out": sum(s["bytes"] for s in splits.values()),
        "splits": splits,
        "dropped": {reason: counts["dropped"][reason] for reason in drop_advice()},
        "events": dict(sorted(counts["events"].items())),
        "near_dedup": counts["near_dedup"],
        # Documents with undecodable bytes (read as U+FFFD), and those bytes per file.
        "invalid_utf8_replaced": counts["documents_replaced"],
        "replaced_characters": dict(counts["replaced"]),
        "encoding": cfg.encoding,
        "encodings": counts["encodings"],  # per file: the codec it was read with
        "max_documents_reached": counts["max_documents_reached"],
        "files": dict(counts["files"]),
        "elapsed_seconds": round(elapsed, 3),
        "executor": cfg.executor,
        "workers": worker_count(cfg),
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
    if stats["events"]:
        lines.append(
            "corpus: changed inside kept documents: "
            + ", ".join(f"{k.replace('_', ' ')} {n:,}" for k, n in stats["events"].items())
        )
    near = stats["near_dedup"]
    if near:
        lines.append(
            f"corpus: near-dedup {near['bands']} bands x {near['rows']} rows (Jaccard "
            f"{near['threshold']}), {near['keys_stored']:,} keys in {near['memory_mb']:g} MB, "
            f"estimated false drops {near['estimated_false_drop_rate']:.2e}"
            + (
                " (high: raise corpus.near_dedup_memory_mb)"
                if near["estimated_false_drop_rate"] > 1e-3
                else ""
            )
        )
    if stats["invalid_utf8_replaced"]:
        lines.append(
            f"corpus: {stats['invalid_utf8_replaced']:,} documents had undecodable bytes "
            f"({sum(stats['replaced_characters'].values()):,}, replaced by U+FFFD; per file in "
            "stats.json)"
        )
    other = [f"{Path(f).name} {e}" for f, e in stats["encodings"].items() if e != "utf-8"]
    if other:
        more = f" and {len(other) - 5:,} more" if len(other) > 5 else ""
        lines.append(f"corpus: read in other encodings: {', '.join(other[:5])}{more}")
    if stats["max_documents_reached"]:
        lines.append("corpus: stopped at corpus.max_documents")
    return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _check_held_out(cfg: CorpusConfig, writers: dict) -> None:
    """An empty valid or test split fails here, not hours later in training or evaluation."""
    kept = sum(w.documents for w in writers.values())
    for split, fraction in (("valid", cfg.valid_fraction), ("test", cfg.test_fraction)):
        if fraction > 0 and writers[split].documents == 0:
            raise GlottaError(
                f"corpus: the {split} split is empty ({kept:,} documents kept, corpus."
                f"{split}_fraction = {fraction:g}); training and evaluation need held-out text: "
                f"raise corpus.{split}_fraction (e.g. 0.1 for a small corpus) or add text"
            )


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
        f"were dropped ({reasons}); {drop_advice()[main]}"
    )


__all__ = ["DROP_REASONS", "check_config", "format_summary", "output_settings", "run_corpus"]
