"""One writer per run folder: a second command that writes into a run folder in use is refused
with the holder named; read-only commands, torchrun's other ranks and a dead holder's lock do not
stand in the way. Before, two writers interleaved their markers, shards and checkpoints."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest

from glotta.runlock import LOCK_FILE, hold_run_dir, release_run_dirs
from tests.conftest import TINY_OVERRIDES
from tests.test_cli_errors import assert_one_clear_line, run_cli

TINY = [a for s in TINY_OVERRIDES for a in ("--set", s)]
_HOLD = (
    "import sys; from pathlib import Path; from glotta.runlock import hold_run_dir; "
    "hold_run_dir(Path(sys.argv[1]), 'train'); print('held', flush=True); sys.stdin.read()"
)


@pytest.fixture
def holder(tmp_path):
    """Another process holding tmp_path/run, as a `glotta train` there would."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout.readline() == "held\n"
    yield run, proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("command", ["corpus", "run"])
def test_a_second_writer_is_refused_naming_the_holder(command, holder, capsys):
    run, proc = holder
    code, _, err = run_cli(capsys, command, "demo", "--run-dir", str(run), *TINY)
    assert_one_clear_line(
        code, err, f"{run} is in use by another glotta process (pid {proc.pid} on ",
        "glotta train, since ", "another --run-dir",
    )  # fmt: skip
    assert not (run / "corpus").exists()


def test_read_only_commands_do_not_take_the_lock(holder, capsys):
    from glotta.cli import main

    run, _ = holder
    for argv in (
        ["status", "--run-dir", str(run)],
        ["check", "demo", "--run-dir", str(run), *TINY],
    ):
        with contextlib.suppress(SystemExit):
            main(argv)
        out = capsys.readouterr()
        assert "in use" not in out.err and "corpus" in out.out, argv


def test_a_killed_holder_leaves_no_lock_and_the_file_names_the_new_holder(holder, capsys):
    run, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    binary = run.parent / "photo.txt"
    binary.write_bytes(bytes(range(256)) * 64)
    code, _, err = run_cli(capsys, "corpus", "demo", "--run-dir", str(run), *TINY,
                           "--set", f'corpus.inputs=["{binary}"]')  # fmt: skip
    assert "in use" not in err and "photo.txt is not UTF-8 text" in err  # past the lock
    assert f"pid {os.getpid()} " in (run / LOCK_FILE).read_text()
    assert "glotta corpus" in (run / LOCK_FILE).read_text()


def test_only_rank_0_locks_under_torchrun(holder, monkeypatch):
    run, _ = holder
    monkeypatch.setenv("RANK", "1")
    hold_run_dir(run, "train")  # would be refused on rank 0
    release_run_dirs()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    hold_run_dir(tmp_path / "run", "run")
    hold_run_dir(tmp_path / "run", "corpus")  # `glotta run` calling a stage in-process
    release_run_dirs()
