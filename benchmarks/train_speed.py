"""Training speed: glotta's loop against Hugging Face ``Trainer`` on the same GPT-2 and data.

    python -m benchmarks.train_speed                      # full measurement (see README.md)
    python -m benchmarks.train_speed --steps 4 --warmup 1 --no-compile   # smoke run

Prepares the data once (the demo recipe's real Russian text through glotta corpus -> tokenizer
-> pack with a 32k BPE, cached in runs/bench/train-data), measures the machine's matmul peak
(bf16 and fp32), then trains the same GPT-2 (6 layers, 384 wide, 6 heads, block 256) in a fresh
subprocess per run:

    glotta-best   glotta, train.precision = --glotta-precision (default 'auto'), compiled
    glotta-fp32   glotta, fp32, eager
    hf-default    transformers Trainer, TrainingArguments defaults (fp32, eager)
    hf-best       transformers Trainer with the best flags that work on this machine:
                  torch_compile=True, adamw_torch_fused, and bf16=True where the hardware has
                  native bf16 (the rule glotta's precision 'auto' follows), else fp32
    (optional)    glotta-bf16, hf-fp32-compile, glotta-fp32-compile (both fp32 + compile: the best
                  flags of a CPU without native bf16), glotta-fp32-unfused, glotta-best-unfused

Each run reports steady-state tokens/s (after --warmup steps), warm-up time (the first steps'
time beyond steady-state pace: compilation, allocator warm-up) and data-loader stall time (time
the training loop waited for a batch). Prints a table and ratios, ends with one JSON line and
writes the full record to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CACHE_DIR,
    REPO_ROOT,
    SMOKE_DATA_DIR,
    SMOKE_RESULTS_DIR,
    SMOKE_VOCAB,
    CpuWatch,
    contention_note,
    format_table,
    hardware_info,
    hardware_slug,
    log,
    matmul_peak,
    parse_with_smoke,
    prepare_packed_data,
    publish,
    ratio,
    results_path,
    slug,
    today,
)

DEFAULT_RUNS = ["glotta-best", "glotta-fp32", "hf-default", "hf-best"]
ALL_RUNS = [
    *DEFAULT_RUNS,
    "glotta-bf16",
    "hf-fp32-compile",
    "glotta-fp32-compile",
    "glotta-fp32-unfused",
    "glotta-best-unfused",
]
# What makes glotta's own loop worth keeping over Trainer, on the 2-core CPU: glotta-best against Trainer's defaults and against
# Trainer's best flags, and glotta-best's model FLOP/s utilisation against the matmul peak of
# the precision it trains in (measured in the same run).
GOAL_VS_HF_DEFAULT = 1.3
GOAL_VS_HF_BEST = 1.15
GOAL_MFU = 0.75
# --smoke: both engines, a 2-layer GPT-2 on the smoke data, three steps, no compile; seconds.
SMOKE = {
    "steps": 3,
    "warmup": 1,
    "micro_batch": 2,
    "block_size": 32,
    "n_layer": 2,
    "n_embd": 64,
    "n_head": 2,
    "vocab_size": SMOKE_VOCAB,
    "runs": "glotta-best,glotta-fp32-unfused,hf-default",
    "compile": False,
    "data_dir": str(SMOKE_DATA_DIR),
    "results_dir": str(SMOKE_RESULTS_DIR),
    "peak_sizes": "64,128",
    "peak_seconds": 0.05,
}


@dataclass
class Settings:
    """Everything a run depends on; the parent hands it to each worker as JSON."""

    steps: int = 30
    warmup: int = 5
    micro_batch: int = 8
    block_size: int = 256
    n_layer: int = 6
    n_embd: int = 384
    n_head: int = 6
    vocab_size: int = 32000
    runs: list[str] = field(default_factory=lambda: list(DEFAULT_RUNS))
    compile: bool = True
    glotta_precision: str = "auto"
    seed: int = 1337
    data_dir: str = str(CACHE_DIR / "train-data")
    results_dir: str = ""
    peak_sizes: list[int] = field(default_factory=lambda: [512, 1024, 2048])
    peak_seconds: float = 1.0
    max_seconds_per_run: float = 900.0
    device: str = "cpu"
    rounds: int = 1  # every run this many times, in alternating order; medians reported


@dataclass(frozen=True)
class Variant:
    engine: str  # 'glotta' or 'hf'
    precision: str  # 'fp32', 'bf16', or glotta's 'auto'
    compile: bool
    fused_loss: bool = True  # glotta's train.fused_loss (its default)


def variants(s: Settings) -> dict[str, Variant]:
    return {
        "glotta-best": Variant("glotta", s.glotta_precision, s.compile),
        "glotta-fp32": Variant("glotta", "fp32", False),
        "glotta-bf16": Variant("glotta", "bf16", s.compile),
        "hf-default": Variant("hf", "fp32", False),
        "hf-best": Variant("hf", "auto", s.compile),
        "hf-fp32-compile": Variant("hf", "fp32", s.compile),
        "glotta-fp32-compile": Variant("glotta", "fp32", s.compile),
        "glotta-fp32-unfused": Variant("glotta", "fp32", False, fused_loss=False),
        "glotta-best-unfused": Variant("glotta", s.glotta_precision, s.compile, fused_loss=False),
    }


# ---------------------------------------------------------------------------------------------
# Model size and FLOPs


def model_facts(s: Settings, vocab_size: int, eos_id: int) -> dict[str, Any]:
    """Parameter counts of the benchmark GPT-2 (built on the meta device: no memory, no time)."""
    import torch
    from transformers import GPT2LMHeadModel

    from glotta.models import gpt2_config

    with torch.device("meta"):
        model = GPT2LMHeadModel(
            gpt2_config(glotta_model_config(s), vocab_size, s.block_size, eos_id)
        )
    unique = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in unique)
    embedding = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    non_embedding = total - embedding
    # Training FLOPs per token (forward + backward = 3 x forward, 2 FLOPs per multiply-add):
    # 6 x non-embedding parameters, 6 x vocab x width for the (tied) LM head, and
    # 12 x layers x context x width for the attention scores and weighted sum (PaLM, app. B).
    flops_per_token = (
        6 * non_embedding + 6 * vocab_size * s.n_embd + 12 * s.n_layer * s.block_size * s.n_embd
    )
    return {
        "arch": "gpt2",
        "n_layer": s.n_layer,
        "n_embd": s.n_embd,
        "n_head": s.n_head,
        "n_positions": s.block_size,
        "vocab_size": vocab_size,
        "parameters": total,
        "non_embedding_parameters": non_embedding,
        "flops_per_token": flops_per_token,
        "flops_formula": "6*N_non_embedding + 6*vocab*width + 12*n_layer*block*width",
    }


def glotta_model_config(s: Settings):
    from glotta.config import ModelConfig

    return ModelConfig(
        preset="custom",
        n_layer=s.n_layer,
        n_embd=s.n_embd,
        n_head=s.n_head,
        n_positions=s.block_size,
        dropout=0.0,
    )


# ---------------------------------------------------------------------------------------------
# Workers (one fresh process per run)


def min_steps(s: Settings) -> int:
    """Steps a run needs before a time budget may end it: the warm-up plus two measured."""
    return s.warmup + 2


def logged_steps(metrics: Path) -> int:
    """Training steps glotta has logged so far (log_interval = 1: one line per step)."""
    try:
        text = metrics.read_text()
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if '"tokens_per_second"' in line)


class Budget:
    """Ends a glotta run early once --max-seconds-per-run has passed (and enough steps ran).

    Uses glotta's own preemption path: SIGTERM asks the loop to finish the current step, save a
    checkpoint and stop; the metrics of every finished step are kept. Steps are counted from
    the loop's metrics log, so nothing inside glotta is replaced.
    """

    def __init__(self, s: Settings, metrics: Path) -> None:
        self.seconds = s.max_seconds_per_run
        self.needed = min_steps(s)
        self.metrics = metrics
        self.fired = False
        self._done = threading.Event()

    def __enter__(self) -> Budget:
        if self.seconds > 0:
            threading.Thread(target=self._watch, daemon=True).start()
        return self

    def _watch(self) -> None:
        start = time.perf_counter()
        while not self._done.wait(1.0):
            if time.perf_counter() - start > self.seconds:
                if logged_steps(self.metrics) >= self.needed:
                    self.fired = True
                    os.kill(os.getpid(), signal.SIGTERM)
                    return

    def __exit__(self, *exc) -> None:
        self._done.set()


def glotta_worker(s: Settings, variant: Variant) -> dict[str, Any]:
    """One run of glotta's real loop (``run_train``); every figure comes from its metrics log."""
    import torch

    from glotta.config import TrainConfig
    from glotta.errors import GlottaError
    from glotta.rundir import RunDir
    from glotta.train.loop import run_train
    from glotta.train.plan import autocast_dtype

    cfg = TrainConfig(
        block_size=s.block_size,
        micro_batch_size=s.micro_batch,
        gradient_accumulation_steps=1,
        global_batch_size=0,
        max_steps=s.steps,
        warmup_steps=0,
        precision=variant.precision,
        compile=variant.compile,
        fused_loss=variant.fused_loss,
        eval_interval=0,  # one validation after the last step, outside the timed steps
        eval_batches=1,
        checkpoint_interval=10**9,  # only the final checkpoint, after the last step
        keep_checkpoints=1,
        log_interval=1,  # one metrics line per step: per-step times
        device=s.device,
        seed=s.seed,
    )
    root = Path(tempfile.mkdtemp(prefix="glotta-train-bench-"))
    metrics_file = root / "train" / "metrics.jsonl"
    try:
        (root / "shards").symlink_to(Path(s.data_dir).resolve() / "shards")
        start = time.perf_counter()
        with Budget(s, metrics_file) as budget:
            try:
                run_train(cfg, glotta_model_config(s), RunDir(root), resume="never")
            except GlottaError:
                if not budget.fired:
                    raise
        total = time.perf_counter() - start
        tokens_per_step = s.micro_batch * s.block_size
        step_seconds, stall = step_times_from_metrics(metrics_file, tokens_per_step)
        config_file = root / "train" / "train_config.json"
        train_config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    amp = autocast_dtype(cfg, torch.device(s.device))
    notes = []
    if budget.fired:
        notes.append(
            f"stopped by --max-seconds-per-run {s.max_seconds_per_run:g} after "
            f"{len(step_seconds)} of {s.steps} steps"
        )
    return {
        "step_seconds": step_seconds,
        "stall_seconds": stall,
        "stall_method": "data_seconds of glotta's metrics log: time the loop spent building the "
        "step's batches (it fetches synchronously), per step",
        "total_seconds": total,
        "resolved_precision": "bf16" if amp == torch.bfloat16 else "fp32",
        "fused_loss": (train_config.get("train") or {}).get("fused_loss"),
        "plan": train_config.get("plan"),
        "notes": notes,
    }


