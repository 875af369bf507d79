"""Helpers for training tests: fresh run directories that reuse the tiny run's token shards."""

from __future__ import annotations

import atexit
import functools
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
    folder = Path(tempfile.mkdtemp(prefix="glotta-test-tokenizers-"))
    owner = os.getpid()
    # Only the process that trained them removes them: forked children (mutation testing runs
    # one pytest session per mutant in a fork of the process that collected the tests) share it.
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
    return folder


@functools.cache
def trained_tokenizer(kind: str, vocab_size: int, texts: tuple[str, ...]) -> Path:
    """A tokenizer folder trained once per process on ``texts`` (module fixtures that train one
    are rebuilt for every pytest session; a session per mutant would retrain it every time)."""
    from glotta.tokenizer.train import train_tokenizer

    out = Path(tempfile.mkdtemp(prefix=f"{kind}-{vocab_size}-", dir=_tokenizer_cache()))
    train_tokenizer(TokenizerConfig(kind=kind, vocab_size=vocab_size), list(texts), out)
    return out
