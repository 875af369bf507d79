"""Helpers for training tests: fresh run directories that reuse the tiny run's token shards."""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from glotta.config import Recipe, TokenizerConfig
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


@functools.cache
def _tokenizer_cache() -> Path:
    """GLOTTA_TEST_CACHE (set by scripts/mutation.sh, which runs one pytest session per mutant in
    a new process), else a folder of this process, removed when it exits."""
    if os.environ.get("GLOTTA_TEST_CACHE"):
        folder = Path(os.environ["GLOTTA_TEST_CACHE"])
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    folder = Path(tempfile.mkdtemp(prefix="glotta-test-tokenizers-"))
    owner = os.getpid()  # forked children must not remove it
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
    return folder


@functools.cache
def trained_tokenizer(kind: str, vocab_size: int, texts: tuple[str, ...]) -> Path:
    """A tokenizer folder trained once on ``texts`` (module fixtures that train one are rebuilt
    for every pytest session; a mutation run would retrain it for every mutant)."""
    from glotta.tokenizer.train import train_tokenizer

    key = hashlib.sha256(json.dumps([kind, vocab_size, texts]).encode()).hexdigest()[:16]
    out = _tokenizer_cache() / f"{kind}-{vocab_size}-{key}"
    if not (out / "tokenizer.json").is_file():
        partial = Path(tempfile.mkdtemp(dir=_tokenizer_cache()))
        train_tokenizer(TokenizerConfig(kind=kind, vocab_size=vocab_size), list(texts), partial)
        os.replace(partial, out)  # complete or absent
    return out
