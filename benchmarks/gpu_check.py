"""The GPU check: GPT-2 small training and generation on one CUDA GPU.

    bash benchmarks/gpu_check.sh                 # on the GPU machine: installs, then runs this
    python -m benchmarks.gpu_check               # the measurement itself (needs CUDA)
    python -m benchmarks.gpu_check --smoke       # a CPU run of every step with a tiny model

Data: the demo recipe's real text through glotta corpus -> tokenizer (32k BPE) -> pack, then the
same token ids re-written into shards that declare GPT-2's 50,257-token vocabulary (every id
stays valid; the LM head, its FLOPs and its memory are GPT-2 small's). Then, each in a fresh
process (``benchmarks.train_speed`` and ``benchmarks.generate_speed`` with ``--device cuda``):

    glotta-best   glotta's loop: bf16 autocast, torch.compile, SDPA attention, fused LM-head loss
    hf-best       Trainer with its best flags: bf16, torch_compile, SDPA (transformers' default),
                  adamw_torch_fused
    generation    batch-1 sampling, glotta vs model.generate, GPT-2 small random weights
    memory        peak CUDA memory of one training step (``benchmarks.memory_step``, bf16):
                  glotta with the fused loss and without, against Trainer

Budget: well under 8 minutes on an H100/H200 (the step counts below); each part gets what is
left of ``--budget-seconds`` at most, so a slow part leaves a results file that says which part
ran out instead of a run killed by gpu_check.sh's timeout with nothing written. Writes
``benchmarks/results/gpu_check-<gpu>-<date>.json`` and ends with one JSON line: training tokens/s
of both sides and their ratio, MFU of each (against the bf16 matmul peak measured in the same
run, and against the GPU's nominal dense bf16 peak where known), generation tokens/s and ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CACHE_DIR,
    REPO_ROOT,
    SMOKE_DATA_DIR,
    SMOKE_RESULTS_DIR,
    SMOKE_VOCAB,
    hardware_info,
    log,
    parse_with_smoke,
    prepare_packed_data,
    publish,
    results_path,
    slug,
)

# Nominal dense bf16 tensor-core peaks (vendor data sheets, SXM parts), for a second MFU figure.
NOMINAL_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
GOAL_MFU = 0.40
GOAL_VS_TRAINER = 1.3
GOAL_MEMORY_BELOW_TRAINER = 0.40


def retarget_vocab(source: Path, target: Path, vocab_size: int) -> None:
    """Copy ``source``'s shards into ``target`` declaring ``vocab_size`` (ids unchanged)."""
    import numpy as np

    from glotta.rundir import mark_complete
    from glotta.tokenizer.shards import ShardWriter, open_shard

    meta = json.loads((source / "shards" / "meta.json").read_text())
    if vocab_size < meta["vocab_size"]:
        raise SystemExit(f"--vocab-size {vocab_size} is below the data's {meta['vocab_size']}")
    marker = target / "bench-prep.json"
    wanted = {"recipe": "demo", "vocab_size": vocab_size, "from": str(source.resolve())}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return
    shutil.rmtree(target, ignore_errors=True)
    (target / "shards").mkdir(parents=True)
    for info in meta["splits"].values():
        tokens = np.asarray(open_shard(source / "shards" / info["file"]), dtype=np.int64)
        with ShardWriter(target / "shards" / info["file"], vocab_size) as writer:
            writer.write_documents([tokens])  # the eos ids between documents are in the tokens
    meta = {**meta, "vocab_size": vocab_size, "retargeted_from": meta["vocab_size"]}
    (target / "shards" / "meta.json").write_text(json.dumps(meta, indent=2))
    mark_complete(target / "shards", "pack", "retargeted", {"vocab_size": vocab_size})
    marker.write_text(json.dumps(wanted))


