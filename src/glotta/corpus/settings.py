"""What the corpus stage's output depends on: the settings that change it (not those that only
change how the work is executed: workers, executor, tasks, Slurm) and the content of its input
files (:mod:`glotta.fingerprints`), so an input edited in place is a changed input."""

from __future__ import annotations

import dataclasses

from glotta.config import CorpusConfig
from glotta.errors import GlottaError
from glotta.fingerprints import files_record

EXECUTION_KEYS = ("workers", "executor", "tasks", "slurm_partition", "slurm_time")


def output_settings(cfg: CorpusConfig) -> CorpusConfig:
    """``cfg`` with the execution-only keys at their defaults."""
    defaults = CorpusConfig()
    return dataclasses.replace(cfg, **{key: getattr(defaults, key) for key in EXECUTION_KEYS})


@dataclasses.dataclass(frozen=True)
class CorpusIdentity:
    """What the corpus stage's fingerprint hashes: output settings and input files' content."""

    settings: CorpusConfig
    inputs: dict  # fingerprints.files_record of the local input files ({} files for a HF dataset)


def corpus_identity(cfg: CorpusConfig) -> CorpusIdentity:
    from glotta.corpus.inputs import resolve_inputs

    try:
        sources = resolve_inputs(cfg)
    except GlottaError as exc:  # a plan of a recipe with missing inputs: the check names them
        return CorpusIdentity(output_settings(cfg), {"unresolved": str(exc)})
    paths = [s.path for s in sources if s.path is not None]
    return CorpusIdentity(output_settings(cfg), files_record(paths, cfg.input_hash))
