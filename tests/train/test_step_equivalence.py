"""One optimizer step is the same whatever the micro-batch layout, and a model trained in bf16
autocast is exported in float32 (two gaps found by mutation testing)."""

from __future__ import annotations

import shutil

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from glotta.export.stage import run_export
from glotta.train.loop import run_train
from tests.conftest import tiny_recipe
from tests.train.conftest import fresh_run_with_shards

# AdamW's first step is about lr * sign(gradient), which turns float rounding in near-zero
# gradients into whole steps; a large epsilon makes the update proportional to the gradient,
# and a learning rate of 1 (no warmup) makes it as large as the gradient, so the weights after
# one step compare the accumulated gradients themselves.
ONE_STEP = (
    "train.max_steps=1", "train.eval_interval=0", "train.global_batch_size=16",
    "train.adam_eps=1.0", "train.learning_rate=1.0", "train.warmup_steps=0",
)  # fmt: skip


def _weights_after_one_step(tiny_run, tmp_path, name: str, micro: int) -> dict:
    recipe = tiny_recipe(*ONE_STEP, f"train.micro_batch_size={micro}")
    run_dir = fresh_run_with_shards(tmp_path, name, tiny_run[1], recipe)
    run_train(recipe.train, recipe.model, run_dir)
    return load_file(run_dir.checkpoints / "step_00000001" / "model.safetensors")


def test_1x16_and_2x8_accumulation_give_the_same_step(tiny_run, tmp_path):
    whole = _weights_after_one_step(tiny_run, tmp_path, "1x16", 16)
    split = _weights_after_one_step(tiny_run, tmp_path, "2x8", 8)
    assert whole.keys() == split.keys()
    for key in whole:
        torch.testing.assert_close(split[key], whole[key], rtol=1e-5, atol=1e-6, msg=key)


def test_a_bf16_trained_model_is_exported_in_float32(tiny_run, tmp_path):
    # One small step: bf16 is emulated (slow) on CPUs without native bf16.
    recipe = tiny_recipe(
        "train.max_steps=1", "train.eval_interval=0", "train.micro_batch_size=2",
        'train.precision="bf16"',
    )  # fmt: skip
    run_dir = fresh_run_with_shards(tmp_path, "bf16", tiny_run[1], recipe)
    shutil.copytree(tiny_run[1].tokenizer, run_dir.tokenizer)  # the export copies it
    run_train(recipe.train, recipe.model, run_dir)
    out = run_export(recipe.export, recipe.recipe, recipe.generate, run_dir)
    with safe_open(out / "model.safetensors", "pt") as weights:
        dtypes = {weights.get_slice(key).get_dtype() for key in weights.keys()}
    assert dtypes == {"F32"}
