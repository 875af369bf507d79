"""Damaged checkpoints: every way we could think of to break one, and what resuming does then.

The run either resumes from the newest intact checkpoint (saying which one was damaged and
where it was moved) or stops with a one-line message; it never shows a traceback, never deletes
an intact checkpoint and never overwrites the metrics log.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glotta.errors import GlottaError
from glotta.rundir import RunDir
from glotta.train.checkpoint import MANIFEST, checkpoint_problem
from glotta.train.loop import run_train
from tests.conftest import glotta, tiny_recipe
from tests.train.conftest import fresh_run_with_shards

SETTINGS = (
    "train.max_steps=6",
    "train.checkpoint_interval=2",
    "train.keep_checkpoints=5",
    "train.eval_interval=0",
    "train.log_interval=1",
)


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory) -> RunDir:
    """Six real steps with checkpoints at steps 2, 4 and 6."""
    _, source = tiny_run
    recipe = tiny_recipe(*SETTINGS)
    run_dir = fresh_run_with_shards(tmp_path_factory.mktemp("damage"), "straight", source, recipe)
    run_train(recipe.train, recipe.model, run_dir)
    return run_dir


def _copy(trained: RunDir, tmp_path: Path) -> RunDir:
    run_dir = RunDir(tmp_path / "run")
    shutil.copytree(trained.root, run_dir.root)
    return run_dir


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


STEP6 = "step_00000006"
CORRUPTIONS = {
    "truncated weights": lambda c: _truncate(c / STEP6 / "model.safetensors"),
    "flipped byte in weights": lambda c: _flip_byte(c / STEP6 / "model.safetensors"),
    "missing weights": lambda c: (c / STEP6 / "model.safetensors").unlink(),
    "truncated optimizer state": lambda c: _truncate(c / STEP6 / "training_state.pt"),
    "missing trainer state": lambda c: (c / STEP6 / "trainer_state.json").unlink(),
    "garbage trainer state": lambda c: (c / STEP6 / "trainer_state.json").write_text("{step: 6"),
    "garbage manifest": lambda c: (c / STEP6 / MANIFEST).write_text("not json"),
    "missing config": lambda c: (c / STEP6 / "config.json").unlink(),
}


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(
    how, trained, tmp_path, capsys
):
    run_dir = _copy(trained, tmp_path)
    CORRUPTIONS[how](run_dir.checkpoints)
    assert checkpoint_problem(run_dir.checkpoints / STEP6) is not None

    recipe = tiny_recipe(*SETTINGS)
    run_train(recipe.train, recipe.model, run_dir)

    out = capsys.readouterr()
    assert "step_00000006 is damaged" in out.err and "step_00000004" in out.err
    assert "resuming from" in out.out and "step_00000004 (step 4)" in out.out
    # The damaged folder is kept for the user, the intact ones are all still there.
    assert (run_dir.checkpoints / f"damaged-{STEP6}").is_dir()
    for name in ("step_00000002", "step_00000004", STEP6):
        assert checkpoint_problem(run_dir.checkpoints / name) is None
    # The two steps trained again give the very weights of the undamaged run.
    a = load_file(trained.checkpoints / STEP6 / "model.safetensors")
    b = load_file(run_dir.checkpoints / STEP6 / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The history records the fall-back.
    history = [json.loads(x) for x in (run_dir.train / "history.jsonl").read_text().splitlines()]
    assert history[-1]["resumed_from"] == "step_00000004"
    assert "damaged" in history[-1]["notes"][0]


def test_a_deleted_newest_folder_resumes_from_the_one_before_and_keeps_the_metrics(
    trained, tmp_path, capsys
):
    """Deleting the broken folder used to restart from step 0 and overwrite metrics.jsonl."""
    run_dir = _copy(trained, tmp_path)
    shutil.rmtree(run_dir.checkpoints / STEP6)  # LATEST still names it
    before = (run_dir.train / "metrics.jsonl").read_text().splitlines()

    recipe = tiny_recipe(*SETTINGS)
    run_train(recipe.train, recipe.model, run_dir)

    assert "step_00000004 (step 4)" in capsys.readouterr().out
    after = (run_dir.train / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in before if json.loads(line)["step"] <= 4]
    assert after[: len(kept)] == kept  # logged lines up to the resumed step, unchanged
    assert [json.loads(x)["step"] for x in after if "loss" in json.loads(x)] == [1, 2, 3, 4, 5, 6]
    assert (run_dir.checkpoints / "step_00000002").is_dir()


@pytest.mark.parametrize("latest", ["", "garbage\x00", "step_00000099"])
def test_an_unreadable_latest_pointer_still_resumes_the_newest_checkpoint(
    latest, trained, tmp_path, capsys
):
    run_dir = _copy(trained, tmp_path)
    (run_dir.checkpoints / "LATEST").write_text(latest)
    recipe = tiny_recipe(*SETTINGS, "train.max_steps=8")  # a longer run: a safe change
    run_train(recipe.train, recipe.model, run_dir)
    assert f"{STEP6} (step 6)" in capsys.readouterr().out
    assert (run_dir.checkpoints / "LATEST").read_text() == "step_00000008"


def test_a_line_cut_short_by_a_crash_does_not_break_the_metrics_log(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    with open(run_dir.train / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')
    recipe = tiny_recipe(*SETTINGS, "train.max_steps=7")
    run_train(recipe.train, recipe.model, run_dir)
    lines = (run_dir.train / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines if "loss" in json.loads(x)] == [*range(1, 8)]


def test_a_fresh_start_keeps_the_earlier_metrics_log(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    old = (run_dir.train / "metrics.jsonl").read_text()
    recipe = tiny_recipe(*SETTINGS, "train.max_steps=2")
    run_train(recipe.train, recipe.model, run_dir, resume="never")
    assert (run_dir.train / "metrics.jsonl.1").read_text() == old


def test_when_every_checkpoint_is_damaged_the_run_stops_with_one_clear_line(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    for folder in run_dir.checkpoints.glob("step_*"):
        _truncate(folder / "model.safetensors")
    sizes = {p: p.stat().st_size for p in run_dir.checkpoints.rglob("*") if p.is_file()}

    result = glotta("train", "--run-dir", str(run_dir.root))

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("glotta: error:")]
    assert "no intact checkpoint" in line and "--no-resume" in line and STEP6 in line
    # Nothing was deleted or moved: the user may still restore the files.
    assert {p: p.stat().st_size for p in run_dir.checkpoints.rglob("*") if p.is_file()} == sizes


def test_a_latest_naming_a_deleted_only_checkpoint_is_an_error_not_a_silent_restart(
    trained, tmp_path
):
    run_dir = _copy(trained, tmp_path)
    for folder in run_dir.checkpoints.glob("step_*"):
        shutil.rmtree(folder)
    recipe = tiny_recipe(*SETTINGS)
    with pytest.raises(GlottaError, match="names step_00000006, which is gone"):
        run_train(recipe.train, recipe.model, run_dir)
