"""A teacher trained by glotta (the tiny demo: real Russian text, real steps), and student runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from glotta.config import Recipe
from glotta.rundir import RunDir
from tests.conftest import tiny_recipe

# The tiny demo's teacher (2 layers x 128), 60 real optimizer steps.
TEACHER = [
    "train.max_steps=60",
    "train.eval_interval=0",
    "train.checkpoint_interval=60",
    "train.log_interval=10",
]


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory) -> RunDir:
    """Every stage of the tiny demo, exported: the teacher is RUN/export."""
    from glotta.pipeline import run_recipe

    run_dir = RunDir(Path(tmp_path_factory.mktemp("teacher")))
    run_recipe(tiny_recipe(*TEACHER), run_dir)
    return run_dir


def student_recipe(teacher: RunDir, *extra: str) -> Recipe:
    """The tiny demo as a student of ``teacher``: its tokenizer, and [distill] naming it."""
    return tiny_recipe(
        f'tokenizer.pretrained="{teacher.export}"',
        f'distill.teacher="{teacher.export}"',
        "train.eval_interval=0",
        "train.log_interval=1",
        'distill.teacher_dtype="fp32"',  # bf16 where native (AMX) would blur the comparisons
        *extra,
    )


def student_run(tmp_path: Path, name: str, teacher: RunDir) -> RunDir:
    """A run directory holding the teacher run's tokenizer and shards (the same vocabulary)."""
    run_dir = RunDir(tmp_path / name)
    shutil.copytree(teacher.shards, run_dir.shards)
    shutil.copytree(teacher.tokenizer, run_dir.tokenizer)
    return run_dir
