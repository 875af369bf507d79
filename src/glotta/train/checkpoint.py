r"""Checkpoints that hold everything needed to continue: weights, optimizer, schedule, RNG, data position.

```
train/checkpoints/
  LATEST                      name of the newest complete checkpoint (written after it)
  BEST                        name of the checkpoint with the lowest validation loss
  step_00000500/
    config.json               \ a Hugging Face model folder: from_pretrained loads it as is
    model.safetensors         /
    training_state.pt         optimizer + scheduler + RNG tensors; loaded with weights_only=True
    trainer_state.json        step, tokens seen, data position, elapsed time, provenance
    manifest.json             size and SHA-256 of every other file, written last
```

A checkpoint is written into a hidden ``.partial`` folder, fsynced and renamed, and only then named
in ``LATEST``; a crash during a save leaves the previous checkpoint untouched. The newest
``keep`` checkpoints and the one named in ``BEST`` are kept.

A checkpoint is verified against its manifest before it is resumed (a disk that filled up, a copy
cut short, a file edited by hand). A damaged newest checkpoint is moved aside to
``damaged-step_...`` (never deleted: it may be the only copy of weeks of training) and the
newest intact one is resumed; when none is intact the run stops with a message that names each
problem. Damaged folders do not count among the ``keep`` newest, so pruning never removes an
intact checkpoint because of them.

The optimizer state is saved with ``torch.distributed.checkpoint``'s state-dict helpers, keyed
by parameter name, so the same file loads under one process, DDP or FSDP2 (where each process
holds a shard and the helpers gather and scatter the full state).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import zipfile
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

from glotta.diskwrite import torch_save, writing
from glotta.errors import GlottaError

TRAINING_STATE = "training_state.pt"
TRAINER_STATE = "trainer_state.json"
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
BEST = "BEST"
# What a checkpoint needs to be resumed (generation_config.json etc. are optional).
REQUIRED = ("config.json", WEIGHTS, TRAINING_STATE, TRAINER_STATE)
DAMAGED_PREFIX = "damaged-"


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
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    try:
        with writing(partial / WEIGHTS):
            model.save_pretrained(partial, state_dict=model_state, safe_serialization=True)
        torch_save(
            {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "rng": rng},
            partial / TRAINING_STATE,
        )
        with writing(partial / TRAINER_STATE):
            (partial / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2))
        with writing(partial / MANIFEST):
            _write_manifest(partial)
            _fsync_tree(partial)
    except GlottaError:  # a failed write: give the room back; the folder never looked complete
        shutil.rmtree(partial, ignore_errors=True)
        raise
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _write_manifest(folder: Path) -> None:
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=2))


def _safetensors_problem(path: Path) -> str | None:
    """A truncated safetensors file is shorter than its header says (checked without loading)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len)) if 8 + header_len <= size else None
    except (OSError, ValueError, struct.error):
        return f"{path.name} cannot be read"
    if header is None:
        return f"{path.name} is cut short ({size} bytes)"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if size < 8 + header_len + end:
        return f"{path.name} is cut short ({size} of {8 + header_len + end} bytes)"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder cannot be resumed, or None when it is intact.

    Checkpoints with a manifest are checked file by file (size and SHA-256); older ones without
    one are checked for their files, a readable trainer state and complete tensor files.
    """
    if not path.is_dir():
        return "the folder is missing"
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
            records = {name: (int(r["bytes"]), str(r["sha256"])) for name, r in files.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return f"{MANIFEST} is not readable JSON"
        for name in REQUIRED:
            if name not in records:
                return f"{MANIFEST} does not list {name}"
        for name, (size, digest) in records.items():
            file = path / name
            if not file.is_file():
                return f"{name} is missing"
            if file.stat().st_size != size:
                return f"{name} has {file.stat().st_size} bytes, {size} were written"
            if _sha256(file) != digest:
                return f"{name} differs from what was written (SHA-256 mismatch)"
    else:
        for name in REQUIRED:
            if not (path / name).is_file():
                return f"{name} is missing"
        problem = _safetensors_problem(path / WEIGHTS)
        if problem:
            return problem
        if not zipfile.is_zipfile(path / TRAINING_STATE):  # torch.save writes a zip archive
            return f"{TRAINING_STATE} is cut short or not a torch file"
    try:
        state = json.loads((path / TRAINER_STATE).read_text())
        int(state["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{TRAINER_STATE} is not readable JSON with a step"
    return None


def _step_folders(checkpoints_dir: Path) -> list[Path]:
    return sorted((p for p in checkpoints_dir.glob("step_*") if p.is_dir()), reverse=True)


def find_resume_checkpoint(checkpoints_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest intact checkpoint, and the damaged ones newer than it (with their problem).

    LATEST names the newest checkpoint, but it is not trusted alone: an empty or garbled LATEST,
    or one that names a deleted folder, must not turn a resume into a silent restart from step
    0. Every ``step_*`` folder is a candidate, newest first. Raises GlottaError when checkpoints
    exist but none is intact.
    """
    if not checkpoints_dir.is_dir():
        return None, []
    damaged: list[tuple[Path, str]] = []
    for candidate in _step_folders(checkpoints_dir):
        problem = checkpoint_problem(candidate)
        if problem is None:
            return candidate, damaged
        damaged.append((candidate, problem))
    pointer = checkpoints_dir / "LATEST"
    named = pointer.read_text(errors="replace").strip() if pointer.is_file() else ""
    if named.startswith("step_") and not (checkpoints_dir / named).is_dir() and not damaged:
        raise GlottaError(
            f"{pointer} names {named}, which is gone, and no other checkpoint is left in "
            f"{checkpoints_dir}; restore it, or start over with --no-resume"
        )
    if damaged:
        problems = "; ".join(f"{p.name}: {why}" for p, why in damaged)
        raise GlottaError(
            f"no intact checkpoint to resume in {checkpoints_dir} ({problems}); restore the "
            "files from a copy, or start over with --no-resume (which deletes them)"
        )
    return None, []


