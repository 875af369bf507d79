"""End to end: the tiny demo through every stage, the exported folder in plain transformers,
the model card, the CLI, skipping of finished stages, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from glotta.rundir import MARKER, is_complete
from tests.conftest import TINY_OVERRIDES, glotta


def test_every_stage_completes_and_the_model_beats_the_unigram_baseline(tiny_run):
    _, run_dir = tiny_run
    for folder in (
        run_dir.corpus,
        run_dir.tokenizer,
        run_dir.shards,
        run_dir.train,
        run_dir.eval,
        run_dir.export,
    ):
        assert is_complete(folder), folder
    rows = {r["kind"]: r for r in json.loads((run_dir.eval / "results.json").read_text())["rows"]}
    assert rows["model"]["bits_per_byte"] < rows["baseline"]["bits_per_byte"]
    assert rows["model"]["tokens"] == rows["baseline"]["tokens"] > 0


def test_exported_folder_works_in_plain_transformers(tiny_run):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    _, run_dir = tiny_run
    export = run_dir.export
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "README.md",
        "loss_curve.png",
    ):
        assert (export / name).is_file(), name
    assert not list(export.glob("*.bin")) and not list(export.glob("*.pt"))  # no pickles

    model = AutoModelForCausalLM.from_pretrained(export).eval()
    tokenizer = AutoTokenizer.from_pretrained(export)
    text = "Он долго бродил по городу, и никто не знал, куда он идёт."
    ids = tokenizer(text)["input_ids"]
    assert ids == Tokenizer.from_file(str(export / "tokenizer.json")).encode(text).ids
    assert tokenizer.decode(ids) == text

    # Same logits as the training checkpoint glotta evaluated (max abs difference <= 1e-4).
    from glotta.models import load_causal_lm
    from glotta.rundir import latest_checkpoint

    ours = load_causal_lm(latest_checkpoint(run_dir.checkpoints))
    inputs = torch.tensor([[model.config.eos_token_id, *ids]])
    with torch.no_grad():
        diff = (ours(input_ids=inputs).logits - model(input_ids=inputs).logits).abs().max()
    assert diff <= 1e-4

    generator = pipeline("text-generation", model=str(export), device="cpu")
    out = generator("Он долго", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert out.startswith("Он долго") and len(out) > len("Он долго")


def test_standalone_eval_on_the_exported_folder_matches_the_eval_stage(tiny_run, tmp_path):
    _, run_dir = tiny_run
    result = glotta(
        "eval",
        "--model",
        str(run_dir.export),
        "--text",
        str(run_dir.corpus / "test.jsonl"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    stage = json.loads((run_dir.eval / "results.json").read_text())["rows"][0]
    assert row["tokens"] == stage["tokens"] and row["bytes"] == stage["bytes"]
    assert row["bits_per_byte"] == pytest.approx(stage["bits_per_byte"], rel=1e-6)


def test_model_card_has_metadata_results_and_loss_curve(tiny_run):
    recipe, run_dir = tiny_run
    card = (run_dir.export / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["language"] == ["ru"] and meta["license"] == "mit"
    assert meta["widget"][0]["text"] == recipe.recipe.widget_text
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    evaluated = json.loads((run_dir.eval / "results.json").read_text())["rows"][0]
    assert metrics["perplexity"] == pytest.approx(evaluated["perplexity"], abs=1e-3)
    for heading in (
        "## Training data and cleaning",
        "## Tokenizer",
        "## Architecture",
        "## Training",
        "## Compute",
        "## Evaluation",
        "## Limitations",
    ):
        assert heading in body
    assert "unigram baseline" in body and "![Training and validation loss](loss_curve.png)" in body
    assert (run_dir.export / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_skips_finished_stages_and_reruns_what_changed(tiny_run, capsys):
    from glotta.pipeline import run_recipe
    from tests.conftest import tiny_recipe

    _, run_dir = tiny_run
    timings = run_recipe(tiny_recipe(), run_dir)
    assert all(seconds == 0 for seconds in timings.values())
    timings = run_recipe(tiny_recipe("generate.temperature=0.7"), run_dir)
    assert [k for k, v in timings.items() if v > 0] == ["export"]
    gen = json.loads((run_dir.export / "generation_config.json").read_text())
    assert gen["temperature"] == 0.7


def test_generate_streams_a_continuation(tiny_run):
    _, run_dir = tiny_run
    result = glotta(
        "generate",
        "--model",
        str(run_dir.export),
        "Он долго",
        "--max-new-tokens",
        "8",
        "--seed",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Он долго") and len(result.stdout.strip()) > len("Он долго")


def test_help_documents_every_option():
    from glotta.config import SECTIONS

    for command, sections in [
        ("corpus", ["corpus"]),
        ("tokenizer", ["tokenizer"]),
        ("train", ["train", "model"]),
        ("eval", ["eval"]),
        ("generate", ["generate"]),
        ("export", ["export"]),
    ]:
        out = glotta(command, "--help").stdout
        for section in sections:
            import dataclasses

            for field in dataclasses.fields(SECTIONS[section]):
                assert "--" + field.name.replace("_", "-") in out, (command, field.name)
    assert "run" in glotta("--help").stdout


def test_unknown_recipe_key_is_one_line_and_exit_2(tmp_path):
    result = glotta("run", "demo", "--run-dir", str(tmp_path / "r"), "--set", "train.lr=1")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown key 'train.lr'" in result.stderr


def test_corpus_empty_after_cleaning_leaves_nothing_finished(tmp_path):
    text = tmp_path / "short.txt"
    text.write_text("kort\n\nockså kort\n", encoding="utf-8")
    run_dir = tmp_path / "r"
    result = glotta(
        "run",
        "demo",
        "--run-dir",
        str(run_dir),
        "--set",
        f'corpus.inputs=["{text}"]',
        "--set",
        'corpus.format="txt"',
    )
    assert result.returncode == 2
    assert "short.txt" in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (run_dir / "corpus" / MARKER).exists()
    assert not (run_dir / "corpus" / "train.jsonl").exists()


def test_missing_input_file_is_named(tmp_path):
    result = glotta(
        "corpus",
        "demo",
        "--run-dir",
        str(tmp_path / "r"),
        "--set",
        'corpus.inputs=["/nonexistent/corpus.txt"]',
    )
    assert result.returncode == 2 and "/nonexistent/corpus.txt" in result.stderr


def test_stage_commands_chain_through_the_run_directory(tmp_path):
    """`glotta corpus RECIPE` then the other stages with only --run-dir (recipe.toml is reused)."""
    run_dir = tmp_path / "r"
    sets = [arg for o in TINY_OVERRIDES + ["train.max_steps=3"] for arg in ("--set", o)]
    assert glotta("corpus", "demo", "--run-dir", str(run_dir), *sets).returncode == 0
    for command in ("tokenizer", "pack", "train", "eval", "export"):
        result = glotta(command, "--run-dir", str(run_dir))
        assert result.returncode == 0, (command, result.stderr[-2000:])
    assert is_complete(run_dir / "export")
    assert json.loads((run_dir / "train" / "summary.json").read_text())["step"] == 3
