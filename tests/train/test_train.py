"""Training: step planning, schedule, data order, resume to the bit, and that loss goes down."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from glotta.config import TrainConfig
from glotta.errors import GlottaError
from glotta.train.data import DataPosition, EpochSampler, rank_slice
from glotta.train.loop import plan_steps, run_train
from glotta.train.optim import lr_multiplier
from tests.conftest import tiny_recipe
from tests.train.conftest import fresh_run_with_shards


def test_plan_derives_accumulation_from_the_global_batch():
    cfg = TrainConfig(micro_batch_size=4, global_batch_size=32)
    plan = plan_steps(cfg, world_size=2, num_blocks=1000)
    assert (plan.accumulation, plan.global_batch) == (4, 32)
    assert plan.total_steps == 32  # ceil(1 epoch * 1000 blocks / 32)
    with pytest.raises(GlottaError, match="multiple of micro_batch_size x processes"):
        plan_steps(TrainConfig(micro_batch_size=3, global_batch_size=32), 2, 1000)


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(warmup_steps=10, decay="cosine", min_lr_ratio=0.1)
    assert lr_multiplier(0, 100, cfg) == pytest.approx(0.1)
    assert lr_multiplier(9, 100, cfg) == pytest.approx(1.0)
    assert lr_multiplier(10, 100, cfg) == pytest.approx(1.0)
    assert lr_multiplier(100, 100, cfg) == pytest.approx(0.1)
    linear = TrainConfig(warmup_steps=0, decay="linear", min_lr_ratio=0.0)
    assert lr_multiplier(50, 100, linear) == pytest.approx(0.5)


def test_sampler_visits_each_block_once_per_epoch_and_resumes_exactly():
    whole = EpochSampler(10, seed=3).take(25)
    assert sorted(whole[:10]) == list(range(10)) and sorted(whole[10:20]) == list(range(10))
    pieces = EpochSampler(10, seed=3)
    got = np.concatenate([pieces.take(n) for n in (4, 7, 1, 13)])
    assert np.array_equal(got, whole)
    resumed = EpochSampler(10, seed=3, position=DataPosition(epoch=1, offset=2))
    assert np.array_equal(resumed.take(13), whole[12:25])


def test_ranks_read_disjoint_slices_whose_union_is_the_global_batch():
    batch = np.arange(12)
    parts = [rank_slice(batch, r, 3) for r in range(3)]
    assert np.array_equal(np.concatenate(parts), batch)


def test_training_lowers_the_loss(tiny_run):
    _, run_dir = tiny_run
    rows = [json.loads(line) for line in (run_dir.train / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] - 0.5
    assert any("val_loss" in r for r in rows)
    assert (run_dir.train / "tensorboard").is_dir()


def test_resume_from_a_checkpoint_gives_bitwise_identical_weights(tiny_run, tmp_path):
    _, source = tiny_run
    recipe = tiny_recipe(
        "train.max_steps=6",
        "train.checkpoint_interval=3",
        "train.keep_checkpoints=5",
        "train.eval_interval=0",
        "model.dropout=0.1",
    )
    straight = fresh_run_with_shards(tmp_path, "straight", source)
    run_train(recipe.train, recipe.model, straight)

    # A second run that "crashed" right after step 3: it has only the step-3 checkpoint.
    resumed = fresh_run_with_shards(tmp_path, "resumed", source)
    resumed.checkpoints.mkdir(parents=True)
    shutil.copytree(straight.checkpoints / "step_00000003", resumed.checkpoints / "step_00000003")
    (resumed.checkpoints / "LATEST").write_text("step_00000003")
    run_train(recipe.train, recipe.model, resumed, resume="always")

    a = load_file(straight.checkpoints / "step_00000006" / "model.safetensors")
    b = load_file(resumed.checkpoints / "step_00000006" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [
        json.loads(x)["step"] for x in (resumed.train / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(steps)


def test_resume_without_checkpoint_is_an_error(tiny_run, tmp_path):
    _, source = tiny_run
    recipe = tiny_recipe("train.max_steps=2")
    run_dir = fresh_run_with_shards(tmp_path, "empty", source)
    with pytest.raises(GlottaError, match="no checkpoint"):
        run_train(recipe.train, recipe.model, run_dir, resume="always")
