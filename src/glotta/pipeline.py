"""``glotta run RECIPE``: every stage in order, skipping the ones that already finished.

A stage is skipped when its folder holds a completion marker whose fingerprint matches the
current settings (chained with the stages before it). Change a corpus setting and everything
downstream runs again; change only the generation settings and only the export runs again.

A recipe whose ``[distill]`` names a teacher distills instead of training: the distill stage
writes the student into RUN_DIR/train, where eval and export find it as any trained model. A
recipe whose ``[ner]`` names a train_file fine-tunes the model for named entities after eval.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glotta.config import Recipe, recipe_to_dict
from glotta.errors import GlottaError
from glotta.recipe import dump_toml
from glotta.rundir import RunDir, chained_fingerprint, is_complete, read_marker, stage_fingerprint


@dataclass(frozen=True)
class Stage:
    name: str
    folder: Callable[[RunDir, Recipe], Path]
    # (config object, upstream stage folders) hashed into the stage's fingerprint; each stage's
    # entry function writes its marker from the same two things.
    fingerprint_inputs: Callable[[RunDir, Recipe], tuple[Any, list[Path]]]
    run: Callable[..., Any]  # (run_dir, recipe, resume) -> anything
    applies: Callable[[Recipe], bool] = lambda r: True  # e.g. distill replaces train


def _stages() -> list[Stage]:
    # Imported here so `glotta --help` stays fast and light stages don't import torch.
    from glotta.corpus import run_corpus
    from glotta.corpus.settings import corpus_identity
    from glotta.distill.stage import DistillStage, run_distill
    from glotta.evaluate.ner import run_ner_stage
    from glotta.evaluate.stage import run_eval
    from glotta.export.stage import ExportStage, export_upstream, run_export
    from glotta.tokenizer.pack import run_pack
    from glotta.tokenizer.stage import run_tokenizer
    from glotta.train.loop import TrainStage, run_train

    return [
        Stage(
            "corpus",
            lambda d, r: d.corpus,
            lambda d, r: (corpus_identity(r.corpus), []),
            lambda d, r: run_corpus(r.corpus, d.corpus),
        ),
        Stage(
            "tokenizer",
            lambda d, r: d.tokenizer,
            lambda d, r: (r.tokenizer, [d.corpus]),
            lambda d, r: run_tokenizer(r.tokenizer, d),
        ),
        Stage(
            "pack",
            lambda d, r: d.shards,
            lambda d, r: (r.pack, [d.tokenizer]),
            lambda d, r: run_pack(r.pack, d),
        ),
        Stage(
            "train",
            lambda d, r: d.train,
            lambda d, r: (TrainStage(r.train, r.model), [d.shards]),
            lambda d, r, resume="auto": run_train(r.train, r.model, d, resume=resume),
            applies=lambda r: not r.distill.teacher,
        ),
        Stage(
            "distill",
            lambda d, r: d.train,
            lambda d, r: (DistillStage(r.train, r.model, r.distill), [d.shards]),
            lambda d, r, resume="auto": run_distill(r.distill, d, r.train, r.model, resume=resume),
            applies=lambda r: bool(r.distill.teacher),
        ),
        Stage(
            "eval",
            lambda d, r: d.eval,
            lambda d, r: (r.eval, [d.train]),
            lambda d, r: run_eval(r.eval, d),
        ),
        Stage(
            "ner",
            lambda d, r: d.ner,
            lambda d, r: (r.ner, [d.train]),
            lambda d, r: run_ner_stage(r.ner, d),
            applies=lambda r: bool(r.ner.train_file),
        ),
        Stage(
            "export",
            lambda d, r: Path(r.export.out) if r.export.out else d.export,
            lambda d, r: (
                ExportStage(r.export, r.recipe, r.generate),
                export_upstream(d),
            ),
            lambda d, r: run_export(r.export, r.recipe, r.generate, d),
        ),
    ]


def default_run_dir(recipe: Recipe) -> Path:
    return Path("runs") / recipe.recipe.name


def save_recipe(recipe: Recipe, run_dir: RunDir) -> None:
    run_dir.root.mkdir(parents=True, exist_ok=True)
    (run_dir.root / "recipe.toml").write_text(dump_toml(recipe_to_dict(recipe)), encoding="utf-8")


# Which stages' outputs a stage reads: when one of them runs again, so must it.
DEPENDS = {
    "tokenizer": {"corpus"},
    "pack": {"tokenizer"},
    "train": {"pack"},
    "distill": {"pack"},
    "eval": {"train", "distill"},
    "ner": {"train", "distill"},
    "export": {"train", "distill", "eval", "ner"},
}


@dataclass(frozen=True)
class PlannedStage:
    name: str
    runs: bool
    reason: str  # why it runs, or "complete"


def plan_stages(recipe: Recipe, run_dir: RunDir, force: bool = False) -> list[PlannedStage]:
    """Which stages `glotta run` would run, and why, without running anything."""
    plan: list[PlannedStage] = []
    rerun: set[str] = set()
    for stage in _stages():
        if not stage.applies(recipe):
            continue
        folder = stage.folder(run_dir, recipe)
        upstream = sorted(DEPENDS.get(stage.name, set()) & rerun)
        if upstream:
            reason = f"runs after {' and '.join(upstream)}"
        elif read_marker(folder) is None:
            reason = "not run yet"
        elif not is_complete(
            folder, stage_fingerprint(*_flat(stage.fingerprint_inputs(run_dir, recipe)))
        ):
            reason = "settings or input files changed since it ran (its own or an earlier stage's)"
        elif force:
            reason = "--force"
        else:
            plan.append(PlannedStage(stage.name, False, "complete"))
            continue
        rerun.add(stage.name)
        plan.append(PlannedStage(stage.name, True, reason))
    return plan


def _flat(inputs: tuple[Any, list[Path]]) -> list[Any]:
    config, upstream = inputs
    return [config, *upstream]


def check_before_running(
    recipe: Recipe, run_dir: RunDir, plan: list[PlannedStage], resume: str = "auto"
) -> None:
    """Everything that can be known before the first stage runs: the recipe's problems, and
    checkpoints that new inputs would make stale (refused now, not after hours of corpus work)."""
    from glotta.validate import validate_recipe

    running = {p.name: p.reason for p in plan if p.runs}
    validate_recipe(recipe, run_dir.root, running)
    if resume != "auto" or not {"train", "distill"} & set(running):
        return
    recorded = _newest_checkpoint_inputs(run_dir)
    expected = _upstream_fingerprints(recipe)
    changed = [name for name in expected if recorded and recorded.get(name) != expected[name]]
    if changed:
        raise GlottaError(
            f"the {changed[0]} stage will run again with other settings or input files, so the "
            f"checkpoints in "
            f"{run_dir.checkpoints} would be stale: they were trained from the old "
            f"{' and '.join(changed)}. Start over in this folder with `glotta run --no-resume` "
            "(deletes the checkpoints), or keep them and use a new --run-dir"
        )


def _upstream_fingerprints(recipe: Recipe) -> dict[str, str]:
    """The corpus, tokenizer and shards fingerprints this recipe's stages will have."""
    from glotta.corpus.settings import corpus_identity

    corpus = chained_fingerprint(corpus_identity(recipe.corpus), [])
    tokenizer = chained_fingerprint(recipe.tokenizer, [corpus])
    return {
        "corpus": corpus,
        "tokenizer": tokenizer,
        "shards": chained_fingerprint(recipe.pack, [tokenizer]),
    }


