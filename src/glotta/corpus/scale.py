"""The corpus stage's per-document work as datatrove tasks: local processes, Slurm or Ray.

    glotta corpus RECIPE --set corpus.executor=datatrove-local --set corpus.tasks=8
    glotta corpus RECIPE --set corpus.executor=slurm --set corpus.tasks=256 \\
        --set corpus.slurm_partition=cpu          # submits a job array and returns
    glotta corpus RECIPE --set corpus.executor=slurm ...  # same command again once it finished

Task ``i`` of ``T`` reads the ``i``-th contiguous block of the input files, runs the same
``DocumentProcessor`` as the local path and writes ``shards/<settings>/NNNNN.jsonl.gz``: one
line per input record, in input order (the kept text and its near-duplicate keys, or the drop
reason). datatrove records which tasks finished, so a re-run (after a crash, a pre-empted
Slurm job, or on purpose) runs only the rest. Once all tasks are done, this process merges the
shards in task order through the stage's one serial consumer (exact and near dedup, split,
writing). Because blocks are contiguous, the merged order is the input order, and the outputs
are identical to a local run whatever the executor and the number of tasks.

Where the tasks run, and what happens when one's process is killed: ``executors.py``.

The ``<settings>`` folder is named by a hash of the corpus settings, so shards written with
other settings are never mixed in.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from glotta.config import CorpusConfig
from glotta.corpus.inputs import resolve_inputs
from glotta.corpus.process import DocumentProcessor, Processed, worker_count
from glotta.corpus.readers import iter_documents
from glotta.corpus.settings import CorpusIdentity
from glotta.errors import GlottaError
from glotta.rundir import stage_fingerprint

SHARDS_DIR = "shards"

try:  # the scale extra; only this module needs it
    from datatrove.pipeline.base import PipelineStep
except ImportError:  # pragma: no cover - exercised only without the extra
    PipelineStep = object  # type: ignore[assignment,misc]


class CleanShard(PipelineStep):
    """A datatrove step: process this task's block of input files into one shard file."""

    name = "glotta corpus"
    type = "🧹 - CLEAN"

    def __init__(self, cfg: CorpusConfig, files: list[str], shard_dir: str):
        super().__init__()
        self.cfg, self.files, self.shard_dir = cfg, files, shard_dir

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        mine = task_files(self.files, rank, world_size)
        path = Path(self.shard_dir) / f"{rank:05d}.jsonl.gz"
        # A name of this process's own: a task re-run while an earlier attempt still writes
        # (an orphaned process of a killed worker) never shares its half-written file.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
        samples: Counter[str] = Counter()
        if mine:
            processor = DocumentProcessor(self.cfg)
            documents = iter_documents(dataclasses.replace(self.cfg, inputs=mine))
        else:
            processor, documents = None, iter(())
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as fh:
            for raw in documents:
                doc = processor(raw)
                if doc.drop:  # dropped text travels only as far as the samples file needs
                    samples[doc.drop] += 1
                    if samples[doc.drop] > self.cfg.dropped_samples:
                        doc.text = ""
                    self.stat_update(doc.drop)
                else:
                    self.stat_update("kept")
                fh.write(json.dumps(_to_record(doc), ensure_ascii=False) + "\n")
        tmp.replace(path)  # datatrove marks the task complete after this returns
        yield from ()


def task_files(files: list[str], rank: int, tasks: int) -> list[str]:
    """The ``rank``-th of ``tasks`` contiguous blocks of ``files`` (sizes differ by one at most)."""
    start, stop = len(files) * rank // tasks, len(files) * (rank + 1) // tasks
    return files[start:stop]


