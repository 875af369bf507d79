"""Corpus stage throughput and memory: ``glotta corpus`` against a plain single-process script.

    python -m benchmarks.corpus_speed                 # 1 GB input (about 10 minutes here)
    python -m benchmarks.corpus_speed --size-mb 128   # a quick look

The input is REAL TEXT REPEATED: the Russian contexts that rl-wsd-labeled ships (~3 MB) are
shuffled and grouped eight to a document, a new shuffle for every copy, until --size-mb of JSONL
is written in 8 files. Every document is therefore distinct (exact dedup keeps them), but the
sentences repeat, which flatters nothing here: no step caches by sentence.

Measured, each in a fresh process under a wrapper that records wall time and peak RSS:

    baseline         a plain Python loop: json.loads, NFC, whitespace tidy, length filter,
                     exact dedup with a set of hashes, hash split, json.dumps -- one process
    glotta clean     glotta corpus with its defaults (the same work), workers 1 and 2, and at a
                     quarter of the size (memory must not grow with the input)
    glotta filters   + language ID (ru), Gopher quality rules, C4 boilerplate lines, PII
                     scrubbing and MinHash near-dedup, workers 1 and 2, on an eighth of the size

Throughput is input MB per second (MB = 10**6 bytes of JSONL). Ends with one JSON line; writes a
results file named by benchmark, input size, hardware and date.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import sys
import unicodedata
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CACHE_DIR,
    SMOKE_RESULTS_DIR,
    CpuWatch,
    contention_note,
    format_table,
    hardware_info,
    hardware_slug,
    log,
    measure_command,
    parse_with_smoke,
    publish,
    ratio,
    results_path,
)

FILES = 8
CONTEXTS_PER_DOCUMENT = 8
FILTERS = [
    'corpus.languages=["ru"]',
    "corpus.quality_filter=true",
    "corpus.scrub_pii=true",
    "corpus.near_dedup=true",
]


def write_input(folder: Path, size_mb: float) -> list[Path]:
    """FILES JSONL files holding --size-mb of distinct documents made of real sentences."""
    from glotta.config import CorpusConfig
    from glotta.corpus.readers import iter_documents

    marker = folder / "input.json"
    paths = [folder / f"part-{i}.jsonl" for i in range(FILES)]
    if marker.is_file() and json.loads(marker.read_text()) == {"size_mb": size_mb}:
        return paths
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    source = CorpusConfig(
        inputs=["pkg://rl_wsd_labeled/**/*.txt"], format="tsv", tsv_columns=[0, 1, 2]
    )
    contexts = [d.text.strip() for d in iter_documents(source) if not d.skip and d.text.strip()]
    target = int(size_mb * 1e6)
    log(f"writing {size_mb:g} MB of repeated real text (rl-wsd-labeled) into {folder}")
    handles = [open(p, "w", encoding="utf-8") for p in paths]
    written = copy = 0
    try:
        while written < target:
            random.Random(copy).shuffle(contexts)
            for i in range(0, len(contexts) - CONTEXTS_PER_DOCUMENT + 1, CONTEXTS_PER_DOCUMENT):
                text = "\n".join(contexts[i : i + CONTEXTS_PER_DOCUMENT])
                line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
                handles[(i // CONTEXTS_PER_DOCUMENT) % FILES].write(line)
                written += len(line.encode("utf-8"))
                if written >= target:
                    break
            copy += 1
    finally:
        for handle in handles:
            handle.close()
    marker.write_text(json.dumps({"size_mb": size_mb}))
    return paths


def baseline_main(inputs: list[str], out_dir: str) -> None:
    """What a hand-written cleaning script does, in one process (run via the 'baseline' verb)."""
    space_run, blank_lines = re.compile(r"[ \t]+"), re.compile(r"\n{3,}")
    seen: set[bytes] = set()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {
        s: open(out / f"{s}.jsonl", "w", encoding="utf-8") for s in ("train", "valid", "test")
    }
    for path in inputs:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                text = unicodedata.normalize("NFC", json.loads(line)["text"])
                text = blank_lines.sub("\n\n", space_run.sub(" ", text)).strip()
                if len(text) < 20:
                    continue
                digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
                if digest in seen:
                    continue
                seen.add(digest)
                u = digest[0] / 256
                split = "test" if u < 0.005 else "valid" if u < 0.01 else "train"
                splits[split].write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    for handle in splits.values():
        handle.close()


def _measure(label: str, command: list[str], work: Path, input_mb: float) -> dict[str, Any]:
    log(f"running {label}")
    with CpuWatch() as watch:
        result = measure_command(command, work / f"{label.replace(' ', '-')}.json")
    return {
        "label": label,
        "input_mb": round(input_mb, 1),
        "seconds": round(result["wall_seconds"], 1),
        "mb_per_s": round(input_mb / result["wall_seconds"], 2),
        "peak_rss_mib": round(result["tree_peak_rss_mib"], 0),
        "contention": watch.result(),
    }


def _documents(paths: list[Path]) -> int:
    """Lines (documents) in the JSONL inputs."""
    count = 0
    for path in paths:
        with open(path, "rb") as f:
            count += sum(1 for _ in f)
    return max(count, 1)


def _glotta(paths: list[Path], run_dir: Path, workers: int, extra: list[str]) -> list[str]:
    shutil.rmtree(run_dir, ignore_errors=True)
    inputs = json.dumps([str(p.resolve()) for p in paths])
    command = [sys.executable, "-m", "glotta", "corpus", "--run-dir", str(run_dir)]
    for setting in (
        f"corpus.inputs={inputs}",
        'corpus.format="jsonl"',
        f"corpus.workers={workers}",
        # The baseline's split (0.5% each); glotta refuses an empty held-out split, which a
        # small input (--smoke, the filter runs' eighth) may give: expect ten documents at least.
        f"corpus.valid_fraction={max(0.005, min(0.1, 10 / _documents(paths)))}",
        f"corpus.test_fraction={max(0.005, min(0.1, 10 / _documents(paths)))}",
        *extra,
    ):
        command += ["--set", setting]
    return command


def main() -> None:
    if sys.argv[1:2] == ["baseline"]:
        *inputs, out_dir = sys.argv[2:]
        baseline_main(inputs, out_dir)
        return
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.corpus_speed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--size-mb", type=float, default=1024, help="Input size in MB (10**6 B) (default: 1024)."
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=CACHE_DIR / "corpus-speed",
        help="Where the inputs and outputs are written (default: runs/bench/corpus-speed).",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="Where the results file goes (default: benchmarks/results).",
    )
    # --smoke: 0.4 MB of input (the filter runs get 0.05 MB); seconds per run.
    smoke = {
        "size_mb": 0.4,
        "work_dir": CACHE_DIR / "smoke-corpus-speed",
        "results_dir": SMOKE_RESULTS_DIR,
    }
    args = parse_with_smoke(parser, sys.argv[1:], smoke)

    work = args.work_dir
    full = write_input(work / f"input-{args.size_mb:g}", args.size_mb)
    quarter = write_input(work / f"input-{args.size_mb / 4:g}", args.size_mb / 4)
    eighth = write_input(work / f"input-{args.size_mb / 8:g}", args.size_mb / 8)
    mb = {id(p): sum(f.stat().st_size for f in p) / 1e6 for p in (full, quarter, eighth)}
    out = work / "out"
    baseline_cmd = [sys.executable, "-m", "benchmarks.corpus_speed", "baseline"]
    runs = [
        ("baseline", [*baseline_cmd, *map(str, full), str(out / "baseline")], full),
        ("glotta clean w1", _glotta(full, out / "clean-w1", 1, []), full),
        ("glotta clean w2", _glotta(full, out / "clean-w2", 2, []), full),
        ("glotta clean w2 quarter", _glotta(quarter, out / "clean-q", 2, []), quarter),
        ("glotta filters w1", _glotta(eighth, out / "filters-w1", 1, FILTERS), eighth),
        ("glotta filters w2", _glotta(eighth, out / "filters-w2", 2, FILTERS), eighth),
    ]
    rows = [_measure(label, command, work, mb[id(paths)]) for label, command, paths in runs]
    by = {row["label"]: row for row in rows}
    figures = {
        "clean_w2_vs_baseline": ratio(
            by["glotta clean w2"]["mb_per_s"], by["baseline"]["mb_per_s"]
        ),
        "clean_scaling_w2_vs_w1": ratio(
            by["glotta clean w2"]["mb_per_s"], by["glotta clean w1"]["mb_per_s"]
        ),
        "filters_scaling_w2_vs_w1": ratio(
            by["glotta filters w2"]["mb_per_s"], by["glotta filters w1"]["mb_per_s"]
        ),
        "rss_full_vs_quarter": ratio(
            by["glotta clean w2"]["peak_rss_mib"], by["glotta clean w2 quarter"]["peak_rss_mib"]
        ),
    }
    columns = [
        ("label", "run"),
        ("input_mb", "input MB"),
        ("seconds", "seconds"),
        ("mb_per_s", "MB/s"),
        ("peak_rss_mib", "peak RSS MiB"),
    ]
    print(format_table(rows, columns))
    for key, value in figures.items():
        print(f"{key}: {value}")
    for row in rows:
        note = contention_note(row["label"], row["contention"])
        if note:
            print(note)
    hardware = hardware_info()
    record = {
        "bench": "corpus_speed",
        "input": "rl-wsd-labeled Russian contexts, shuffled and repeated (real text repeated)",
        "size_mb": args.size_mb,
        "runs": rows,
        **figures,
        "hardware": hardware,
    }
    path = results_path(
        "corpus-speed", f"{args.size_mb:g}mb", hardware_slug(hardware), args.results_dir
    )
    publish(path, record)


if __name__ == "__main__":
    main()
