"""Shared fixtures: a real, tiny run (real Russian text, real tokenizer, real training steps)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from glotta.config import Recipe
from glotta.recipe import load_recipe
from glotta.rundir import RunDir

# The demo recipe shrunk to seconds: ten files of real Russian contexts, a 512-token BPE, a
# 2-layer GPT-2 and 200 optimizer steps.
TINY_OVERRIDES = [
    'corpus.inputs=["pkg://rl_wsd_labeled/verbs/RuTenTen/*.txt"]',
    "corpus.valid_fraction=0.1",
    "corpus.test_fraction=0.1",
    "tokenizer.vocab_size=512",
    # AdamW, cosine decay and the families' own initialisation, whatever the demo ships: the
    # tests that need another optimizer, schedule or initialisation name it.
    'train.optimizer="adamw"',
    "model.zero_init_projections=false",
    'train.decay="cosine"',
    "train.min_lr_ratio=0.1",
    'model.preset="tiny"',
    "model.n_layer=0",
    "model.n_embd=0",
    "model.n_head=0",
    "train.block_size=64",
    "train.micro_batch_size=16",
    "train.max_steps=200",
    "train.learning_rate=3e-3",
    "train.warmup_steps=5",
    "train.eval_interval=100",
    "train.eval_batches=4",
    "train.checkpoint_interval=100",
    "train.log_interval=5",
    "generate.max_new_tokens=20",
    # fp32 on every machine: "auto" picks bf16 autocast on CPUs with native bf16 (AMX), where
    # comparisons across batch layouts and process counts would measure bf16 rounding.
    'train.precision="fp32"',
]


def tiny_recipe(*extra: str) -> Recipe:
    return load_recipe("demo", [*TINY_OVERRIDES, *extra])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Recipe, RunDir]:
    """A finished run of every stage of the tiny demo (shared by the tests that only read it)."""
    from glotta.pipeline import run_recipe

    recipe = tiny_recipe()
    run_dir = RunDir(Path(tmp_path_factory.mktemp("tiny-run")))
    run_recipe(recipe, run_dir)
    return recipe, run_dir


def glotta(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real command line (``python -m glotta ARGS``) in a subprocess."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "glotta", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def glotta_torchrun(*args: str, nproc: int = 2, env: dict | None = None):
    """Run the command line under torchrun on ``nproc`` local processes (gloo on CPU), one torch
    thread each unless ``env`` says otherwise."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         str(nproc), "-m", "glotta", *args],
        capture_output=True, text=True, timeout=600,
        env=env or {**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


# Property-based tests (Hypothesis): few examples, so that they run in seconds on a shared CPU,
# and no per-example deadline (a first example pays for imports and model loading).
# HYPOTHESIS_PROFILE=thorough runs many more, e.g. before a release.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "glotta",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "glotta"))
