"""Checkpoints move between FSDP, DDP and one process: a run saved under 2-process FSDP resumes
under 2-process DDP or a single process, and a DDP checkpoint resumes under FSDP, each ending
where an uninterrupted run ends (fp32: loss curves to 1e-5, weights to 5e-5).

FSDP saves the full (gathered) state with parameter-name keys; these tests fail when a process
layout writes or reads the optimizer state under other keys, or in another order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from glotta.rundir import RunDir
from glotta.train.provenance import read_history
from tests.conftest import glotta, glotta_torchrun, tiny_recipe
from tests.train.conftest import fresh_run_with_shards
from tests.train.test_engine import loss_curve, weights

STEPS, SAVED = 8, 4
SAVED_NAME, FINAL_NAME = f"step_{SAVED:08d}", f"step_{STEPS:08d}"
# The same global batch and micro-batch under every layout: 1 process x 4 micro-batches of 4,
# or 2 processes x 2 micro-batches of 4 (the micro-batch size is a training setting; the number
# of processes is not).
COMMON = [
    f"train.max_steps={STEPS}",
    "train.global_batch_size=16",
    "train.micro_batch_size=4",
    f"train.checkpoint_interval={SAVED}",
    "train.keep_checkpoints=5",
    "train.eval_interval=0",
    "train.log_interval=1",
]


def _train(run_dir: RunDir, processes: int, *flags: str) -> None:
    if processes == 1:
        result = glotta("train", "--run-dir", str(run_dir.root), *flags)
    else:
        result = glotta_torchrun("train", "--run-dir", str(run_dir.root), *flags, nproc=processes)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = json.loads((run_dir.train / "train_config.json").read_text())["plan"]
    assert plan["world_size"] == processes


def _run(tmp_path: Path, name: str, source: RunDir, parallelism: str, processes: int) -> RunDir:
    run_dir = fresh_run_with_shards(
        tmp_path, name, source, tiny_recipe(*COMMON, f'train.parallelism="{parallelism}"')
    )
    _train(run_dir, processes)
    return run_dir


def _resume(
    tmp_path: Path, name: str, source: RunDir, saved: RunDir, parallelism: str, processes: int
) -> RunDir:
    """A run that stopped after step SAVED under ``saved``'s layout, resumed under another."""
    run_dir = fresh_run_with_shards(
        tmp_path, name, source, tiny_recipe(*COMMON, f'train.parallelism="{parallelism}"')
    )
    run_dir.checkpoints.mkdir(parents=True)
    shutil.copytree(saved.checkpoints / SAVED_NAME, run_dir.checkpoints / SAVED_NAME)
    (run_dir.checkpoints / "LATEST").write_text(SAVED_NAME)
    _train(run_dir, processes, "--resume")
    return run_dir


def _assert_continues_like(resumed: RunDir, straight: RunDir, first_step: int = SAVED) -> None:
    """Steps first_step+1..STEPS: the same losses as the uninterrupted run, the same weights."""
    a, b = loss_curve(straight)[first_step:], loss_curve(resumed)
    assert len(a) == len(b) == STEPS - first_step, (a, b)  # resumed at step first_step + 1
    assert max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True)) <= 1e-5, (a, b)
    wa, wb = weights(straight.checkpoints / FINAL_NAME), weights(resumed.checkpoints / FINAL_NAME)
    assert wa.keys() == wb.keys()
    worst = max(((wa[k] - wb[k]).abs().max().item(), k) for k in wa)
    assert worst[0] <= 5e-5, worst


@pytest.fixture(scope="module")
def straight(tiny_run, tmp_path_factory):
    """Uninterrupted runs: one process (the reference), 2-process FSDP and 2-process DDP."""
    tmp_path, source = tmp_path_factory.mktemp("interchange"), tiny_run[1]
    runs = {
        "one": _run(tmp_path, "one", source, "ddp", 1),
        "fsdp": _run(tmp_path, "fsdp", source, "fsdp", 2),
        "ddp": _run(tmp_path, "ddp", source, "ddp", 2),
    }
    # The layouts agree before any checkpoint changes hands (else the tests below measure that).
    _assert_continues_like(runs["fsdp"], runs["one"], first_step=0)
    _assert_continues_like(runs["ddp"], runs["one"], first_step=0)
    return source, runs


@pytest.mark.slow
def test_an_fsdp_checkpoint_resumes_under_ddp_and_under_one_process(straight, tmp_path):
    source, runs = straight
    for name, processes in (("fsdp-then-ddp", 2), ("fsdp-then-one", 1)):
        resumed = _resume(tmp_path, name, source, runs["fsdp"], "ddp", processes)
        _assert_continues_like(resumed, runs["one"])
        _assert_continues_like(resumed, runs["fsdp"])
        # The change of layout is allowed and written down, not refused as a changed setting.
        (session,) = read_history(resumed.train)
        assert session["changed"] == {"train.parallelism": ["fsdp", "ddp"]}


@pytest.mark.slow
def test_a_ddp_checkpoint_resumes_under_fsdp(straight, tmp_path):
    source, runs = straight
    resumed = _resume(tmp_path, "ddp-then-fsdp", source, runs["ddp"], "fsdp", 2)
    _assert_continues_like(resumed, runs["one"])
    _assert_continues_like(resumed, runs["ddp"])
    (session,) = read_history(resumed.train)
    assert session["changed"] == {"train.parallelism": ["ddp", "fsdp"]}
