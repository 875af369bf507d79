"""All three benchmarks in one command, flags passed through, one combined JSON line at the end.

    python -m benchmarks.run_all                                   # full settings of each script
    python -m benchmarks.run_all --quick                           # each script's --smoke (about a minute)
    python -m benchmarks.run_all --pack "--size-mb 1024" --train "--steps 60 --warmup 10"

Each benchmark runs as ``python -m benchmarks.NAME ARGS`` in its own process; its table is shown
as it comes, and its last stdout line (its JSON line) is collected. The exit status is non-zero
when any benchmark failed or reported a failed measurement: a null ratio is never a result.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CACHE_DIR,
    REPO_ROOT,
    hardware_info,
    hardware_slug,
    log,
    publish,
    results_path,
    today,
)

BENCHES = ("train", "pack", "generate")
MODULES = {"train": "train_speed", "pack": "pack_speed", "generate": "generate_speed"}


def run_bench(name: str, args: list[str]) -> dict[str, Any] | None:
    """The benchmark's JSON line, or None when it failed (non-zero exit or no JSON line)."""
    command = [sys.executable, "-m", f"benchmarks.{MODULES[name]}", *args]
    log("$ " + " ".join(shlex.quote(c) for c in command[1:]))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    last = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        if last:
            print(last, end="", flush=True)  # everything but the JSON line, as it comes
        last = line
    if proc.wait() != 0:
        print(last, end="", flush=True)
        log(f"{name} failed with exit code {proc.returncode}")
        return None
    try:
        return json.loads(last)
    except json.JSONDecodeError:
        print(last, end="", flush=True)
        log(f"{name} ended without its JSON line")
        return None


def headline(name: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The headline figures (those with goals), from one benchmark's JSON line."""
    if record is None:
        return None
    if name == "train":
        runs = record["runs"]
        return {
            "tokens_per_second": {k: v.get("tokens_per_second") for k, v in runs.items()},
            "ratios": record["ratios"],
            "glotta_mfu": record["glotta_mfu"],
            "glotta_mfu_vs_fp32_peak": record["glotta_mfu_vs_fp32_peak"],
            "peaks_gflops": record["peaks_gflops"],
            "glotta_compile_warmup_seconds": record["glotta_compile_warmup_seconds"],
            "glotta_stall_seconds": record["glotta_stall_seconds"],
            "goals": record["goals"],
        }
    if name == "pack":
        return {
            "corpus_mb": round(record["corpus"]["jsonl_bytes"] / 2**20),
            "tokens_per_second": {
                "glotta": record["glotta"]["tokens_per_second"],
                "hf": record["hf"]["tokens_per_second"],
            },
            "peak_rss_mib": {
                "glotta": record["glotta"]["peak_rss_mib"],
                "hf": record["hf"]["peak_rss_mib"],
                "hf_tree": record["hf"]["tree_peak_rss_mib"],
            },
            "ratio": record["ratio_tokens_per_second"],
            "goals": record["goals"],
        }
    return {
        "tokens_per_second": {
            "glotta": record["glotta"]["tokens_per_second"],
            "hf": record["hf"]["tokens_per_second"],
        },
        "ratio": record["ratio"],
        "goals": record["goals"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all",
        description="Run train_speed, pack_speed and generate_speed; end with one JSON line.",
    )
    p.add_argument(
        "--only",
        default=",".join(BENCHES),
        help=f"Comma-separated subset of {', '.join(BENCHES)} (default: all).",
    )
    p.add_argument(
        "--quick",
        "--smoke",
        dest="quick",
        action="store_true",
        help="Each benchmark's --smoke settings (tiny model and data, seconds each; results go "
        "to runs/bench/smoke-results unless --results-dir is given); flags below are appended "
        "and win.",
    )
    for name in BENCHES:
        p.add_argument(
            f"--{name}",
            default="",
            metavar="ARGS",
            help=f"Extra arguments for benchmarks.{MODULES[name]}, one quoted string "
            f"(see python -m benchmarks.{MODULES[name]} --help).",
        )
    p.add_argument(
        "--results-dir",
        default="",
        help="Results folder for every benchmark (default: benchmarks/results).",
    )
    a = p.parse_args(argv)
    selected = [b.strip() for b in a.only.split(",") if b.strip()]
    unknown = set(selected) - set(BENCHES)
    if unknown:
        p.error(f"unknown --only {sorted(unknown)}")
    results_dir = a.results_dir or (str(CACHE_DIR / "smoke-results") if a.quick else "")

    records: dict[str, Any] = {}
    for name in selected:
        args = (["--smoke"] if a.quick else []) + shlex.split(getattr(a, name))
        if results_dir:
            args += ["--results-dir", results_dir]
        records[name] = run_bench(name, args)

    hardware = hardware_info()
    combined = {
        "bench": "all",
        "date": today(),
        "quick": a.quick,
        "hardware": hardware,
        **{name: headline(name, records[name]) for name in selected},
    }
    path = results_path(
        "all",
        "gpt2-6l384-v32000",
        hardware_slug(hardware),
        Path(results_dir) if results_dir else None,
    )
    publish(path, combined, {"records": records})
    failed = [name for name, r in records.items() if r is None or r.get("failed_runs")]
    if failed:
        log(f"failed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