def _newest_checkpoint_inputs(run_dir: RunDir) -> dict | None:
    """What the newest readable checkpoint was trained from (None: none, or none recorded)."""
    for folder in sorted(run_dir.checkpoints.glob("step_*"), reverse=True):
        try:
            state = json.loads((folder / "trainer_state.json").read_text())
            return (state.get("provenance") or {}).get("inputs")
        except (OSError, ValueError, AttributeError):
            continue  # damaged: the train stage names it and falls back
    return None


def run_recipe(
    recipe: Recipe, run_dir: RunDir, force: bool = False, resume: str = "auto"
) -> dict[str, float]:
    """Run all stages; returns seconds per stage (0 for skipped ones).

    ``resume`` goes to the train/distill stage: 'auto' continues its newest checkpoint when that
    was trained from the same inputs (else it stops and says so), 'never' starts over.
    """
    check_before_running(recipe, run_dir, plan_stages(recipe, run_dir, force), resume)
    save_recipe(recipe, run_dir)
    timings: dict[str, float] = {}
    for stage in _stages():
        if not stage.applies(recipe):
            continue
        config, upstream = stage.fingerprint_inputs(run_dir, recipe)
        expected = stage_fingerprint(config, *upstream)
        if not force and is_complete(stage.folder(run_dir, recipe), expected):
            print(f"== {stage.name}: already complete, skipped", flush=True)
            timings[stage.name] = 0.0
            continue
        print(f"== {stage.name}", flush=True)
        start = time.perf_counter()
        if stage.name in ("train", "distill"):
            stage.run(run_dir, recipe, resume)
        else:
            stage.run(run_dir, recipe)
        timings[stage.name] = time.perf_counter() - start
    return timings
