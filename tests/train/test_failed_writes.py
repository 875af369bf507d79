"""A checkpoint write that fails for want of room (here a real file-size limit: writes past it
get EFBIG) ends with one line naming the file and the system's reason, exit status 2, leaves no
checkpoint that looks complete, and the next run resumes the intact one. Before, torch.save's
failure surfaced as "RuntimeError: ... unexpected pos" with a traceback."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pytest

from glotta.train.checkpoint import find_resume_checkpoint
from glotta.train.loop import run_train
from tests.conftest import tiny_recipe
from tests.test_cli_errors import assert_one_clear_line
from tests.train.conftest import fresh_run_with_shards

SETTINGS = ("train.checkpoint_interval=2", "train.eval_interval=0", "train.log_interval=1")


def _limited_glotta(limit: int, *args: str) -> subprocess.CompletedProcess:
    def limit_file_size():  # in the child: writes past `limit` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "glotta", *args], capture_output=True, text=True, timeout=600,
        preexec_fn=limit_file_size, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


# The tiny model's weights are ~1.9 MB, its optimizer state ~3.8 MB.
@pytest.mark.parametrize(
    "limit, failing", [(2_500_000, "training_state.pt"), (1_000_000, "model.safetensors")]
)
def test_a_checkpoint_that_cannot_be_written_is_one_line_and_never_trusted(
    limit, failing, tiny_run, tmp_path
):
    recipe = tiny_recipe(*SETTINGS, "train.max_steps=2")
    run_dir = fresh_run_with_shards(tmp_path, "run", tiny_run[1], recipe)
    run_train(recipe.train, recipe.model, run_dir)  # an intact step_00000002
    sets = [a for s in (*SETTINGS, "train.max_steps=4") for a in ("--set", s)]
    result = _limited_glotta(limit, "train", "--run-dir", str(run_dir.root), *sets)
    partial = run_dir.checkpoints / ".step_00000004.partial"
    # (stderr also holds the progress bar of the steps before the save)
    messages = [line for line in result.stderr.splitlines() if line.startswith("glotta:")]
    assert_one_clear_line(
        result.returncode, "\n".join(messages) + result.stderr * ("Traceback" in result.stderr),
        f"cannot write {partial / failing}: File too large", "ulimit -f",
    )  # fmt: skip
    assert not partial.exists() and not (run_dir.checkpoints / "step_00000004").exists()
    assert (run_dir.checkpoints / "LATEST").read_text().strip() == "step_00000002"
    resumed, damaged = find_resume_checkpoint(run_dir.checkpoints)
    assert resumed.name == "step_00000002" and damaged == []
    recipe = tiny_recipe(*SETTINGS, "train.max_steps=4")
    run_train(recipe.train, recipe.model, run_dir)  # with room again: resumes and finishes
    assert (run_dir.checkpoints / "LATEST").read_text().strip() == "step_00000004"
