"""Which corpus settings change the output (and so the stage's fingerprint) and which only
change how the work is executed (workers, executor, tasks, Slurm)."""

from __future__ import annotations

import dataclasses

from glotta.config import CorpusConfig

EXECUTION_KEYS = ("workers", "executor", "tasks", "slurm_partition", "slurm_time")


def output_settings(cfg: CorpusConfig) -> CorpusConfig:
    """``cfg`` with the execution-only keys at their defaults: what the stage fingerprint hashes."""
    defaults = CorpusConfig()
    return dataclasses.replace(cfg, **{key: getattr(defaults, key) for key in EXECUTION_KEYS})
