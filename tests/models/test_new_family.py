"""A family registered from a test trains, resumes, evaluates and exports like a shipped one."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM

from glotta.models import family, register_family
from glotta.pipeline import run_recipe
from glotta.rundir import RunDir, latest_checkpoint
from glotta.train.loop import run_train
from tests.conftest import tiny_recipe
from tests.models.mistral_family import MistralFamily


def test_a_family_registered_from_a_test_runs_every_stage(tmp_path):
    register_family(MistralFamily())
    assert isinstance(family("test-mistral"), MistralFamily)
    settings = [
        'model.arch="test-mistral"',
        "train.max_steps=20",
        "train.checkpoint_interval=10",
        "train.eval_interval=10",
        "model.dropout=0.1",
    ]
    run_dir = RunDir(tmp_path / "run")
    run_recipe(tiny_recipe(*settings), run_dir)

    results = json.loads((run_dir.eval / "results.json").read_text())
    assert results["rows"][0]["bits_per_byte"] > 0
    export = run_dir.export
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["MistralForCausalLM"]
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    checkpoint = AutoModelForCausalLM.from_pretrained(latest_checkpoint(run_dir.checkpoints))
    ids = torch.tensor([[config["eos_token_id"], 5, 17, 42, 8]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, checkpoint.eval()(input_ids=ids).logits)
    card = (export / "README.md").read_text()
    assert "MistralForCausalLM" in card and "test-mistral" not in card.split("---")[1]

    # Resume: 10 more steps continue from step 20 (the data position and optimizer come back).
    longer = tiny_recipe(*settings[:1], "train.max_steps=30", *settings[2:])
    summary = run_train(longer.train, longer.model, run_dir, resume="always")
    assert summary["step"] == 30
    steps = [
        json.loads(x)["step"] for x in (run_dir.train / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(steps) and steps[-1] == 30
