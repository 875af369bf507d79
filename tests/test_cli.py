"""The command line, one subcommand at a time, with its options written out here by hand (not
read from the config dataclasses the parser is built from, so a dropped or renamed option fails).

Also: `recipes`, `compare`, `--no-resume`, several models in one `eval` table, `eval --model`
with a recipe and with `--run-dir`, SIGINT during training, `precision = "auto"`, and the BERT
size presets against their published and their by-hand parameter counts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib

import pytest
import torch

from glotta.cli import main
from glotta.config import ModelConfig, TrainConfig
from glotta.models import build_masked_lm, count_parameters
from glotta.rundir import is_complete, latest_checkpoint
from tests.conftest import glotta, tiny_recipe
from tests.train.conftest import fresh_run_with_shards

# Each subcommand's own options and a few of its recipe sections' flags, as a user types them.
OPTIONS = {
    "corpus": ["--run-dir", "--set", "--inputs", "--format", "--min-chars", "--languages",
               "--near-dedup", "--scrub-pii", "--quality-filter", "--workers", "--valid-fraction"],
    "tokenizer": ["--run-dir", "--set", "--input", "--out", "--kind", "--vocab-size",
                  "--pretrained", "--trim-vocab", "--byte-fallback", "--special-tokens"],
    "pack": ["--run-dir", "--set", "--threads", "--batch-documents"],
    "train": ["--run-dir", "--set", "--resume", "--no-resume", "--objective", "--block-size",
              "--micro-batch-size", "--global-batch-size", "--max-steps", "--learning-rate",
              "--precision", "--activation-checkpointing", "--parallelism", "--arch", "--preset",
              "--init-from", "--phases"],
    "distill": ["--run-dir", "--resume", "--no-resume", "--teacher", "--alpha-ce", "--alpha-clm",
                "--alpha-cos", "--temperature", "--alpha-hidden", "--alpha-attention",
                "--layer-map", "--student-layers", "--freeze-embeddings", "--teacher-dtype"],
    "compare": ["--run-dir", "--teacher", "--model", "--scratch", "--text", "--tokenizer",
                "--speed-tokens", "--json", "--stride", "--batch-size"],
    "eval": ["--run-dir", "--model", "--text", "--tokenizer", "--json", "--split", "--stride",
             "--batch-size", "--unigram-baseline"],
    "eval-ner": ["--run-dir", "--train", "--test", "--json", "--train-file", "--test-file",
                 "--test-sentences", "--scheme", "--model", "--epochs", "--seeds", "--max-length"],
    "generate": ["--run-dir", "--model", "--tokenizer", "--max-new-tokens", "--temperature",
                 "--top-k", "--top-p", "--repetition-penalty", "--seed"],
    "export": ["--run-dir", "--set", "--out", "--tags"],
    "run": ["--run-dir", "--set", "--force", "--sample"],
    "trim-vocab": ["--model", "--input", "--out", "--min-count", "--keep-characters",
                   "--no-keep-characters"],
    "recipes": [],
}  # fmt: skip


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``glotta ARGS`` in this process (the real entry point, without a new interpreter):
    (exit status, stdout, stderr)."""
    status = 0
    try:
        main(list(args))
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return status, out.out, out.err


def test_every_subcommand_is_listed_and_documents_its_options(capsys):
    status, top, _ = cli(capsys, "--help")
    assert status == 0
    for command, options in OPTIONS.items():
        assert command in top, command
        status, text, err = cli(capsys, command, "--help")
        assert status == 0, (command, err)
        for option in options:
            assert option in text, (command, option)
    assert "--train-file" in cli(capsys, "eval", "ner", "--help")[1]  # the two-word spelling


def test_recipes_lists_every_shipped_recipe_and_prints_one():
    listed = glotta("recipes")
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    for name in ("demo", "demo-bert", "swedish-gpt2-wiki40b", "swedish-mbert-distilled",
                 "japanese-gpt2-small", "japanese-gpt2-distilled", "rugpt3-large"):  # fmt: skip
        assert name in names
    printed = glotta("recipes", "demo-bert")
    assert printed.returncode == 0
    assert tomllib.loads(printed.stdout)["train"]["objective"] == "mlm"
    missing = glotta("recipes", "no-such-recipe")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "no-such-recipe" in missing.stderr and "demo-bert" in missing.stderr


