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
interrupted stage never looks finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

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


def is_complete(stage_dir: Path, expected_fingerprint: str | None = None) -> bool:
    marker = stage_dir / MARKER
    if not marker.is_file():
        return False
    if expected_fingerprint is None:
        return True
    try:
        return json.loads(marker.read_text())["fingerprint"] == expected_fingerprint
    except (OSError, ValueError, KeyError):
        return False


def begin_stage(stage_dir: Path) -> None:
    """Create the stage folder and remove an old marker, so a crash leaves no 'finished' stage."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / MARKER).unlink(missing_ok=True)


def mark_complete(stage_dir: Path, stage: str, fingerprint_value: str, summary: dict) -> None:
    write_json_atomic(
        stage_dir / MARKER,
        {
            "stage": stage,
            "fingerprint": fingerprint_value,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "summary": summary,
        },
    )


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temporary file, fsync and rename: readers see the old or the new file."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def stage_fingerprint(config: Any, *upstream_dirs: Path) -> str:
    """Fingerprint of a stage: its own config chained with the fingerprints of the stages it reads.

    So changing the corpus settings invalidates the tokenizer, shards, model... downstream.
    """
    upstream = []
    for stage_dir in upstream_dirs:
        try:
            upstream.append(json.loads((stage_dir / MARKER).read_text())["fingerprint"])
        except (OSError, ValueError, KeyError):
            upstream.append("missing")
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
