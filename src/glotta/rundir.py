"""The run directory: where each stage writes, and the completion markers that let runs resume.

```
RUN_DIR/
  recipe.toml             resolved recipe of the last `glotta run`
  corpus/                 train.jsonl valid.jsonl test.jsonl stats.json
  tokenizer/              tokenizer.json tokenizer_config.json ... stats.json
  shards/                 train.bin valid.bin test.bin meta.json
  train/                  checkpoints/step_XXXXXXXX/ metrics.jsonl tensorboard/
  eval/                   results.json (and ner.json, compare.json)
  ner/                    COMPLETE.json of the NER stage (its results: eval/ner.json)
  export/                 Hugging Face folder + README.md
```

A stage writes ``COMPLETE.json`` into its folder as the very last thing it does; it holds a
fingerprint of the stage's config (and of the stages before it), so `glotta run` skips a stage only
when it finished with the same settings. A stage deletes its marker before it starts, so an
interrupted stage never looks finished. A published folder (the export: a model folder that is
uploaded or copied as it is) holds only the model's files; its marker sits beside it, as
``export.COMPLETE.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from glotta.diskwrite import writing

MARKER = "COMPLETE.json"


@dataclasses.dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def checkpoints(self) -> Path:
        return self.root / "train" / "checkpoints"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def ner(self) -> Path:
        return self.root / "ner"

    @property
    def export(self) -> Path:
        return self.root / "export"


def fingerprint(*configs: Any) -> str:
    """Stable hash of dataclass configs (order matters)."""
    payload = json.dumps([dataclasses.asdict(c) for c in configs], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def marker_path(stage_dir: Path, published: bool = False) -> Path:
    """Where the completion marker of a stage folder is written: inside it, or beside it for a
    published folder."""
    return stage_dir.with_name(f"{stage_dir.name}.{MARKER}") if published else stage_dir / MARKER


def read_marker(stage_dir: Path) -> dict | None:
    """The completion marker of a stage folder (inside it or beside it), or None when the stage
    has not finished or its marker is unreadable."""
    for path in (marker_path(stage_dir), marker_path(stage_dir, published=True)):
        if path.is_file():
            try:
                marker = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            return marker if isinstance(marker, dict) else None
    return None


def marker_fingerprint(stage_dir: Path) -> str:
    """The fingerprint a finished stage recorded, or "missing"."""
    return str((read_marker(stage_dir) or {}).get("fingerprint", "missing"))


def is_complete(stage_dir: Path, expected_fingerprint: str | None = None) -> bool:
    marker = read_marker(stage_dir)
    if marker is None:
        return False
    return expected_fingerprint is None or marker.get("fingerprint") == expected_fingerprint


def begin_stage(stage_dir: Path, published: bool = False) -> None:
    """Create the stage folder and remove an old marker, so a crash leaves no 'finished' stage."""
    (stage_dir.parent if published else stage_dir).mkdir(parents=True, exist_ok=True)
    marker_path(stage_dir, published).unlink(missing_ok=True)


def mark_complete(
    stage_dir: Path,
    stage: str,
    fingerprint_value: str,
    summary: dict,
    published: bool = False,
    **record: Any,
) -> None:
    """Write the marker; ``record`` adds what later stages check (the corpus: its input files)."""
    write_json_atomic(
        marker_path(stage_dir, published),
        {
            "stage": stage,
            "fingerprint": fingerprint_value,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "summary": summary,
            **record,
        },
    )


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temporary file, fsync and rename: readers see the old or the new file."""
    tmp = path.with_name(path.name + ".partial")
    with writing(path), open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def stage_fingerprint(config: Any, *upstream_dirs: Path) -> str:
    """Fingerprint of a stage: its own config chained with the fingerprints of the stages it reads.

    So changing the corpus settings invalidates the tokenizer, shards, model... downstream.
    """
    upstream = [marker_fingerprint(stage_dir) for stage_dir in upstream_dirs]
    return chained_fingerprint(config, upstream)


def chained_fingerprint(config: Any, upstream: list[str]) -> str:
    """The fingerprint a stage with ``config`` gets after stages with ``upstream`` fingerprints
    (lets `glotta run` know what the fingerprints will be before any stage has run)."""
    payload = json.dumps([dataclasses.asdict(config), upstream], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint folder (named in LATEST, written after the folder)."""
    pointer = checkpoints_dir / "LATEST"
    if not pointer.is_file():
        return None
    path = checkpoints_dir / pointer.read_text().strip()
    return path if path.is_dir() else None