def set_aside_damaged(damaged: list[tuple[Path, str]], resumed: Path) -> list[str]:
    """Rename damaged checkpoints to ``damaged-step_...`` and say so; returns the notes logged.

    Renamed, not deleted: the user decides. Renamed, so that pruning and LATEST ignore them and
    a re-save of the same step does not collide with them.
    """
    notes = []
    for path, problem in damaged:
        target = path.with_name(DAMAGED_PREFIX + path.name)
        suffix = 1
        while target.exists():
            suffix += 1
            target = path.with_name(f"{DAMAGED_PREFIX}{path.name}.{suffix}")
        os.replace(path, target)
        notes.append(
            f"checkpoint {path.name} is damaged ({problem}); moved to {target.name}, resuming "
            f"from the newest intact one, {resumed.name}"
        )
    for note in notes:
        print(f"glotta: warning: {note}", file=sys.stderr, flush=True)
    if notes:
        _write_pointer(resumed.parent, "LATEST", resumed.name)
    return notes


def read_trainer_state(path: Path) -> dict[str, Any]:
    """Step, tokens seen, phase, data position... of a checkpoint (no tensors loaded)."""
    return json.loads((path / TRAINER_STATE).read_text())


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load a checkpoint's weights into an unsharded model of the same shape."""
    try:
        state = load_file(path / WEIGHTS)
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise GlottaError(
            f"{path / WEIGHTS} cannot be read ({exc}); restore it or start over with --no-resume"
        ) from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied output embeddings (GPT-2's lm_head.weight, BERT's cls.predictions.decoder.weight and
    # .bias) are saved once by save_pretrained; anything else missing is a bug.
    tied = {"lm_head.weight", *(getattr(model, "_tied_weights_keys", None) or {})}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise GlottaError(
            f"checkpoint {path} does not match the model of this recipe (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); start over with --no-resume, or use a new --run-dir"
        )


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