def test_no_resume_starts_over_and_resume_with_no_resume_is_an_error(tiny_run, tmp_path, capsys):
    _, source = tiny_run
    recipe = tiny_recipe("train.max_steps=2", "train.eval_interval=0", "train.log_interval=1")
    run_dir = fresh_run_with_shards(tmp_path, "r", source, recipe)
    assert cli(capsys, "train", "--run-dir", str(run_dir.root))[0] == 0
    first = (run_dir.checkpoints / "step_00000002" / "model.safetensors").read_bytes()
    status, out, err = cli(capsys, "train", "--run-dir", str(run_dir.root), "--no-resume")
    assert status == 0, err[-2000:]
    assert "resuming" not in out
    rows = [json.loads(x) for x in (run_dir.train / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]  # a new log from step 1
    # the same seed from scratch: the same weights again
    assert (run_dir.checkpoints / "step_00000002" / "model.safetensors").read_bytes() == first
    status, _, err = cli(capsys, "train", "--run-dir", str(run_dir.root), "--resume", "--no-resume")
    assert status == 2 and "contradict" in err
    # without either flag, a finished run resumes from its last checkpoint (and has nothing to do)
    status, out, _ = cli(capsys, "train", "--run-dir", str(run_dir.root))
    assert status == 0 and "resuming from" in out


def test_sigint_saves_a_checkpoint_and_exits_2(tiny_run, tmp_path):
    """Ctrl-C during training: the step finishes, a checkpoint is saved, exit status 2."""
    _, source = tiny_run
    recipe = tiny_recipe("train.max_steps=400", "train.checkpoint_interval=1000",
                         "train.eval_interval=0", "train.log_interval=1")  # fmt: skip
    run_dir = fresh_run_with_shards(tmp_path, "int", source, recipe)
    process = subprocess.Popen(
        [sys.executable, "-m", "glotta", "train", "--run-dir", str(run_dir.root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )  # fmt: skip
    metrics = run_dir.train / "metrics.jsonl"
    while process.poll() is None and not (
        metrics.is_file() and metrics.read_text().count("\n") >= 3
    ):
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 2
    stderr = process.stderr.read()
    assert "stopped by signal at step" in stderr and "Traceback" not in stderr
    latest = latest_checkpoint(run_dir.checkpoints)
    assert latest is not None and 3 <= int(latest.name.split("_")[1]) < 400
    assert not is_complete(run_dir.train)


def test_eval_table_of_several_models_and_the_recipe_it_is_given(tiny_run, tmp_path):
    _, run_dir = tiny_run
    text = tmp_path / "held-out.txt"
    lines = (run_dir.corpus / "test.jsonl").read_text("utf-8").splitlines()[:15]
    text.write_text("\n\n".join(json.loads(line)["text"] for line in lines), "utf-8")
    early = tmp_path / "early"
    shutil.copytree(run_dir.checkpoints / "step_00000100", early)
    final = tmp_path / "final"
    shutil.copytree(run_dir.export, final)
    common = ["--model", str(early), "--model", str(final), "--text", str(text),
              "--tokenizer", str(run_dir.tokenizer)]  # fmt: skip
    result = glotta("eval", *common, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == [str(early), str(final)]
    assert rows[0]["tokens"] == rows[1]["tokens"] and rows[0]["bytes"] == rows[1]["bytes"]
    assert rows[1]["perplexity"] < rows[0]["perplexity"]  # 200 steps beat 100
    table = glotta("eval", *common).stdout
    assert table.count(f"{rows[0]['perplexity']:.2f}") == 1
    assert table.count(f"{rows[1]['perplexity']:.2f}") == 1

    # a recipe's [eval] settings apply to --model: a shorter stride (more history) changes the score
    recipe = tmp_path / "stride.toml"
    recipe.write_text("[eval]\nstride = 8\nbatch_size = 32\n", "utf-8")
    strided = glotta("eval", str(recipe), *common, "--json")
    assert strided.returncode == 0, strided.stderr[-2000:]
    assert json.loads(strided.stdout)[1]["nll_nats"] != rows[1]["nll_nats"]

    # --run-dir and --model are two different things: an error, not a silently ignored option
    both = glotta("eval", *common, "--run-dir", str(run_dir.root))
    assert both.returncode == 2 and "--run-dir" in both.stderr and "Traceback" not in both.stderr


def test_compare_teacher_student_and_scratch_from_the_command_line(tiny_run, tmp_path):
    _, run_dir = tiny_run
    text = tmp_path / "held-out.txt"
    lines = (run_dir.corpus / "test.jsonl").read_text("utf-8").splitlines()[:10]
    text.write_text("\n\n".join(json.loads(line)["text"] for line in lines), "utf-8")
    early = tmp_path / "early"
    shutil.copytree(run_dir.checkpoints / "step_00000100", early)
    result = glotta(
        "compare", "--teacher", str(run_dir.export), "--model", str(run_dir.export),
        "--scratch", str(early), "--text", str(text), "--tokenizer", str(run_dir.tokenizer),
        "--speed-tokens", "4", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)["rows"]
    assert [r["role"] for r in rows] == ["teacher", "distilled", "scratch"]
    assert rows[1]["bits_per_byte"] == pytest.approx(rows[0]["bits_per_byte"])
    assert rows[1]["retention_percent"] == pytest.approx(100.0)
    # retention = teacher bits per byte / model bits per byte: below 100% for the weaker model
    expected = 100 * rows[0]["bits_per_byte"] / rows[2]["bits_per_byte"]
    assert rows[2]["retention_percent"] == pytest.approx(expected) and expected < 100
    nothing = glotta("compare", "--teacher", str(run_dir.export), "--text", str(text))
    assert nothing.returncode == 2 and "--model" in nothing.stderr


def test_precision_auto_considers_bf16_only_where_the_hardware_has_it():
    from glotta.train.plan import autocast_dtype

    cpu = torch.device("cpu")
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert autocast_dtype(TrainConfig(precision="auto"), cpu) == (
        torch.bfloat16 if native else None
    )
    assert autocast_dtype(TrainConfig(precision="fp32"), cpu) is None
    assert autocast_dtype(TrainConfig(precision="bf16"), cpu) is torch.bfloat16


def test_train_with_precision_auto_runs_from_the_command_line(tiny_run, tmp_path):
    _, source = tiny_run
    recipe = tiny_recipe("train.max_steps=2", "train.eval_interval=0")
    run_dir = fresh_run_with_shards(tmp_path, "auto", source, recipe)
    result = glotta("train", "--run-dir", str(run_dir.root), "--precision", "auto")
    assert result.returncode == 0, result.stderr[-2000:]
    saved = (run_dir.root / "recipe.toml").read_text()
    assert 'precision = "auto"' in saved and is_complete(run_dir.train)


def _bert_parameters(layers: int, hidden: int, vocab: int = 30522, positions: int = 512) -> int:
    """BERT with a tied masked-LM head, counted by hand (Devlin et al. 2019, section 3)."""
    embeddings = (vocab + positions + 2) * hidden + 2 * hidden  # words, positions, types, norm
    attention = 4 * (hidden * hidden + hidden) + 2 * hidden  # q, k, v, output, norm
    feed_forward = 2 * 4 * hidden * hidden + 4 * hidden + hidden + 2 * hidden  # up, down, norm
    head = hidden * hidden + hidden + 2 * hidden + vocab  # transform, norm, output bias
    return embeddings + layers * (attention + feed_forward) + head


@pytest.mark.parametrize(
    "preset, layers, hidden, millions",
    [("tiny", 2, 128, 4.4), ("mini", 4, 256, 11.3), ("small", 4, 512, 29.1),
     ("medium", 8, 512, 41.7), ("base", 12, 768, 110), ("large", 24, 1024, 340)],
)  # fmt: skip
def test_bert_presets_have_the_published_sizes(preset, layers, hidden, millions):
    """Turc et al. (2019) and Devlin et al. (2019) sizes; built on the meta device (no memory)."""
    with torch.device("meta"):
        model = build_masked_lm(
            ModelConfig(arch="bert", preset=preset), 30522, 512, {"pad": 0, "cls": 2, "sep": 3}
        )
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (layers, hidden)
    assert model.config.num_attention_heads * 64 == hidden
    assert count_parameters(model) == _bert_parameters(layers, hidden)
    # the published counts are rounded (BERT-large's "340M" is 335M plus a 1M pooler)
    assert abs(count_parameters(model) / 1e6 / millions - 1) < 0.015