def step_times_from_metrics(path: Path, tokens_per_step: int) -> tuple[list[float], list | None]:
    """Per-step seconds and data-wait seconds from glotta's metrics.jsonl.

    Each training line holds ``tokens_per_second`` of the window since the previous line and
    ``data_seconds``, the time of that window spent building batches.
    """
    times: list[float] = []
    stall: list[float] | None = []
    last_step = 0
    for line in path.read_text().splitlines():
        record = json.loads(line)
        rate = record.get("tokens_per_second")
        if rate is None:
            continue  # validation lines
        steps = record["step"] - last_step
        last_step = record["step"]
        window = steps * tokens_per_step / rate
        times.extend([window / steps] * steps)
        if stall is not None and "data_seconds" in record:
            stall.extend([record["data_seconds"] / steps] * steps)
        else:
            stall = None
    return times, stall


def hf_worker(s: Settings, variant: Variant) -> dict[str, Any]:
    import numpy as np
    import torch
    from transformers import GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from glotta.models import gpt2_config
    from glotta.tokenizer.shards import open_shard

    meta = json.loads((Path(s.data_dir) / "shards" / "meta.json").read_text())

    class PackedBlocks(torch.utils.data.Dataset):
        """glotta's packed train shard as HF-style examples (labels = inputs; the model shifts)."""

        def __init__(self, shard: Path, block_size: int):
            self.tokens = open_shard(shard)
            self.block_size = block_size

        def __len__(self) -> int:
            return len(self.tokens) // self.block_size

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            size = self.block_size
            ids = torch.from_numpy(np.asarray(self.tokens[i * size : (i + 1) * size], np.int64))
            return {"input_ids": ids, "labels": ids}

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.start = 0.0
            self.ends: list[float] = []
            self.stopped_early = False

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            over = s.max_seconds_per_run > 0 and self.ends[-1] - self.start > s.max_seconds_per_run
            if over and len(self.ends) >= min_steps(s) and len(self.ends) < s.steps:
                self.stopped_early = True
                control.should_training_stop = True  # the time budget: end after this step
            return control

    class TimedTrainer(Trainer):
        """Times the fetch of each optimizer step's batches from the DataLoader iterator."""

        batch_seconds: list[float] = []

        def get_batch_samples(self, *args, **kwargs):
            start = time.perf_counter()
            result = super().get_batch_samples(*args, **kwargs)
            self.batch_seconds.append(time.perf_counter() - start)
            return result

    torch.manual_seed(s.seed)
    model = GPT2LMHeadModel(
        gpt2_config(glotta_model_config(s), meta["vocab_size"], s.block_size, meta["eos_id"])
    )
    out_dir = Path(tempfile.mkdtemp(prefix="hf-train-bench-"))
    # Defaults except: the batch size (glotta's micro batch), the step count, CPU, and no
    # reporting integrations or checkpoint saving (glotta's final checkpoint is not timed either).
    kwargs: dict[str, Any] = {
        "output_dir": str(out_dir),
        "per_device_train_batch_size": s.micro_batch,
        "max_steps": s.steps,
        "use_cpu": s.device == "cpu",
        "report_to": "none",
        "save_strategy": "no",
    }
    precision = variant.precision
    if precision == "auto":  # bf16 where the hardware has it natively, as glotta decides
        from glotta.config import TrainConfig
        from glotta.train.plan import autocast_dtype

        device = torch.device("cuda" if s.device == "cuda" else "cpu")
        amp = autocast_dtype(TrainConfig(precision="auto"), device)
        precision = "bf16" if amp == torch.bfloat16 else "fp32"
    if precision == "bf16":
        kwargs["bf16"] = True
    if variant.compile:
        kwargs["torch_compile"] = True
        kwargs["optim"] = "adamw_torch_fused"  # the best flags (already the default in 5.x)
    clock = StepClock()
    trainer = TimedTrainer(
        model=model,
        args=TrainingArguments(**kwargs),
        train_dataset=PackedBlocks(Path(s.data_dir) / "shards" / "train.bin", s.block_size),
        callbacks=[clock],
    )
    TimedTrainer.batch_seconds = []
    try:
        start = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - start
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    marks = [clock.start, *clock.ends]
    step_seconds = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {
        "step_seconds": step_seconds,
        "stall_seconds": TimedTrainer.batch_seconds[: len(step_seconds)],
        "stall_method": "time inside Trainer.get_batch_samples (next() on the DataLoader "
        "iterator: sampling, __getitem__, collate), per optimizer step",
        "total_seconds": total,
        "resolved_precision": precision,
        "notes": [
            f"stopped by --max-seconds-per-run {s.max_seconds_per_run:g} after "
            f"{len(step_seconds)} of {s.steps} steps"
        ]
        if clock.stopped_early
        else [],
    }


