"""Helpers for training tests: fresh run directories that reuse the tiny run's token shards."""

from __future__ import annotations

import shutil
from pathlib import Path

from glotta.config import Recipe
from glotta.pipeline import save_recipe
from glotta.rundir import RunDir


def fresh_run_with_shards(
    tmp_path: Path, name: str, shards_from: RunDir, recipe: Recipe | None = None
) -> RunDir:
    """A run directory holding only packed shards (and the recipe, for `glotta train --run-dir`)."""
    run_dir = RunDir(tmp_path / name)
    shutil.copytree(shards_from.shards, run_dir.shards)
    if recipe is not None:
        save_recipe(recipe, run_dir)
    return run_dir
