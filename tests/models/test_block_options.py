"""Block options that still export: zero-initialised projections and an untied head, each
trained for real with Muon and warmup-stable-decay, exported, and loaded by plain
transformers with the checkpoint's logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glotta.models import build_model, family
from glotta.pipeline import run_recipe
from glotta.rundir import RunDir, latest_checkpoint
from glotta.validate import recipe_problems
from tests.conftest import tiny_recipe


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_zero_init_projections_start_every_block_as_the_identity(arch):
    recipe = tiny_recipe(f"model.arch={arch}", "model.zero_init_projections=true")
    model = build_model(recipe.model, "clm", 64, 16, {"eos": 0})
    projections = family(arch).residual_projections(model)
    assert len(projections) == 2 * model.config.num_hidden_layers
    assert all(not p.weight.any() for p in projections)
    # Nothing else starts at zero (the embeddings, the other matrices).
    zeroed = {id(p.weight) for p in projections}
    others = [p for p in model.parameters() if p.dim() == 2 and id(p) not in zeroed]
    assert all(p.any() for p in others)


def test_zero_init_projections_are_refused_where_they_cannot_apply():
    bert = tiny_recipe("model.arch=bert", "train.objective=mlm", "model.zero_init_projections=true")
    assert any("zero_init_projections" in p for p in recipe_problems(bert))
    assert not any(
        "zero_init_projections" in p
        for p in recipe_problems(tiny_recipe("model.zero_init_projections=true"))
    )


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_modern_options_export_with_the_checkpoints_logits(arch, tmp_path):
    from transformers import AutoModelForCausalLM

    from glotta.models import load_causal_lm

    recipe = tiny_recipe(
        f"model.arch={arch}", "model.zero_init_projections=true", "model.tie_embeddings=false",
        "train.optimizer=muon", "train.decay=wsd", "train.max_steps=12",
        "train.checkpoint_interval=12", "train.eval_interval=0",
    )  # fmt: skip
    run_dir = RunDir(Path(tmp_path))
    run_recipe(recipe, run_dir)
    exported = AutoModelForCausalLM.from_pretrained(run_dir.export).eval()
    assert not exported.config.tie_word_embeddings
    ours = load_causal_lm(latest_checkpoint(run_dir.checkpoints)).eval()
    head, embeddings = (
        exported.get_output_embeddings().weight,
        exported.get_input_embeddings().weight,
    )
    assert not torch.equal(head, embeddings)
    projections = family(arch).residual_projections(exported)
    assert all(p.weight.any() for p in projections)  # trained away from zero
    inputs = torch.randint(
        0, exported.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        diff = (ours(input_ids=inputs).logits - exported(input_ids=inputs).logits).abs().max()
    assert diff <= 1e-5