def worker_main(name: str, settings_file: Path, out_file: Path) -> None:
    s = Settings(**json.loads(settings_file.read_text()))
    variant = variants(s)[name]
    work = glotta_worker if variant.engine == "glotta" else hf_worker
    result = work(s, variant)
    result.update(name=name, **dataclasses.asdict(variant))
    out_file.write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# Parent: run the workers, summarize


def summarize(raw: dict[str, Any], s: Settings, tokens_per_step: int, flops: int, peaks) -> dict:
    """Steady-state figures of one run from its per-step times."""
    steps = raw["step_seconds"]
    if len(steps) <= s.warmup:
        raise RuntimeError(f"{raw['name']}: {len(steps)} step times for --warmup {s.warmup}")
    measured = steps[s.warmup :]
    step_mean = sum(measured) / len(measured)
    rate = tokens_per_step / step_mean
    stall = raw.get("stall_seconds")
    stall_measured = sum(stall[s.warmup :]) if stall else None
    achieved = rate * flops
    own_peak = peaks["bfloat16" if raw["resolved_precision"] == "bf16" else "float32"]["gflops"]
    out = {
        "engine": raw["engine"],
        "precision": raw["resolved_precision"],
        "compile": raw["compile"],
        "fused_loss": raw.get("fused_loss"),
        "tokens_per_second": round(rate, 1),
        "tokens_per_second_median_step": round(tokens_per_step / statistics.median(measured), 1),
        "step_seconds_mean": round(step_mean, 4),
        "step_seconds_min": round(min(measured), 4),
        "step_seconds_max": round(max(measured), 4),
        "measured_steps": len(measured),
        # The first steps' time beyond what the same number of steady steps takes: torch.compile
        # tracing and code generation, first-touch allocation, oneDNN kernel selection.
        "warmup_seconds": round(sum(steps[: s.warmup]) - s.warmup * step_mean, 3),
        "first_step_seconds": round(steps[0], 3),
        "stall_seconds": None if stall_measured is None else round(stall_measured, 4),
        "stall_share": None if stall_measured is None else round(stall_measured / sum(measured), 5),
        "stall_method": raw.get("stall_method"),
        "achieved_gflops": round(achieved / 1e9, 2),
        "mfu_vs_bf16_peak": round(achieved / (peaks["bfloat16"]["gflops"] * 1e9), 4),
        "mfu_vs_fp32_peak": round(achieved / (peaks["float32"]["gflops"] * 1e9), 4),
        # Against the peak of the precision the run computes in (bf16 autocast: bf16 matmuls).
        "mfu_vs_own_peak": round(achieved / (own_peak * 1e9), 4),
        "total_seconds": round(raw["total_seconds"], 2),
        "other_cpu_share": raw.get("contention", {}).get("other_cpu_share"),
        "notes": raw.get("notes", []),
    }
    return out