def run_sharded(cfg: CorpusConfig, out_dir: Path, identity: CorpusIdentity) -> Iterator[Processed]:
    """Run (or resume) the datatrove tasks, then stream their records back in input order."""
    if PipelineStep is object:
        raise GlottaError(
            f"corpus.executor = {cfg.executor!r} needs datatrove: pip install 'glotta[scale]'"
        )
    sources = resolve_inputs(cfg)
    if any(s.path is None for s in sources):
        raise GlottaError(
            "corpus.hf_dataset streams from one process; use corpus.executor = 'local' for it"
        )
    files = [str(s.path) for s in sources]
    tasks = cfg.tasks or len(files)
    shard_root = Path(out_dir) / SHARDS_DIR
    # Shards depend on the settings, the files' content and how files are split into tasks, not
    # on the executor: a task's shard of an edited file is never reused.
    settings = dataclasses.replace(identity.settings, tasks=tasks)
    shard_dir = (
        shard_root / stage_fingerprint(dataclasses.replace(identity, settings=settings))[:16]
    )
    for old in shard_root.glob("*"):  # shards of other settings can never be merged again
        if old != shard_dir:
            shutil.rmtree(old, ignore_errors=True)
    shard_dir.mkdir(parents=True, exist_ok=True)

    from glotta.corpus.executors import finish

    executor = _executor(cfg, [CleanShard(cfg, files, str(shard_dir))], tasks, shard_dir)
    failures = executor.run() or {}  # slurm: submits the job array and returns
    finish(failures)  # a task that raised (a damaged input file): its own message
    missing = executor.get_incomplete_ranks(range(tasks))
    if missing:
        raise GlottaError(_unfinished_message(cfg, missing, tasks, failures, shard_dir))
    for stale in shard_dir.glob("*.partial"):  # left by killed attempts
        stale.unlink(missing_ok=True)
    return _merge(shard_dir, tasks)


def _unfinished_message(cfg, missing: list[int], tasks: int, failures: dict, shard_dir) -> str:
    logs = shard_dir / "logs"
    if cfg.executor == "slurm":
        return (
            f"{len(missing)} of {tasks} corpus tasks have not finished (e.g. task {missing[0]}; "
            f"logs in {logs}); run the same command again when the Slurm job has finished "
            "(finished tasks are skipped)"
        )
    how = "; ".join(f"task {rank}: {failures[rank]}" for rank in missing if rank in failures)
    return (
        f"{len(missing)} of {tasks} corpus tasks did not finish ({how or f'e.g. task {missing[0]}'}"
        f"; logs in {logs}); run the same command again: finished tasks are skipped, "
        "unfinished ones start over"
    )


def _executor(cfg: CorpusConfig, pipeline: list, tasks: int, shard_dir: Path):
    logs = str(shard_dir / "logs")
    if cfg.executor == "datatrove-local":
        from glotta.corpus.executors import SupervisedLocalExecutor

        return SupervisedLocalExecutor(
            pipeline, tasks=tasks, workers=min(tasks, worker_count(cfg)), logging_dir=logs
        )
    if cfg.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        if not cfg.slurm_partition:
            raise GlottaError("corpus.executor = 'slurm' needs corpus.slurm_partition")
        return SlurmPipelineExecutor(
            pipeline,
            tasks=tasks,
            time=cfg.slurm_time,
            partition=cfg.slurm_partition,
            logging_dir=logs,
            job_name="glotta-corpus",
            venv_path=os.environ.get("VIRTUAL_ENV"),
        )
    from glotta.corpus.executors import GlottaRayExecutor  # executor == "ray"

    return GlottaRayExecutor(pipeline, tasks=tasks, logging_dir=logs)


def _merge(shard_dir: Path, tasks: int) -> Iterator[Processed]:
    for rank in range(tasks):
        path = shard_dir / f"{rank:05d}.jsonl.gz"
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    yield _from_record(json.loads(line))
        except (OSError, EOFError, ValueError) as exc:
            raise GlottaError(
                f"{path} is damaged ({exc}); delete {shard_dir} and run the stage again"
            ) from None


def _to_record(doc: Processed) -> dict:
    return {
        "s": doc.source,
        "t": doc.text,
        "d": doc.drop,
        "u": doc.replaced,
        "c": doc.encoding,
        "b": doc.bytes_in,
        "k": doc.band_keys,
        "e": dict(doc.events),
    }


def _from_record(r: dict) -> Processed:
    return Processed(r["t"], r["s"], r["d"], r["u"], r["c"], r["b"], r["k"], Counter(r["e"]))
