"""How a run's steps are laid out on this hardware: the phases of ``[train]``, the global batch
reached by micro-batches x accumulation x processes, the number of steps, and the precision."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
from collections.abc import Callable
from pathlib import Path

import torch

from glotta.config import TrainConfig
from glotta.errors import GlottaError


@dataclasses.dataclass
class StepPlan:
    """How the recipe's global batch is reached on this hardware."""

    micro_batch_size: int
    accumulation: int
    world_size: int
    total_steps: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.accumulation * self.world_size


def plan_steps(cfg: TrainConfig, world_size: int, num_blocks: int) -> StepPlan:
    if cfg.global_batch_size:
        per_step = cfg.micro_batch_size * world_size
        if cfg.global_batch_size % per_step:
            raise GlottaError(
                f"train.global_batch_size ({cfg.global_batch_size}) must be a multiple of "
                f"micro_batch_size x processes ({cfg.micro_batch_size} x {world_size})"
            )
        accumulation = cfg.global_batch_size // per_step
    else:
        accumulation = cfg.gradient_accumulation_steps
    global_batch = cfg.micro_batch_size * accumulation * world_size
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * num_blocks / global_batch))
    return StepPlan(cfg.micro_batch_size, accumulation, world_size, total)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 on request, or for 'auto' where the hardware computes bf16 natively (a GPU with
    bf16, a CPU with AVX512-BF16 or AMX). Whether it is also *faster* there than fp32 is for
    :func:`decide_precision` to measure: on a CPU without native bf16 (AVX2 only) bf16 matmuls
    are emulated and ~100x slower than fp32, and on some with AVX512-BF16 but no AMX they run at
    half the fp32 speed (benchmarks/README.md)."""
    if cfg.precision == "bf16":
        return torch.bfloat16
    if cfg.precision != "auto":
        return None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


@dataclasses.dataclass(frozen=True)
class Precision:
    """The precision a training run uses, and why (shown in the plan line)."""

    dtype: torch.dtype | None  # the autocast dtype; None = fp32
    reason: str

    @property
    def name(self) -> str:
        return "bf16" if self.dtype is not None else "fp32"

    def describe(self) -> str:
        return f"{'bf16 autocast' if self.dtype is not None else 'fp32'} ({self.reason})"


# bf16 must beat fp32 by this much in the measurement: a tie or noise keeps the exact path.
BF16_MARGIN = 0.9


def decide_precision(
    cfg: TrainConfig,
    device: torch.device,
    step_seconds: Callable[[torch.dtype | None], float],
    recorded: str | None = None,
    cache: Path | None = None,
    cache_key: str = "",
) -> Precision:
    """The run's precision: as requested; for 'auto', the one recorded when the run started
    (a resumed run keeps its arithmetic), bf16 on GPUs that have it, and on a CPU with native
    bf16 whichever of bf16 autocast and fp32 ran a training step of this model faster
    (``step_seconds(dtype)`` times one; never a path slower than fp32).

    The measurement is kept in ``cache`` under ``cache_key`` (this machine, this model's step):
    where bf16 and fp32 are close, measuring again could flip the choice between two runs of
    the same recipe and change their results.
    """
    if cfg.precision != "auto":
        return Precision(autocast_dtype(cfg, device), "as requested")
    if recorded in ("bf16", "fp32"):
        return Precision(torch.bfloat16 if recorded == "bf16" else None, "as when the run began")
    native = autocast_dtype(cfg, device)
    if native is None:
        return Precision(None, f"auto: no native bf16 on this {device.type}")
    if device.type != "cpu":
        return Precision(native, f"auto: native bf16 on this {device.type}")
    known = _read_cache(cache).get(cache_key) if cache else None
    if known:
        dtype = native if known["choice"] == "bf16" else None
        return Precision(dtype, f"auto: {known['measured']} when first measured ({cache})")
    step_seconds(native)  # warm-up: first calls pick kernels and allocate
    step_seconds(None)
    bf16 = min(step_seconds(native) for _ in range(2))
    fp32 = min(step_seconds(None) for _ in range(2))
    measured = f"a step took {bf16:.3f} s in bf16, {fp32:.3f} s in fp32 here"
    choice = native if bf16 < BF16_MARGIN * fp32 else None
    if cache:
        entries = _read_cache(cache)
        entries[cache_key] = {"choice": "bf16" if choice else "fp32", "measured": measured}
        _write_cache(cache, entries)
    return Precision(choice, f"auto: {measured}")


def precision_cache() -> Path:
    """Where 'auto' keeps its measurements: $XDG_CACHE_HOME/glotta (else ~/.cache/glotta)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "glotta" / "precision.json"


def machine_key() -> str:
    """This machine as far as kernel speed goes: the CPU model and its flags, torch's version."""
    model, flags = platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "model name" and model == platform.machine():
                model = value.strip()
            elif name.strip() == "flags" and not flags:
                flags = hashlib.sha256(value.strip().encode()).hexdigest()[:12]
    except OSError:
        pass
    return f"{model}|{flags}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def _read_cache(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _write_cache(path: Path, entries: dict) -> None:
    # A cache that cannot be written only costs a measurement next time.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(entries, indent=1))
        os.replace(partial, path)
    except OSError:
        pass


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def training_phases(cfg: TrainConfig) -> list[TrainConfig]:
    """``[train]`` is the first phase; each ``[[train.phases]]`` entry continues from the last."""
    phases = [dataclasses.replace(cfg, phases=[])]
    for phase in cfg.phases:
        previous = phases[-1]
        changes: dict = {}
        for name in ("block_size", "learning_rate", "micro_batch_size", "global_batch_size"):
            if getattr(phase, name):
                changes[name] = getattr(phase, name)
        if phase.warmup_steps >= 0:
            changes["warmup_steps"] = phase.warmup_steps
        if phase.max_steps or phase.epochs:  # a phase says its own length, or repeats the last
            changes["max_steps"] = phase.max_steps
            changes["epochs"] = phase.epochs or 1.0
        phases.append(dataclasses.replace(previous, **changes))
    return phases


def phase_rope_thetas(cfg: TrainConfig) -> list[float]:
    """The RoPE base of each phase: 0 (the model's own) until a phase sets one, which later
    phases keep. Families with learned positions never get one (the recipe check refuses it)."""
    thetas = [0.0]
    for phase in cfg.phases:
        thetas.append(phase.rope_theta or thetas[-1])
    return thetas