def median_of_rounds(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's figures over its rounds: the median tokens/s (and the MFU it gives); the other
    figures are those of the round nearest the median. Every round's tokens/s is kept."""
    rates = [r["tokens_per_second"] for r in summaries]
    median = statistics.median(rates)
    out = dict(min(summaries, key=lambda r: abs(r["tokens_per_second"] - median)))
    scale = median / out["tokens_per_second"]
    out["achieved_gflops"] = round(out["achieved_gflops"] * scale, 2)
    for key in ("mfu_vs_bf16_peak", "mfu_vs_fp32_peak", "mfu_vs_own_peak"):
        out[key] = round(out[key] * scale, 4)
    out["tokens_per_second"] = round(median, 1)
    out["tokens_per_second_rounds"] = rates
    return out


def run_worker(name: str, settings_file: Path, work: Path, tag: str = "") -> dict[str, Any]:
    """One run in a fresh process (``tag`` names its files: the run and its round)."""
    tag = tag or name
    out_file = work / f"{tag}.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.train_speed",
        "--worker",
        name,
        "--worker-settings",
        str(settings_file),
        "--worker-out",
        str(out_file),
    ]
    # A fresh Inductor cache per run: otherwise a later run reuses the kernels an earlier one
    # compiled (both compile the same transformers GPT-2) and its warm-up looks shorter.
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor-{tag}")}
    log(f"run {tag}")
    with CpuWatch() as watch:
        proc = subprocess.run(command, stdout=sys.stderr, cwd=REPO_ROOT, env=env, check=False)
    log(f"run {tag} finished in {watch.wall:.0f}s (exit {proc.returncode})")
    if proc.returncode != 0:
        return {"name": name, "error": f"worker exited with {proc.returncode}"}
    result = json.loads(out_file.read_text())
    result["contention"] = watch.result()
    note = contention_note("", result["contention"])
    if note:
        result.setdefault("notes", []).append(note)
    return result


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run_train_speed(s: Settings) -> dict[str, Any]:
    """Entry point: prepare data, measure peaks, run every variant, print table + JSON line."""
    unknown = [r for r in s.runs if r not in ALL_RUNS]
    if unknown:
        raise SystemExit(f"unknown --runs {unknown}; choose from {ALL_RUNS}")
    if not 0 <= s.warmup < s.steps:
        raise SystemExit("--warmup must be smaller than --steps")
    if s.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    meta = prepare_packed_data(Path(s.data_dir), s.vocab_size)
    facts = model_facts(s, meta["vocab_size"], meta["eos_id"])
    tokens_per_step = s.micro_batch * s.block_size
    hardware = hardware_info()
    log("measuring matmul peaks (bf16, fp32)")
    with CpuWatch() as peak_watch:
        peaks = {
            dtype: matmul_peak(dtype, tuple(s.peak_sizes), s.peak_seconds, device=s.device)
            for dtype in ("bfloat16", "float32")
        }
    peaks["contention"] = peak_watch.result()

    raw_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in s.runs}
    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        work = Path(tmp)
        settings_file = work / "settings.json"
        settings_file.write_text(json.dumps(dataclasses.asdict(s)))
        # Alternate the order (a, b, c, then c, b, a ...) so that a slow spell of a shared
        # machine, or anything an earlier run leaves behind, does not always favour one side.
        for round_index in range(s.rounds):
            order = s.runs if round_index % 2 == 0 else s.runs[::-1]
            for name in order:
                tag = name if s.rounds == 1 else f"{name}-round{round_index + 1}"
                raw_runs[name].append(run_worker(name, settings_file, work, tag))

    runs = {}
    for name, rounds in raw_runs.items():
        try:
            summaries = []
            for raw in rounds:
                if "error" in raw:
                    raise RuntimeError(raw["error"])
                summaries.append(
                    summarize(raw, s, tokens_per_step, facts["flops_per_token"], peaks)
                )
            runs[name] = median_of_rounds(summaries)
        except RuntimeError as error:
            runs[name] = {"error": str(error)}
    failed = [name for name, r in runs.items() if "error" in r]

    def rate(name: str) -> float | None:
        return runs.get(name, {}).get("tokens_per_second")

    ratios = {
        "glotta_best_vs_hf_default": ratio(rate("glotta-best"), rate("hf-default")),
        "glotta_best_vs_hf_best": ratio(rate("glotta-best"), rate("hf-best")),
        "glotta_fp32_vs_hf_default": ratio(rate("glotta-fp32"), rate("hf-default")),
        # fp32 + compile on both sides: Trainer's best flags on a CPU without native bf16.
        "glotta_fp32_compile_vs_hf_fp32_compile": ratio(
            rate("glotta-fp32-compile"), rate("hf-fp32-compile")
        ),
    }
    best = runs.get("glotta-best", {})
    notes = []
    peak_note = contention_note("matmul peak", peaks["contention"])
    if peak_note:
        notes.append(peak_note)
    if s.device == "cpu" and peaks["bfloat16"]["gflops"] < peaks["float32"]["gflops"]:
        notes.append(
            f"this CPU's bf16 matmul ({peaks['bfloat16']['gflops']} GFLOP/s) is slower than fp32 "
            f"({peaks['float32']['gflops']} GFLOP/s): no native bf16 kernels (ISA "
            f"{hardware['cpu_isa']}, mkldnn bf16 {hardware['mkldnn_bf16']}), so bf16 runs are slow "
            "and MFU against the bf16 peak is not meaningful; see mfu_vs_fp32_peak"
        )
    record = {
        "bench": "train_speed",
        "date": today(),
        "hardware": hardware,
        "model": facts,
        "data": {
            "source": "rl-wsd-labeled (Russian) via the demo recipe's corpus stage",
            "train_tokens": meta["splits"]["train"]["tokens"],
            "vocab_size": meta["vocab_size"],
            "vocab_size_requested": s.vocab_size,
        },
        "settings": {
            **dataclasses.asdict(s),
            "tokens_per_step": tokens_per_step,
        },
        "peaks_gflops": {"bf16": peaks["bfloat16"]["gflops"], "fp32": peaks["float32"]["gflops"]},
        "peaks": peaks,
        "runs": runs,
        "ratios": ratios,
        "glotta_mfu": best.get("mfu_vs_own_peak"),
        "glotta_mfu_vs_fp32_peak": best.get("mfu_vs_fp32_peak"),
        "glotta_compile_warmup_seconds": best.get("warmup_seconds"),
        "glotta_stall_seconds": best.get("stall_seconds"),
        "goals": {
            "vs_hf_default": _goal(ratios["glotta_best_vs_hf_default"], GOAL_VS_HF_DEFAULT),
            "vs_hf_best": _goal(ratios["glotta_best_vs_hf_best"], GOAL_VS_HF_BEST),
            "mfu": _goal(best.get("mfu_vs_own_peak"), GOAL_MFU),
        },
        "failed_runs": failed,
        "notes": notes,
    }

    rows = []
    for name, r in runs.items():
        if "error" in r:
            rows.append({"run": name, "tok_s": r["error"]})
            continue
        stall = (
            f"{r['stall_seconds']:.3f} ({100 * r['stall_share']:.2f}%)"
            if r["stall_seconds"] is not None
            else "-"
        )
        rows.append(
            {
                "run": name,
                "prec": r["precision"],
                "compile": "yes" if r["compile"] else "no",
                "tok_s": fmt(r["tokens_per_second"], ",.0f"),
                "step": fmt(r["step_seconds_mean"], ".3f"),
                "warmup": fmt(r["warmup_seconds"], ".1f"),
                "stall": stall,
                "mfu_bf16": fmt(100 * r["mfu_vs_bf16_peak"], ".1f") + "%",
                "mfu_fp32": fmt(100 * r["mfu_vs_fp32_peak"], ".1f") + "%",
                "others": "-"
                if r["other_cpu_share"] is None
                else f"{100 * r['other_cpu_share']:.0f}%",
            }
        )
    columns = [
        ("run", "run"),
        ("prec", "precision"),
        ("compile", "compile"),
        ("tok_s", "tokens/s"),
        ("step", "s/step"),
        ("warmup", "warm-up s"),
        ("stall", "stall s (share)"),
        ("mfu_bf16", "MFU bf16 peak"),
        ("mfu_fp32", "MFU fp32 peak"),
        ("others", "other CPU use"),
    ]
    print(
        f"GPT-2 {s.n_layer}x{s.n_embd}, vocab {meta['vocab_size']:,}, block {s.block_size}, "
        f"micro batch {s.micro_batch} ({tokens_per_step:,} tokens/step); {s.steps} steps, first "
        f"{s.warmup} excluded; {hardware['cpu']} x {hardware['cpus']}"
    )
    print(
        f"matmul peak: bf16 {peaks['bfloat16']['gflops']} GFLOP/s, fp32 "
        f"{peaks['float32']['gflops']} GFLOP/s; {facts['flops_per_token'] / 1e6:.1f} MFLOP/token"
    )
    print(format_table(rows, columns))
    for key, value in ratios.items():
        print(f"{key}: {'n/a (run missing)' if value is None else f'{value:.2f}x'}")
    for note in notes:
        print(f"note: {note}")
    for name, r in runs.items():
        for note in r.get("notes", []):
            print(f"note: {name}: {note}")
    model_slug = f"gpt2-{s.n_layer}l{s.n_embd}-v{meta['vocab_size']}-b{s.block_size}"
    path = results_path(
        "train_speed",
        model_slug,
        slug(hardware["gpu"]) if s.device == "cuda" else hardware_slug(hardware),
        Path(s.results_dir) if s.results_dir else None,
    )
    publish(path, record, {"raw_runs": raw_runs})
    if failed:  # a measurement that failed must not look like a result
        log(f"failed runs: {', '.join(failed)}")
        sys.exit(1)
    return record


