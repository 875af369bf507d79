r"""Checkpoints that hold everything needed to continue: weights, optimizer, schedule, RNG, data position.

```
train/checkpoints/
  LATEST                      name of the newest complete checkpoint (written after it)
  BEST                        name of the checkpoint with the lowest validation loss
  step_00000500/
    config.json               \ a Hugging Face model folder: from_pretrained loads it as is
    model.safetensors         /
    training_state.pt         optimizer + scheduler + RNG tensors; loaded with weights_only=True
    trainer_state.json        step, tokens seen, data position, elapsed time
```

A checkpoint is written into a hidden ``.partial`` folder, fsynced and renamed, and only then named
in ``LATEST``; a crash during a save leaves the previous checkpoint untouched. The newest
``keep`` checkpoints and the one named in ``BEST`` are kept.

The optimizer state is saved with ``torch.distributed.checkpoint``'s state-dict helpers, keyed
by parameter name, so the same file loads under one process, DDP or FSDP2 (where each process
holds a shard and the helpers gather and scatter the full state).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from glotta.rundir import latest_checkpoint

TRAINING_STATE = "training_state.pt"
TRAINER_STATE = "trainer_state.json"
BEST = "BEST"


def _options(sharded: bool) -> StateDictOptions:
    # Sharded (FSDP) tensors are gathered into full CPU tensors on rank 0 for saving, and the
    # full state is scattered back to the shards when loading.
    return StateDictOptions(full_state_dict=sharded, cpu_offload=sharded)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _write_pointer(checkpoints_dir: Path, name: str, target: str) -> None:
    pointer = checkpoints_dir / f"{name}.partial"
    pointer.write_text(target)
    os.replace(pointer, checkpoints_dir / name)


def save_checkpoint(
    checkpoints_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    trainer_state: dict[str, Any],
    keep: int,
    *,
    is_best: bool = False,
    sharded: bool = False,
    is_main: bool = True,
) -> Path:
    """Atomically write checkpoint ``step_{step}`` and prune older ones beyond ``keep``.

    Every process calls this (FSDP gathers the state collectively); only ``is_main`` writes.
    """
    model_state = get_model_state_dict(model, options=_options(sharded))
    # A tied output embedding is the input embedding: save it once, as save_pretrained does
    # (gathered copies no longer share storage, so it cannot tell on its own).
    if getattr(model.config, "tie_word_embeddings", False):
        for key in getattr(model, "_tied_weights_keys", None) or {}:
            model_state.pop(key, None)
    optimizer_state = get_optimizer_state_dict(model, optimizer, options=_options(sharded))
    name = f"step_{step:08d}"
    final = checkpoints_dir / name
    if not is_main:
        return final
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    partial = checkpoints_dir / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, state_dict=model_state, safe_serialization=True)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(
        {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "rng": rng},
        partial / TRAINING_STATE,
    )
    (partial / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2))
    _fsync_tree(partial)
    if final.exists():  # re-saving the same step (e.g. final save right after a periodic one)
        shutil.rmtree(final)
    os.replace(partial, final)
    _write_pointer(checkpoints_dir, "LATEST", name)
    if is_best:
        _write_pointer(checkpoints_dir, BEST, name)
    _prune(checkpoints_dir, keep, newest=final)
    return final


def _prune(checkpoints_dir: Path, keep: int, newest: Path) -> None:
    best_file = checkpoints_dir / BEST
    best = best_file.read_text().strip() if best_file.is_file() else None
    steps = sorted(p for p in checkpoints_dir.glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - max(keep, 1))]:
        if old != newest and old.name != best:
            shutil.rmtree(old, ignore_errors=True)


def read_trainer_state(path: Path) -> dict[str, Any]:
    """Step, tokens seen, phase, data position... of a checkpoint (no tensors loaded)."""
    return json.loads((path / TRAINER_STATE).read_text())


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load a checkpoint's weights into an unsharded model of the same shape."""
    state = load_file(path / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied output embeddings (GPT-2's lm_head.weight, BERT's cls.predictions.decoder.weight and
    # .bias) are saved once by save_pretrained; anything else missing is a bug.
    tied = {"lm_head.weight", *(getattr(model, "_tied_weights_keys", None) or {})}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {path} does not match the model: {missing} {unexpected}")


def read_training_state(path: Path) -> dict[str, Any]:
    """Optimizer, schedule and RNG tensors of a checkpoint (read once; weights_only=True)."""
    return torch.load(path / TRAINING_STATE, weights_only=True, map_location="cpu")


def load_training_state(
    training: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    sharded: bool = False,
) -> None:
    """Restore optimizer and schedule in place (every process calls this)."""
    set_optimizer_state_dict(
        model, optimizer, optim_state_dict=training["optimizer"], options=_options(sharded)
    )
    scheduler.load_state_dict(training["scheduler"])


def restore_rng(training: dict[str, Any]) -> None:
    """Continue the random streams (dropout) where the checkpointed run left them."""
    torch.set_rng_state(training["rng"]["torch"])
    if "cuda" in training["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(training["rng"]["cuda"])


def find_resume_checkpoint(checkpoints_dir: Path) -> Path | None:
    return latest_checkpoint(checkpoints_dir)
