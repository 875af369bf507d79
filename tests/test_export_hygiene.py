"""The exported folder: ordinary file modes, precision as used, input file names without the
training machine's paths, and a warning when the model does not beat the unigram baseline."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
from pathlib import Path

from glotta.corpus import run_corpus
from glotta.evaluate.stage import run_eval
from glotta.export.stage import run_export
from glotta.rundir import MARKER, RunDir, is_complete
from glotta.train.loop import run_train
from tests.conftest import tiny_recipe


def test_an_undertrained_model_is_exported_with_a_visible_warning(tiny_run, tmp_path, capsys):
    _, source = tiny_run
    run_dir = RunDir(tmp_path / "run")
    for name in ("tokenizer", "shards"):
        shutil.copytree(source.root / name, run_dir.root / name)
    # The corpus read from absolute paths (the tiny run's pkg:// glob, resolved).
    package = Path(importlib.util.find_spec("rl_wsd_labeled").submodule_search_locations[0])
    pattern = str(package / "verbs" / "RuTenTen" / "*.txt")
    recipe = tiny_recipe(
        f'corpus.inputs=["{pattern}"]',
        "train.max_steps=1",
        "train.learning_rate=1e-5",
        "train.warmup_steps=0",
    )
    run_corpus(recipe.corpus, run_dir.corpus)
    run_train(recipe.train, recipe.model, run_dir)
    run_eval(recipe.eval, run_dir)
    capsys.readouterr()

    out = run_export(recipe.export, recipe.recipe, recipe.generate, run_dir)

    assert "does not beat the unigram baseline" in capsys.readouterr().err
    card = (out / "README.md").read_text()
    assert "> **Warning:** this model does not beat the unigram baseline" in card
    # Precision as used on this machine, never the setting 'auto'.
    assert "| precision | fp32 |" in card or "| precision | bf16 autocast |" in card
    # Inputs by file name: the absolute path of the training machine stays private.
    assert str(package) not in card and "`*.txt`" in card
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir() if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes
    # Only what a model folder needs: glotta's own bookkeeping (the stage marker) sits beside it.
    assert MARKER not in modes and "stats.json" not in modes
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(modes)
    assert is_complete(out) and (out.parent / f"export.{MARKER}").is_file()
    assert not out.with_name("export.partial").exists()


def test_a_trained_model_gets_no_warning(tiny_run):
    _, run_dir = tiny_run
    assert "Warning:" not in (run_dir.export / "README.md").read_text()