def run_json(module: str, args: list[str], timeout: float) -> dict[str, Any] | None:
    """``python -m benchmarks.MODULE ARGS``: its JSON line, or None if it failed."""
    if timeout < 10:
        log(f"{module} skipped: the time budget is spent")
        return None
    command = [sys.executable, "-m", f"benchmarks.{module}", *args]
    log("$ " + " ".join(command[1:]))
    try:
        proc = subprocess.run(
            command, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        log(f"{module} ran past {timeout:.0f}s")
        return None
    lines = proc.stdout.strip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    try:
        record = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        record = None
    if proc.returncode != 0:
        log(f"{module} failed with exit code {proc.returncode}")
        return None
    return record


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check",
        description="GPT-2 small on one CUDA GPU: glotta vs Trainer training tokens/s and MFU, "
        "and generation tokens/s; one JSON line.",
    )
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="(default: cuda)")
    p.add_argument("--n-layer", type=int, default=12, help="Blocks (default: 12).")
    p.add_argument("--n-embd", type=int, default=768, help="Width (default: 768).")
    p.add_argument("--n-head", type=int, default=12, help="Heads (default: 12).")
    p.add_argument(
        "--vocab-size", type=int, default=50257, help="Model vocabulary (default: 50257)."
    )
    p.add_argument("--block-size", type=int, default=1024, help="Context (default: 1024).")
    p.add_argument("--micro-batch", type=int, default=16, help="Sequences per step (default: 16).")
    p.add_argument("--steps", type=int, default=40, help="Steps per training run (default: 40).")
    p.add_argument("--warmup", type=int, default=15, help="Untimed first steps (default: 15).")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="torch.compile on both sides (default: on).",
    )
    p.add_argument(
        "--new-tokens", type=int, default=256, help="Generated tokens per run (default: 256)."
    )
    p.add_argument(
        "--data-vocab",
        type=int,
        default=32000,
        help="BPE vocabulary of the prepared text (default: 32000).",
    )
    p.add_argument(
        "--data-dir",
        default=str(CACHE_DIR / "train-data"),
        help="Prepared demo data (default: runs/bench/train-data).",
    )
    p.add_argument(
        "--budget-seconds",
        type=float,
        default=460.0,
        help="Wall time for all parts together; gpu_check.sh stops the run at 480 s "
        "(default: 460).",
    )
    p.add_argument("--results-dir", default="", help="Default: benchmarks/results.")
    smoke = {
        "device": "cpu",
        "n_layer": 2,
        "n_embd": 64,
        "n_head": 2,
        "vocab_size": 600,
        "block_size": 32,
        "micro_batch": 2,
        "steps": 3,
        "warmup": 1,
        "compile": False,
        "new_tokens": 8,
        "data_vocab": SMOKE_VOCAB,
        "data_dir": str(SMOKE_DATA_DIR),
        "results_dir": str(SMOKE_RESULTS_DIR),
    }
    a = parse_with_smoke(p, argv, smoke)
    started = time.perf_counter()

    def left(most: float) -> float:
        return min(most, a.budget_seconds - (time.perf_counter() - started))

    prepare_packed_data(Path(a.data_dir), a.data_vocab)
    data = Path(a.data_dir).parent / f"{Path(a.data_dir).name}-v{a.vocab_size}"
    retarget_vocab(Path(a.data_dir), data, a.vocab_size)
    results = a.results_dir or str(Path(CACHE_DIR) / "gpu-check-parts")
    train_args = [
        "--device", a.device, "--data-dir", str(data), "--vocab-size", str(a.vocab_size),
        "--n-layer", str(a.n_layer), "--n-embd", str(a.n_embd), "--n-head", str(a.n_head),
        "--block-size", str(a.block_size), "--micro-batch", str(a.micro_batch),
        "--steps", str(a.steps), "--warmup", str(a.warmup), "--runs", "glotta-best,hf-best",
        "--glotta-precision", "bf16", "--compile" if a.compile else "--no-compile",
        "--results-dir", results, "--max-seconds-per-run", "150",
    ]  # fmt: skip
    if a.device == "cuda":
        train_args += ["--peak-sizes", "4096,8192", "--peak-seconds", "1"]
    else:
        train_args += ["--peak-sizes", "64,128", "--peak-seconds", "0.05"]
    train = run_json("train_speed", train_args, timeout=left(340))
    generate_args = [
        "--device", a.device, "--data-dir", a.data_dir, "--vocab-size", str(a.data_vocab),
        "--n-layer", str(a.n_layer), "--n-embd", str(a.n_embd), "--n-head", str(a.n_head),
        "--block-size", str(a.block_size), "--max-new-tokens", str(a.new_tokens),
        "--repeats", "3", "--batch-prompts", "0", "--results-dir", results,
    ]  # fmt: skip
    generate = run_json("generate_speed", generate_args, timeout=left(80))
    memory_args = [
        "--device", a.device, "--precision", "bf16", "--n-layer", str(a.n_layer),
        "--n-embd", str(a.n_embd), "--n-head", str(a.n_head), "--vocab-size", str(a.vocab_size),
        "--block-size", str(a.block_size), "--micro-batch", str(a.micro_batch),
        "--results-dir", results,
    ]  # fmt: skip
    memory = run_json("memory_step", memory_args, timeout=left(90))

    hardware = hardware_info()
    gpu = hardware.get("gpu") or "cpu"
    nominal = next((v for k, v in NOMINAL_BF16_TFLOPS.items() if k in str(gpu)), None)
    summary: dict[str, Any] = {"bench": "gpu_check", "device": a.device, "gpu": gpu}
    if train:
        runs = train["runs"]
        glotta, hf = runs.get("glotta-best", {}), runs.get("hf-best", {})

        def nominal_mfu(run: dict) -> float | None:
            if not nominal or not run.get("achieved_gflops"):
                return None
            return round(run["achieved_gflops"] / (nominal * 1000), 4)

        summary["train"] = {
            "model": f"GPT-2 {a.n_layer}x{a.n_embd}, vocab {a.vocab_size}, block {a.block_size}",
            "glotta_tokens_per_second": glotta.get("tokens_per_second"),
            "hf_best_tokens_per_second": hf.get("tokens_per_second"),
            "ratio": train["ratios"]["glotta_best_vs_hf_best"],
            "glotta_mfu_vs_measured_bf16_peak": glotta.get("mfu_vs_bf16_peak"),
            "hf_mfu_vs_measured_bf16_peak": hf.get("mfu_vs_bf16_peak"),
            "glotta_mfu_vs_nominal_bf16_peak": nominal_mfu(glotta),
            "measured_bf16_peak_gflops": train["peaks_gflops"]["bf16"],
            "nominal_bf16_peak_tflops": nominal,
            "glotta_compile_warmup_seconds": glotta.get("warmup_seconds"),
            "failed_runs": train["failed_runs"],
        }
        mfu = glotta.get("mfu_vs_bf16_peak")
        ratio = train["ratios"]["glotta_best_vs_hf_best"]
        summary["goals"] = {
            "mfu": {
                "value": mfu,
                "target": GOAL_MFU,
                "met": None if mfu is None else mfu >= GOAL_MFU,
            },
            "vs_trainer_best": {
                "value": ratio,
                "target": GOAL_VS_TRAINER,
                "met": None if ratio is None else ratio >= GOAL_VS_TRAINER,
            },
        }
    else:
        summary["train"] = None
    summary["generate"] = (
        {
            "glotta_tokens_per_second": generate["glotta"]["tokens_per_second"],
            "hf_tokens_per_second": generate["hf"]["tokens_per_second"],
            "ratio": generate["ratio"],
            "new_tokens": generate["glotta"]["new_tokens"],
        }
        if generate
        else None
    )
    summary["memory"] = None
    if memory:
        versus = memory["versus"]
        summary["memory"] = {
            "measure": memory["goals"]["peak_below_trainer"]["measure"],
            "peak_mib": {side: r.get("peak_step_rss_mib") for side, r in memory["sides"].items()},
            **versus,
        }
        below = versus["fused_peak_below_trainer"]
        summary.setdefault("goals", {})["memory_below_trainer"] = {
            "value": below,
            "target": GOAL_MEMORY_BELOW_TRAINER,
            "met": None if below is None else below >= GOAL_MEMORY_BELOW_TRAINER,
        }
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["hardware"] = hardware
    path = results_path(
        "gpu_check",
        f"gpt2-{a.n_layer}l{a.n_embd}-v{a.vocab_size}-b{a.block_size}",
        slug(str(gpu)),
        Path(a.results_dir) if a.results_dir else None,
    )
    records = {"train_record": train, "generate_record": generate, "memory_record": memory}
    publish(path, summary, records)
    if not train or not generate or not memory or train["failed_runs"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
