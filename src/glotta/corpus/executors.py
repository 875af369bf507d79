"""Where the corpus stage's datatrove tasks run, and what happens when a task's process dies.

datatrove's own ``LocalPipelineExecutor`` and ``RayPipelineExecutor`` run each task in a
``multiprocess`` pool; when a pool process is killed (the OOM killer, a pre-empted node, a
user's ``kill -9``) the pool waits for its result forever, so the run hangs without a word
(seen with both executors). A killed Ray actor leaves its pool process running on as an orphan,
still writing the task's shard next to the retry. So glotta keeps datatrove's task machinery
(``_run_for_rank``: the task's log, its stats and the completion marker that lets a re-run skip
it) and starts the tasks itself, one process per task, watching each:

- ``datatrove-local``: one spawned process per task, ``corpus.workers`` at a time.
- ``ray``: one Ray task per corpus task, run inside the Ray worker process. Ray re-runs a task
  whose worker died up to ``RAY_TASK_RETRIES`` times.

A task that dies anyway is reported with how it died; the other tasks still run to the end,
and the same command run again does only the unfinished ones.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.connection import wait

from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor

from glotta.errors import GlottaError

RAY_TASK_RETRIES = 2  # Ray's re-runs of a task whose worker process died, within one run


class TaskFailed(Exception):
    """A corpus task raised an exception (not: its process died). Carries the message."""

    def __init__(self, rank: int, message: str, user_error: bool):
        super().__init__(message)
        self.rank, self.message, self.user_error = rank, message, user_error


def finish(failures: dict[int, str | TaskFailed]) -> None:
    """Raise the first task's own error; a task that died is left to the caller's count."""
    for problem in failures.values():
        if isinstance(problem, TaskFailed):
            if problem.user_error:  # a bad input file: the same message a local run gives
                raise GlottaError(problem.message)
            raise RuntimeError(f"corpus task {problem.rank} failed: {problem.message}")


class SupervisedLocalExecutor(LocalPipelineExecutor):
    """datatrove-local, each task in its own spawned process, watched by this one.

    ``run()`` returns ``{rank: what went wrong}`` for the tasks that did not finish.
    """

    def run(self) -> dict[int, str | TaskFailed]:
        ranks = self.get_incomplete_ranks(range(self.tasks))
        if not ranks:
            return {}
        self.save_executor_as_json()
        # spawn, not fork: the parent may hold threads (see process.py)
        context = multiprocessing.get_context("spawn")
        running: dict[int, tuple[int, multiprocessing.Process, object]] = {}
        failures: dict[int, str | TaskFailed] = {}
        try:
            while ranks or running:
                while ranks and len(running) < self.workers:
                    rank = ranks.pop(0)
                    receive, send = context.Pipe(duplex=False)
                    proc = context.Process(target=_local_task, args=(self, rank, send))
                    proc.start()
                    send.close()  # only the child writes; EOF here when it is gone
                    running[proc.sentinel] = (rank, proc, receive)
                for sentinel in wait(list(running)):
                    rank, proc, receive = running.pop(sentinel)
                    proc.join()
                    problem = _outcome(rank, proc.exitcode, receive)
                    receive.close()
                    if problem is not None:
                        failures[rank] = problem
        finally:  # Ctrl-C or an error here: no task process may outlive the command
            for _, proc, _ in running.values():
                proc.kill()
                proc.join()
        return failures


def _local_task(executor: SupervisedLocalExecutor, rank: int, send) -> None:
    try:
        executor._run_for_rank(rank)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        send.send((isinstance(exc, GlottaError), f"{type(exc).__name__}: {exc}", str(exc)))
        raise SystemExit(1) from None
    send.send(None)


def _outcome(rank: int, exitcode: int | None, receive) -> str | TaskFailed | None:
    try:
        message = receive.recv()
    except EOFError:  # the process died before it could say anything
        message = None
    if message is not None:
        user_error, described, plain = message
        return TaskFailed(rank, plain if user_error else described, user_error)
    if exitcode == 0:
        return None
    return died(exitcode)


def died(exitcode: int | None) -> str:
    """How a task process ended, in words: 'killed by SIGKILL' or 'exited with status 3'."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory, or killed by hand)" if name == "SIGKILL" else ""
        return f"its process was killed by {name}{hint}"
    if exitcode is None:  # reaped by someone else: how it ended is unknown
        return "its process ended without a result"
    return f"its process exited with status {exitcode}"


class GlottaRayExecutor(RayPipelineExecutor):
    """The ray executor: one Ray task per corpus task, in the Ray worker process itself.

    Connects to the cluster named by ``RAY_ADDRESS`` (``auto``: the one ``ray start`` started on
    this machine), or to the one this process already joined with ``ray.init``; without either,
    Ray starts a cluster on this machine's cores for the run.
    """

    def run(self) -> dict[int, str | TaskFailed]:
        import ray
        from ray.exceptions import RayError, RayTaskError

        ranks = self.get_incomplete_ranks(range(self.tasks))
        if not ranks:
            return {}
        if not ray.is_initialized():
            # Each task's log is in the logs folder; the terminal keeps glotta's own lines.
            ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False)
        self.save_executor_as_json()
        executor = ray.put(self)
        task = ray.remote(num_cpus=self.cpus_per_task, max_retries=RAY_TASK_RETRIES)(_ray_task)
        pending = {task.remote(executor, rank): rank for rank in ranks}
        failures: dict[int, str | TaskFailed] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            rank = pending.pop(done[0])
            try:
                ray.get(done[0])
            except RayTaskError as exc:  # the task itself raised
                cause = exc.cause
                user_error = isinstance(cause, GlottaError)
                text = str(cause) if user_error else f"{type(cause).__name__}: {cause}"
                failures[rank] = TaskFailed(rank, text, user_error)
            except RayError as exc:  # its worker process died more often than Ray re-runs it
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                failures[rank] = (
                    f"its Ray worker died {RAY_TASK_RETRIES + 1} times ({type(exc).__name__}"
                    + (f": {first}" if first else "")
                    + ")"
                )
        return failures


def _ray_task(executor: GlottaRayExecutor, rank: int) -> None:
    executor._run_for_rank(rank)
