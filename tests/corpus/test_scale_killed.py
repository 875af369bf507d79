"""A corpus task killed mid-run (SIGKILL, as the OOM killer does it) under datatrove-local and
under Ray on a local cluster: the run names the task and how it died and exits with status 2,
without a finished corpus; the same command again redoes only that task and writes exactly the
files a local run writes.

"Mid-run" is made certain, not timed: the killed task's input file is a named pipe (FIFO) that
the test feeds. The task's process opens it, reads half of the file's lines and waits for more;
the test finds that process (the one holding the FIFO open, among its own descendants), checks
that the task's shard is half written and kills it. For the re-run the FIFO is replaced by the
regular file with the same content, which the local reference run read.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from glotta.config import CorpusConfig
from glotta.corpus.executors import RAY_TASK_RETRIES
from glotta.corpus.scale import SHARDS_DIR
from glotta.corpus.stage import run_corpus
from glotta.errors import GlottaError
from glotta.rundir import MARKER
from tests.corpus.real_text import russian_contexts

TASKS = 3
HELD = 1  # the task whose input is the FIFO
FILTERS = dict(min_chars=40, near_dedup=True, valid_fraction=0.1, test_fraction=0.1)
OUTPUTS = ("train.jsonl", "valid.jsonl", "test.jsonl", "dropped_samples.jsonl")
WAIT_S = 180  # for a process to open the FIFO; generous for a loaded 2-core machine


def write_inputs(folder: Path) -> dict[Path, str]:
    """Three JSONL files of real Russian contexts; later files repeat and edit earlier texts, so
    exact and near-duplicates cross task boundaries."""
    texts = russian_contexts()[:540]
    texts += texts[:15] + [t + " Вот." for t in texts[15:30]] + ["Коротко."] * 3
    files = {}
    for i in range(TASKS):
        path = folder / f"part-{i}.jsonl"
        lines = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts[i::3])
        path.write_text(lines, encoding="utf-8")
        files[path] = lines
    return files


def recipe_args(files, run_dir: Path, executor: str) -> list[str]:
    sets = {
        "corpus.inputs": json.dumps([str(p) for p in files]),
        "corpus.executor": json.dumps(executor),
        "corpus.tasks": str(TASKS),
        "corpus.workers": "2",
        **{f"corpus.{k}": json.dumps(v) for k, v in FILTERS.items()},
    }
    return ["corpus", "--run-dir", str(run_dir)] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]  # fmt: skip


class Command:
    """``glotta corpus`` as a user runs it: a subprocess; its exit status and its error line."""

    def __init__(self, files, run_dir: Path, executor: str, env: dict | None):
        # A file, not a pipe: a pipe nobody reads while the test kills would fill and block.
        self.log = run_dir.with_name(f"{run_dir.name}-{time.monotonic_ns()}.log")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "glotta", *recipe_args(files, run_dir, executor)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def finish(self) -> tuple[int, str]:
        try:
            self.proc.wait(timeout=WAIT_S)
        finally:
            if self.alive():
                self.proc.kill()
                self.proc.wait()
        stderr = self.log.read_text("utf-8")
        assert "Traceback" not in stderr, stderr[-3000:]
        errors = [line for line in stderr.splitlines() if line.startswith("glotta: error: ")]
        assert len(errors) == (self.proc.returncode != 0), stderr[-3000:]
        return self.proc.returncode, errors[0].removeprefix("glotta: error: ") if errors else ""


class InProcess:
    """The same stage called in this process (no interpreter start-up: seconds, not tens)."""

    def __init__(self, files, run_dir: Path, executor: str, env: dict | None):
        cfg = CorpusConfig(inputs=[str(p) for p in files], executor=executor, tasks=TASKS, workers=2, **FILTERS)  # fmt: skip
        self.pool = ThreadPoolExecutor(1)
        self.future = self.pool.submit(run_corpus, cfg, run_dir / "corpus")

    def alive(self) -> bool:
        return not self.future.done()

    def finish(self) -> tuple[int, str]:
        try:
            self.future.result(timeout=WAIT_S)
            return 0, ""
        except GlottaError as exc:  # what the command line prints, with exit status 2
            return 2, str(exc)
        finally:
            self.pool.shutdown()


def kill_task_reading(fifo: Path, content: str, glotta, shard_dir: Path) -> str:
    """Wait until a task opens ``fifo``, feed it half of ``content``, SIGKILL the process that
    reads it while its shard is half written; return that process's name."""
    deadline = time.monotonic() + WAIT_S
    fd = None
    while fd is None:  # opening the write end without blocking succeeds once a reader is there
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            assert glotta.alive(), f"the run ended first: {glotta.finish()}"
            assert time.monotonic() < deadline, f"no task opened {fifo} in {WAIT_S} s"
            time.sleep(0.05)
    try:
        os.set_blocking(fd, True)
        data = content.encode("utf-8")
        os.write(fd, data[: data.index(b"\n", len(data) // 2) + 1])
        reader = None
        while reader is None:  # the descendant of this test holding the FIFO open
            reader = next((p for p in psutil.Process().children(recursive=True) if holds(p, fifo)), None)  # fmt: skip
            time.sleep(0.05)
            assert time.monotonic() < deadline, f"no process of this test holds {fifo}"
        partial = list(shard_dir.glob(f"{HELD:05d}.jsonl.gz.*.partial"))
        assert partial and not (shard_dir / f"{HELD:05d}.jsonl.gz").exists()  # mid-task
        name = reader.name()
        reader.send_signal(signal.SIGKILL)
        wait_dead(reader, deadline)
    finally:
        os.close(fd)  # after the kill: the dead reader never sees the end of the file
    return name


def wait_dead(process: psutil.Process, deadline: float) -> None:
    """Until ``process`` is dead, without reaping it (``Process.wait`` would, for a child of this
    process: then the run it belongs to could not learn how it ended)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        while process.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, f"{process} outlived SIGKILL"
            time.sleep(0.05)


def holds(process: psutil.Process, path: Path) -> bool:
    with contextlib.suppress(OSError, psutil.Error):
        fds = Path(f"/proc/{process.pid}/fd")
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    return False


def killed_then_rerun(tmp_path: Path, executor: str, kills: int, run=InProcess, env=None):
    """Reference local run; the run with task HELD killed ``kills`` times; the re-run.
    Returns the names of the killed processes and the failed run's error message."""
    files = write_inputs(tmp_path)
    inputs = [str(p) for p in files]
    reference = run_corpus(CorpusConfig(inputs=inputs, workers=1, **FILTERS), tmp_path / "local")

    fifo = list(files)[HELD]
    fifo.unlink()
    os.mkfifo(fifo)
    run_dir = tmp_path / "run"
    out = run_dir / "corpus"
    glotta = run(files, run_dir, executor, env)
    try:
        shard_dir = wait_for_shard_dir(out / SHARDS_DIR, glotta)
        killed = [kill_task_reading(fifo, files[fifo], glotta, shard_dir) for _ in range(kills)]
    finally:
        status, error = glotta.finish()
    assert status == 2, error
    assert error.startswith(f"1 of {TASKS} corpus tasks did not finish (task {HELD}: "), error
    assert error.endswith("finished tasks are skipped, unfinished ones start over"), error
    assert not (out / MARKER).exists()
    assert not any((out / name).exists() for name in OUTPUTS)
    assert not (shard_dir / f"{HELD:05d}.jsonl.gz").exists()
    done = sorted(p.name for p in (shard_dir / "logs" / "completions").iterdir())
    assert done == [f"{r:05d}" for r in range(TASKS) if r != HELD]
    finished = {r: (shard_dir / f"{r:05d}.jsonl.gz").stat().st_mtime_ns for r in range(TASKS) if r != HELD}  # fmt: skip

    # The input stays the same named pipe (an input's fingerprint covers what it is: a stream
    # re-created as a regular file would be a changed input), fed whole this time.
    feeder = threading.Thread(target=feed, args=(fifo, files[fifo]), daemon=True)
    feeder.start()
    assert run(files, run_dir, executor, env).finish() == (0, "")
    feeder.join(timeout=WAIT_S)
    # Only the killed task ran again; the finished ones were skipped, not redone.
    assert {r: (shard_dir / f"{r:05d}.jsonl.gz").stat().st_mtime_ns for r in finished} == finished
    assert not list(shard_dir.glob("*.partial"))
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    stats = json.loads((out / "stats.json").read_text("utf-8"))
    ignore = ("elapsed_seconds", "executor", "workers")
    assert {k: v for k, v in stats.items() if k not in ignore} == {
        k: v for k, v in reference.items() if k not in ignore
    }
    assert reference["dropped"]["duplicate"] >= 15 and reference["dropped"]["near_duplicate"] >= 10
    assert json.loads((out / MARKER).read_text("utf-8"))["stage"] == "corpus"
    return killed, error


def feed(fifo: Path, content: str) -> None:
    """Write ``content`` into ``fifo`` once a reader has opened it."""
    with open(fifo, "w", encoding="utf-8") as fh:  # blocks until the task opens the pipe
        fh.write(content)


def wait_for_shard_dir(shards: Path, glotta) -> Path:
    deadline = time.monotonic() + WAIT_S
    while not (shards.is_dir() and any(shards.iterdir())):
        assert glotta.alive(), f"the run ended first: {glotta.finish()}"
        assert time.monotonic() < deadline, f"{shards} was not created in {WAIT_S} s"
        time.sleep(0.05)
    (shard_dir,) = shards.iterdir()
    return shard_dir


@pytest.mark.parametrize("run", [InProcess, pytest.param(Command, marks=pytest.mark.slow)])
def test_datatrove_local_task_killed_then_rerun(tmp_path, run):
    killed, error = killed_then_rerun(tmp_path, "datatrove-local", kills=1, run=run)
    assert killed == ["python"]  # the task's own process, not glotta's
    assert "task 1: its process was killed by SIGKILL" in error


@pytest.mark.slow
def test_ray_worker_killed_then_rerun(tmp_path):
    """Ray on a local 2-CPU cluster that this test starts; glotta joins it through RAY_ADDRESS.
    Ray re-runs a task whose worker died RAY_TASK_RETRIES times within the run (each re-run is
    killed here too: the FIFO is opened again by a new worker); then glotta gives up on it."""
    import ray  # in the dev extra: this test runs wherever the suite does

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        kills = RAY_TASK_RETRIES + 1
        env = {"RAY_ADDRESS": address}
        killed, error = killed_then_rerun(tmp_path, "ray", kills, run=Command, env=env)
        assert len(killed) == kills and all(n.startswith("ray::") for n in killed), killed
        assert f"task 1: its Ray worker died {kills} times" in error, error
    finally:
        ray.shutdown()


def test_a_task_with_a_damaged_input_says_which_file(tmp_path):
    """A task that raises (not: dies) ends the run with that task's own message, as locally."""
    files = write_inputs(tmp_path)
    damaged = tmp_path / "part-1.jsonl.gz"
    packed = gzip.compress(files[tmp_path / "part-1.jsonl"].encode("utf-8"))
    damaged.write_bytes(packed[: len(packed) // 2])
    inputs = [str(tmp_path / "part-0.jsonl"), str(damaged), str(tmp_path / "part-2.jsonl")]
    cfg = CorpusConfig(inputs=inputs, executor="datatrove-local", tasks=TASKS, workers=2, **FILTERS)
    with pytest.raises(GlottaError, match=r"part-1\.jsonl\.gz is truncated or corrupt"):
        run_corpus(cfg, tmp_path / "run" / "corpus")
    assert not (tmp_path / "run" / "corpus" / MARKER).exists()
