r"""Checkpoints that hold everything needed to continue: weights, optimizer, schedule, RNG, data position.

```
train/checkpoints/
  LATEST                      name of the newest complete checkpoint (written after it)
  step_00000500/
    config.json               \ a Hugging Face model folder: from_pretrained loads it as is
    model.safetensors         /
    training_state.pt         optimizer + scheduler + RNG tensors; loaded with weights_only=True
    trainer_state.json        step, tokens seen, data position, elapsed time
```

A checkpoint is written into a hidden ``.partial`` folder, fsynced and renamed, and only then named
in ``LATEST``; a crash during a save leaves the previous checkpoint untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from glotta.rundir import latest_checkpoint

TRAINING_STATE = "training_state.pt"
TRAINER_STATE = "trainer_state.json"


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def save_checkpoint(
    checkpoints_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    trainer_state: dict[str, Any],
    keep: int,
) -> Path:
    """Atomically write checkpoint ``step_{step}`` and prune older ones beyond ``keep``."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = checkpoints_dir / name
    partial = checkpoints_dir / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
        partial / TRAINING_STATE,
    )
    (partial / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2))
    _fsync_tree(partial)
    if final.exists():  # re-saving the same step (e.g. final save right after a periodic one)
        shutil.rmtree(final)
    os.replace(partial, final)
    pointer = checkpoints_dir / "LATEST.partial"
    pointer.write_text(name)
    os.replace(pointer, checkpoints_dir / "LATEST")
    _prune(checkpoints_dir, keep, newest=final)
    return final


def _prune(checkpoints_dir: Path, keep: int, newest: Path) -> None:
    steps = sorted(p for p in checkpoints_dir.glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - max(keep, 1))]:
        if old != newest:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore weights, optimizer, schedule and RNG in place; returns the trainer state."""
    state = load_file(path / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied output embeddings are saved once by save_pretrained; anything else missing is a bug.
    missing = [k for k in missing if k not in ("lm_head.weight",)]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {path} does not match the model: {missing} {unexpected}")
    training = torch.load(path / TRAINING_STATE, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    torch.set_rng_state(training["rng"]["torch"])
    if "cuda" in training["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(training["rng"]["cuda"])
    return json.loads((path / TRAINER_STATE).read_text())


def find_resume_checkpoint(checkpoints_dir: Path) -> Path | None:
    return latest_checkpoint(checkpoints_dir)
