"""How a run's steps are laid out on this hardware: the phases of ``[train]``, the global batch
reached by micro-batches x accumulation x processes, the number of steps, and the precision."""

from __future__ import annotations

import contextlib
import dataclasses
import math

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
    """bf16 autocast where it pays: on request, or 'auto' on hardware with native bf16.

    On a CPU without native bf16 (AVX2 only) bf16 matmuls are emulated and ~100x slower than
    fp32, so 'auto' keeps fp32 there (see benchmarks/README.md).
    """
    if cfg.precision == "bf16":
        return torch.bfloat16
    if cfg.precision != "auto":
        return None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


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
