"""What a checkpoint was trained from, and whether it may be resumed with today's recipe.

Every checkpoint's trainer_state.json holds a ``provenance`` record: the fingerprints of the
stages the weights were trained on (corpus, tokenizer, shards, each chained with the ones before
it), the content fingerprints of the corpus stage's input files, and every model and training
setting. Resuming compares it with the current run:

- changed inputs (a new corpus, another tokenizer, an input file edited in place since the
  corpus was built from it) or changed model/training settings (learning
  rate, batch, architecture, teacher...) are refused: continuing old weights on new inputs
  would export a model that is not what the recipe says; the message names what changed and
  the two ways on;
- the settings in ``SAFE_TO_CHANGE`` only say how long to train and how often to look
  (max_steps, intervals, keep_checkpoints) or how to run it (device, compile, DDP or FSDP): they
  may change, and each change is written to RUN_DIR/train/history.jsonl, which the model card
  shows.

Checkpoints written before provenance was recorded are resumed as before, with a notice.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from glotta.errors import GlottaError
from glotta.fingerprints import changed_files
from glotta.rundir import RunDir, marker_fingerprint, read_marker

# [train] fields that can differ between the sessions of one run without changing what the
# weights are trained on so far. (A longer max_steps stretches the rest of the decay schedule;
# the card shows it through the history.)
SAFE_TO_CHANGE = frozenset(
    {
        "max_steps",
        "epochs",
        "eval_interval",
        "eval_batches",
        "checkpoint_interval",
        "keep_checkpoints",
        "log_interval",
        "compile",
        "reuse_host_memory",
        "activation_checkpointing",
        "device",
        # DDP and FSDP save the same full, name-keyed state and train the same global batch
        # (tests/train/test_parallel_interchange.py): a run may change layout when it resumes.
        "parallelism",
    }
)
UPSTREAM = ("corpus", "tokenizer", "shards")
HISTORY = "history.jsonl"


def upstream_fingerprints(run_dir: RunDir) -> dict[str, str]:
    folders = {"corpus": run_dir.corpus, "tokenizer": run_dir.tokenizer, "shards": run_dir.shards}
    return {name: marker_fingerprint(folders[name]) for name in UPSTREAM}


def provenance(stage_config: Any, run_dir: RunDir) -> dict:
    """The record saved with every checkpoint: upstream fingerprints and all stage settings."""
    settings = json.loads(json.dumps(dataclasses.asdict(stage_config), default=str))
    files = (read_marker(run_dir.corpus) or {}).get("inputs")
    return {"inputs": upstream_fingerprints(run_dir), "files": files, "settings": settings}


def _flatten(settings: dict) -> dict[str, Any]:
    """{"train": {"learning_rate": 3e-4}} -> {"train.learning_rate": 3e-4} (lists kept whole)."""
    flat = {}
    for section, values in settings.items():
        if isinstance(values, dict):
            for key, value in values.items():
                flat[f"{section}.{key}"] = value
        else:
            flat[section] = values
    return flat


def _is_safe(key: str) -> bool:
    section, _, name = key.partition(".")
    return section == "train" and name in SAFE_TO_CHANGE


def check_resume(recorded: dict | None, current: dict, checkpoint: Path) -> dict[str, list]:
    """Raise GlottaError when ``checkpoint`` was trained from other inputs or settings.

    Returns the safe settings that changed, ``{"train.max_steps": [old, new]}``.
    """
    if not recorded:
        print(
            f"glotta: notice: {checkpoint.name} was saved by an older glotta that did not record "
            "its inputs; resuming it without checking them",
            flush=True,
        )
        return {}
    inputs = [
        name for name in UPSTREAM if recorded.get("inputs", {}).get(name) != current["inputs"][name]
    ]
    edited = changed_files(recorded.get("files"))
    old, new = _flatten(recorded.get("settings", {})), _flatten(current["settings"])
    changed = {k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys())}
    changed = {k: v for k, v in changed.items() if v[0] != v[1]}
    unsafe = [k for k in changed if not _is_safe(k)]
    if inputs or unsafe or edited:
        reasons = []
        if edited:
            more = f" (and {len(edited) - 3} more)" if len(edited) > 3 else ""
            reasons.append(
                f"the corpus input {', '.join(edited[:3])}{more} changed since the corpus was built"
            )
        if inputs:
            later = inputs[1:]
            reasons.append(
                f"the {inputs[0]} changed"
                + (f" (and with it the {' and '.join(later)})" if later else "")
            )
        for key in unsafe[:4]:
            reasons.append(f"{key} was {changed[key][0]!r}, is now {changed[key][1]!r}")
        if len(unsafe) > 4:
            reasons.append(f"{len(unsafe) - 4} more settings")
        raise GlottaError(
            f"checkpoint {checkpoint.name} in {checkpoint.parent} was trained from other inputs: "
            f"{'; '.join(reasons)}. Resuming would continue stale weights. Start over in this "
            "folder with --no-resume (deletes its checkpoints), or keep it and use a new --run-dir"
        )
    return {k: changed[k] for k in changed}


def record_session(
    train_dir: Path, resumed_from: Path | None, step: int, changed: dict, notes: list[str], cfg
) -> None:
    """Append one line per training session to RUN_DIR/train/history.jsonl (never rewritten)."""
    entry = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "resumed_from": resumed_from.name if resumed_from else None,
        "step": step,
        "changed": changed,
        "notes": notes,
        "train": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
    }
    train_dir.mkdir(parents=True, exist_ok=True)
    with open(train_dir / HISTORY, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def read_history(train_dir: Path) -> list[dict]:
    path = train_dir / HISTORY
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash
    return entries
