"""`glotta check RECIPE` (what a run would do) and `glotta status --run-dir DIR` (where it stands).

Both only read: nothing is trained, written or deleted.
"""

from __future__ import annotations

import glob
import json
import math
import os
from pathlib import Path

from glotta.config import Recipe, recipe_to_dict
from glotta.recipe import dump_toml
from glotta.rundir import RunDir, is_complete, latest_checkpoint, read_marker

# Rough UTF-8 bytes per token of a trained BPE (3.5-4.5 on European text, less on Japanese);
# only used before the corpus has been packed, and said to be a rough guess.
BYTES_PER_TOKEN = 4.0


def _input_bytes(recipe: Recipe) -> int | None:
    from glotta.corpus.inputs import resolve_inputs
    from glotta.errors import GlottaError

    try:
        sources = resolve_inputs(recipe.corpus)
    except GlottaError:
        return None
    if any(s.path is None for s in sources):
        return None  # a hub dataset: size unknown here
    return sum(os.path.getsize(s.path) for s in sources)


def estimate(recipe: Recipe, run_dir: RunDir) -> list[str]:
    """Tokens in the train split and optimizer steps: measured when shards exist, else guessed."""
    t = recipe.train
    meta_path = run_dir.shards / "meta.json"
    if is_complete(run_dir.shards) and meta_path.is_file():
        tokens = json.loads(meta_path.read_text())["splits"]["train"]["tokens"]
        source = f"{tokens:,} tokens in the packed train split"
    else:
        size = _input_bytes(recipe)
        if size is None:
            return ["tokens: unknown until the corpus is read (hub dataset or missing inputs)"]
        tokens = int(size * (1 - recipe.corpus.valid_fraction - recipe.corpus.test_fraction)
                     / BYTES_PER_TOKEN)  # fmt: skip
        source = (
            f"~{tokens:,} train tokens (rough: {size:,} input bytes / {BYTES_PER_TOKEN:g} "
            "bytes per token, before cleaning; compressed inputs hold more)"
        )
    global_batch = t.global_batch_size or t.micro_batch_size * t.gradient_accumulation_steps
    if global_batch <= 0 or t.block_size <= 0 or t.max_steps < 0:
        return [source, "train: steps unknown until the [train] problems below are fixed"]
    blocks = tokens // (t.block_size + 1)
    steps = t.max_steps or max(1, math.ceil(t.epochs * blocks / global_batch))
    return [
        source,
        f"train: {steps:,} optimizer steps x {global_batch} sequences x {t.block_size} tokens = "
        f"{steps * global_batch * t.block_size:,} tokens"
        + (" (one process; under torchrun the global batch is kept)" if t.global_batch_size else "")
        + ("" if t.max_steps else f" ({t.epochs:g} epochs)"),
    ]


def format_check(recipe: Recipe, run_dir: RunDir, force: bool = False) -> tuple[str, list[str]]:
    """The text to print (resolved recipe, plan, estimate, problems) and the problems."""
    from glotta.pipeline import plan_stages
    from glotta.validate import recipe_problems

    lines = [f"# resolved recipe (run directory {run_dir.root})", dump_toml(recipe_to_dict(recipe))]
    plan = plan_stages(recipe, run_dir, force)
    problems = recipe_problems(recipe, run_dir.root, [p.name for p in plan if p.runs])
    lines.append("# stages")
    for p in plan:
        lines.append(f"  {p.name:<10} {'runs' if p.runs else 'skipped'}: {p.reason}")
    lines.append("# estimate")
    lines.extend(f"  {line}" for line in estimate(recipe, run_dir))
    if problems:
        lines.append(f"# {len(problems)} problems")
        lines.extend(f"  {line}" for line in problems)
    else:
        lines.append("# no problems found")
    return "\n".join(lines), problems


def format_status(run_dir: RunDir) -> str:
    """Stages done (and when), training step, best validation loss, evaluation results."""
    from glotta.train.provenance import read_history

    if not run_dir.root.is_dir():
        from glotta.errors import GlottaError

        raise GlottaError(f"--run-dir {run_dir.root}: no such folder")
    lines = [f"run directory {run_dir.root}"]
    for name in ("corpus", "tokenizer", "shards", "train", "eval", "ner", "export"):
        marker = read_marker(run_dir.root / name)
        if marker is not None:
            lines.append(f"  {name:<10} complete ({marker.get('stage', name)}, "
                         f"{marker.get('finished_at', '?')})")  # fmt: skip
        elif (run_dir.root / name).is_dir():
            lines.append(f"  {name:<10} started, not finished")
        else:
            lines.append(f"  {name:<10} not run")
    newest = _newest_checkpoint(run_dir)
    if newest is not None:
        try:
            state = json.loads((newest / "trainer_state.json").read_text())
            best = state.get("best_val_loss")
            lines.append(
                f"training: step {state['step']:,} ({newest.name}), {state['tokens_seen']:,} "
                f"tokens seen, last train loss {state['last_train_loss']:.4f}, best validation "
                f"loss {'-' if best is None else f'{best:.4f}'}"
            )
        except (OSError, ValueError, KeyError, TypeError):
            lines.append(f"training: newest checkpoint {newest.name} is unreadable")
    damaged = sorted(p.name for p in run_dir.checkpoints.glob("damaged-*"))
    if damaged:
        lines.append(f"damaged checkpoints set aside: {', '.join(damaged)}")
    sessions = read_history(run_dir.train)
    if sessions:
        resumed = sum(1 for s in sessions if s.get("resumed_from"))
        lines.append(f"training sessions: {len(sessions)} ({resumed} resumed)")
    results = run_dir.eval / "results.json"
    if results.is_file():
        try:
            data = json.loads(results.read_text())
            model = data.get("model", data)
            shown = {k: model[k] for k in ("perplexity", "bits_per_byte") if k in model}
            if shown:
                lines.append("eval: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        except (OSError, ValueError, AttributeError):
            pass
    return "\n".join(lines)


def _newest_checkpoint(run_dir: RunDir) -> Path | None:
    named = latest_checkpoint(run_dir.checkpoints)
    if named is not None:
        return named
    steps = sorted(glob.glob(str(run_dir.checkpoints / "step_*")))
    return Path(steps[-1]) if steps else None