def _goal(value: float | None, target: float) -> dict[str, Any]:
    return {"value": value, "target": target, "met": None if value is None else value >= target}


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.train_speed",
        description="Training tokens/s of glotta vs transformers Trainer on the same GPT-2 and "
        "packed data; table, ratios, MFU, then one JSON line.",
    )
    p.add_argument(
        "--steps", type=int, default=d.steps, help=f"Optimizer steps per run (default: {d.steps})."
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=d.warmup,
        help=f"First steps excluded from the steady state; their extra time is the warm-up (default: {d.warmup}).",
    )
    p.add_argument(
        "--micro-batch",
        type=int,
        default=d.micro_batch,
        help=f"Sequences per step for both (default: {d.micro_batch}).",
    )
    p.add_argument(
        "--block-size",
        type=int,
        default=d.block_size,
        help=f"Tokens per sequence (default: {d.block_size}).",
    )
    p.add_argument(
        "--n-layer", type=int, default=d.n_layer, help=f"Transformer blocks (default: {d.n_layer})."
    )
    p.add_argument(
        "--n-embd", type=int, default=d.n_embd, help=f"Hidden width (default: {d.n_embd})."
    )
    p.add_argument(
        "--n-head", type=int, default=d.n_head, help=f"Attention heads (default: {d.n_head})."
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=d.vocab_size,
        help=f"BPE vocabulary asked of glotta tokenizer (default: {d.vocab_size}).",
    )
    p.add_argument(
        "--runs",
        default=",".join(d.runs),
        help=f"Comma-separated runs, in order, from {', '.join(ALL_RUNS)} (default: {','.join(d.runs)}).",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=d.compile,
        help="torch.compile in glotta-best, glotta-bf16, hf-best, hf-fp32-compile, glotta-fp32-compile; --no-compile "
        "for quick runs (default: on).",
    )
    p.add_argument(
        "--glotta-precision",
        default=d.glotta_precision,
        choices=("auto", "bf16", "fp32"),
        help="train.precision of glotta-best; 'auto' is glotta's own choice (default: auto).",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help=f"Model init and data order seed (default: {d.seed}).",
    )
    p.add_argument(
        "--data-dir",
        default=d.data_dir,
        help=f"Cache run directory for corpus/tokenizer/shards (default: {d.data_dir}).",
    )
    p.add_argument(
        "--results-dir",
        default="",
        help="Where the results file goes (default: benchmarks/results).",
    )
    p.add_argument(
        "--peak-sizes",
        default=",".join(map(str, d.peak_sizes)),
        help="Matrix sizes for the matmul peak, ascending; sizes stop once a product is slow "
        f"(default: {','.join(map(str, d.peak_sizes))}).",
    )
    p.add_argument(
        "--peak-seconds",
        type=float,
        default=d.peak_seconds,
        help=f"Seconds per timing window of the matmul peak (default: {d.peak_seconds}).",
    )
    p.add_argument(
        "--max-seconds-per-run",
        type=float,
        default=d.max_seconds_per_run,
        help="Time budget of one run: after it, the run stops at the end of the current step "
        "(once --warmup + 2 steps are done) and the steady state comes from the steps done; "
        f"bf16 steps take minutes on CPUs without native bf16. 0 = no limit (default: {d.max_seconds_per_run:g}).",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=d.device,
        help="Where both sides train; the GOAL_* targets are for the CPU (default: cpu).",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=d.rounds,
        help="Run every variant this many times, in alternating order (forward, then reversed, "
        "...), each in a fresh process; tokens/s is the median over the rounds, and every "
        f"round's figure is kept in the results file (default: {d.rounds}).",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-settings", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    a = parse_with_smoke(p, argv, SMOKE)
    s = Settings(
        steps=a.steps,
        warmup=a.warmup,
        micro_batch=a.micro_batch,
        block_size=a.block_size,
        n_layer=a.n_layer,
        n_embd=a.n_embd,
        n_head=a.n_head,
        vocab_size=a.vocab_size,
        runs=[r.strip() for r in a.runs.split(",") if r.strip()],
        compile=a.compile,
        glotta_precision=a.glotta_precision,
        seed=a.seed,
        data_dir=a.data_dir,
        results_dir=a.results_dir,
        peak_sizes=[int(x) for x in a.peak_sizes.split(",")],
        peak_seconds=a.peak_seconds,
        max_seconds_per_run=a.max_seconds_per_run,
        device=a.device,
        rounds=a.rounds,
    )
    return s, a


def main(argv: list[str] | None = None) -> None:
    s, a = parse_args(argv)
    if a.worker:
        worker_main(a.worker, a.worker_settings, a.worker_out)
        return
    run_train_speed(s)


if __name__ == "__main__":
    main()
