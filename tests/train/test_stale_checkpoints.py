"""A run knows what it was trained from: stale checkpoints are refused, safe changes recorded.

Before: changing the corpus and running again resumed the old weights, trained 0 steps and
exported them under the new settings; another vocabulary size ended in a traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from glotta.corpus import run_corpus
from glotta.errors import GlottaError
from glotta.pipeline import run_recipe
from glotta.rundir import RunDir
from glotta.tokenizer.pack import run_pack
from glotta.tokenizer.stage import run_tokenizer
from glotta.train.loop import run_train
from tests.conftest import TINY_OVERRIDES, glotta, tiny_recipe


def _copy_run(tiny_run, tmp_path: Path, *folders: str) -> RunDir:
    _, source = tiny_run
    run_dir = RunDir(tmp_path / "run")
    run_dir.root.mkdir()
    for name in folders or [p.name for p in source.root.iterdir()]:
        src = source.root / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, run_dir.root / name)
    return run_dir


@pytest.mark.parametrize(
    "change, named",
    [
        ("corpus.valid_fraction=0.2", "the corpus stage will run again with other settings"),
        ("tokenizer.vocab_size=600", "the tokenizer stage will run again with other settings"),
    ],
)
def test_glotta_run_refuses_stale_checkpoints_before_any_stage_runs(
    change, named, tiny_run, tmp_path
):
    run_dir = _copy_run(tiny_run, tmp_path)
    corpus_marker = (run_dir.corpus / "COMPLETE.json").read_text()
    with pytest.raises(GlottaError) as error:
        run_recipe(tiny_recipe(change), run_dir)
    message = str(error.value)
    assert named in message and "--no-resume" in message and "--run-dir" in message
    # Refused up front: the corpus stage did not run, the checkpoints are all there.
    assert (run_dir.corpus / "COMPLETE.json").read_text() == corpus_marker
    assert (run_dir.checkpoints / "step_00000200").is_dir()


def test_glotta_run_no_resume_trains_the_changed_recipe_from_scratch(tiny_run, tmp_path):
    run_dir = _copy_run(tiny_run, tmp_path)
    sets = [*TINY_OVERRIDES, "corpus.valid_fraction=0.2", "train.max_steps=3"]
    args = [a for s in sets for a in ("--set", s)]
    result = glotta("run", "demo", "--run-dir", str(run_dir.root), "--no-resume", *args)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir.train / "summary.json").read_text())
    assert summary["step"] == 3
    assert not (run_dir.checkpoints / "step_00000200").exists()


def test_glotta_train_refuses_a_checkpoint_trained_on_another_corpus(tiny_run, tmp_path):
    """The stages re-run one by one (glotta corpus / tokenizer / pack), then glotta train."""
    run_dir = _copy_run(tiny_run, tmp_path, "corpus", "tokenizer", "shards", "train")
    recipe = tiny_recipe("corpus.valid_fraction=0.2")
    run_corpus(recipe.corpus, run_dir.corpus)
    run_tokenizer(recipe.tokenizer, run_dir)
    run_pack(recipe.pack, run_dir)
    with pytest.raises(GlottaError) as error:
        run_train(recipe.train, recipe.model, run_dir)
    message = str(error.value)
    assert "step_00000200" in message
    assert "the corpus changed (and with it the tokenizer and shards)" in message
    assert "--no-resume" in message and "--run-dir" in message


def test_changed_training_settings_are_refused_and_named(tiny_run, tmp_path):
    run_dir = _copy_run(tiny_run, tmp_path, "corpus", "tokenizer", "shards", "train")
    recipe = tiny_recipe("train.learning_rate=1e-3", "model.dropout=0.1")
    with pytest.raises(GlottaError) as error:
        run_train(recipe.train, recipe.model, run_dir)
    message = str(error.value)
    assert "train.learning_rate was 0.003, is now 0.001" in message
    assert "model.dropout was 0.0, is now 0.1" in message


def test_safe_changes_are_allowed_recorded_and_shown_on_the_card(tiny_run, tmp_path):
    from glotta.export.stage import run_export

    run_dir = _copy_run(tiny_run, tmp_path)
    recipe = tiny_recipe("train.max_steps=202", "train.log_interval=1", "train.eval_interval=0")
    run_train(recipe.train, recipe.model, run_dir)

    summary = json.loads((run_dir.train / "summary.json").read_text())
    assert summary["step"] == 202
    last = [json.loads(x) for x in (run_dir.train / "history.jsonl").read_text().splitlines()][-1]
    assert last["resumed_from"] == "step_00000200"
    assert last["changed"]["train.max_steps"] == [200, 202]
    assert last["changed"]["train.log_interval"] == [5, 1]
    card = run_export(recipe.export, recipe.recipe, recipe.generate, run_dir) / "README.md"
    text = card.read_text()
    assert "Training was interrupted and resumed: resumed at step 200 (" in text
    assert "max_steps 200 → 202" in text and "log_interval 5 → 1" in text
    assert "| precision | fp32 |" in text or "| precision | bf16 autocast |" in text


def test_glotta_run_predicts_the_fingerprints_the_stages_write(tiny_run):
    """The up-front refusal compares with fingerprints computed before any stage runs: they must
    be the ones the stages then write, or every run with checkpoints would be refused."""
    from glotta.pipeline import _upstream_fingerprints
    from glotta.train.provenance import upstream_fingerprints

    recipe, run_dir = tiny_run
    assert _upstream_fingerprints(recipe) == upstream_fingerprints(run_dir)
