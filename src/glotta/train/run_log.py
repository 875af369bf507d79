"""What a training run tells the outside world while it runs: the metrics log (JSON lines and
TensorBoard), the plan printed per phase, RUN_DIR/train/train_config.json, and the signals that
ask it to save and stop."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from pathlib import Path

import torch

from glotta.config import TrainConfig
from glotta.models import count_parameters
from glotta.rundir import RunDir
from glotta.train.distributed import Dist
from glotta.train.plan import Precision, StepPlan


class StopRequest:
    """SIGTERM/SIGINT ask the loop to save and stop after the current step (preemptible clusters)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class MetricsLog:
    """Metrics as JSON lines (for the model card's loss curve) and as a TensorBoard log.

    On resume, lines logged after the checkpoint's step (by the run that crashed) are dropped,
    so the curve has exactly one value per step; a line cut short by a crash is dropped too. A
    fresh start keeps an earlier log as metrics.jsonl.N instead of overwriting it.
    """

    def __init__(self, folder: Path, enabled: bool, resume_step: int = 0):
        self.enabled = enabled
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "metrics.jsonl"
        if path.is_file() and path.stat().st_size and not resume_step:
            number = 1
            while path.with_name(f"metrics.jsonl.{number}").exists():
                number += 1
            path.rename(path.with_name(f"metrics.jsonl.{number}"))
        if path.is_file():
            kept = [line for line in path.read_text().splitlines() if _step(line) <= resume_step]
            tmp = path.with_name("metrics.jsonl.partial")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)  # a crash now leaves the old log or the truncated one
        self._file = open(path, "a", encoding="utf-8")
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard; rank 0 only

        self._tensorboard = SummaryWriter(
            str(folder / "tensorboard"), purge_step=resume_step or None
        )

    def write(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        for key, value in values.items():
            if value is not None:
                self._tensorboard.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tensorboard.close()


def _step(line: str) -> float:
    """The step of a metrics line; infinity for a line a crash cut short (dropped)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def log_plan(
    cfg: TrainConfig,
    plan: StepPlan,
    phase: int,
    model,
    precision: Precision,
    ctx: Dist,
    host_memory_reused: bool,
) -> None:
    print(
        f"glotta: phase {phase + 1}: {count_parameters(model) / 1e6:.2f}M parameters on "
        f"{ctx.world_size} x "
        f"{ctx.device.type}; global batch {plan.global_batch} sequences = "
        f"{plan.micro_batch_size} micro x {plan.accumulation} accumulation x "
        f"{plan.world_size} processes, {cfg.block_size} tokens each; {plan.total_steps} steps; "
        f"precision {precision.describe()}{'; compiled' if cfg.compile else ''}"
        f"{'; activation checkpointing' if cfg.activation_checkpointing else ''}"
        f"{'; host memory reused' if host_memory_reused else ''}"
        f"{'; FSDP' if ctx.enabled and cfg.parallelism == 'fsdp' else ''}",
        flush=True,
    )


def write_train_config(
    run_dir: RunDir, cfg, model_cfg, plans: list, model, ctx: Dist, precision: str | None
) -> None:
    """RUN_DIR/train/train_config.json; ``precision`` is the one the run decided on ('bf16',
    'fp32'; None before the first phase has decided)."""
    info = {
        "train": dataclasses.asdict(cfg),
        "model": dataclasses.asdict(model_cfg),
        "model_config": model.config.to_dict(),
        "plan": dataclasses.asdict(plans[0]),
        "phases": [dataclasses.asdict(plan) for plan in plans],
        "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
        "precision_used": {"bf16": "bf16 autocast", "fp32": "fp32"}.get(precision),
    }
    (run_dir.train / "train_config.json").write_text(json.dumps(info, indent=2, default=str))
