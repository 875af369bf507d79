"""Muon with AdamW, and the warmup-stable-decay schedule: groups, values, resume, extension."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from glotta.config import TrainConfig
from glotta.errors import GlottaError
from glotta.models import transformer_blocks
from glotta.train.loop import run_train
from glotta.train.optim import MuonWithAdamW, build_optimizer, cooldown_start, lr_multiplier
from glotta.train.plan import decide_precision
from glotta.validate import recipe_problems
from tests.conftest import tiny_recipe
from tests.train.conftest import fresh_run_with_shards


def _tiny_model(arch: str = "gpt2", tie: bool = True):
    from glotta.models import build_causal_lm

    recipe = tiny_recipe(f"model.arch={arch}", f"model.tie_embeddings={str(tie).lower()}")
    return build_causal_lm(recipe.model, 64, 16, eos_id=0)


@pytest.mark.parametrize("arch,tie", [("gpt2", True), ("llama", False)])
def test_muon_takes_the_block_matrices_and_adamw_the_rest(arch, tie):
    model = _tiny_model(arch, tie)
    opt = build_optimizer(model, TrainConfig(optimizer="muon", learning_rate=0.01))
    assert isinstance(opt, MuonWithAdamW)
    muon = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    adamw = {id(p) for g in opt.adamw.param_groups for p in g["params"]}
    block_matrices = {id(p) for p in transformer_blocks(model).parameters() if p.dim() == 2}
    assert muon == block_matrices
    assert not muon & adamw
    assert muon | adamw == {id(p) for p in model.parameters()}
    embedding = model.get_input_embeddings().weight
    assert id(embedding) in adamw and id(model.get_output_embeddings().weight) in adamw
    # Every group is the optimizer's own: the schedule's learning rate reaches both.
    assert [id(g) for g in opt.param_groups] == [
        id(g) for g in opt.adamw.param_groups + opt.muon.param_groups
    ]


def test_muon_learning_rate_and_weight_decay_reach_their_groups():
    cfg = TrainConfig(optimizer="muon", learning_rate=0.01, muon_learning_rate=0.05)
    opt = build_optimizer(_tiny_model(), cfg)
    assert [g["lr"] for g in opt.muon.param_groups] == [0.05]
    assert {g["lr"] for g in opt.adamw.param_groups} == {0.01}
    assert opt.muon.param_groups[0]["weight_decay"] == cfg.weight_decay
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert [g["lr"] for g in opt.muon.param_groups] == [0.025]
    assert scheduler.get_last_lr()[0] == pytest.approx(0.005)


def test_muon_state_dict_round_trips_into_a_fresh_optimizer():
    torch.manual_seed(0)
    model = _tiny_model()
    cfg = TrainConfig(optimizer="muon", learning_rate=0.01)
    opt = build_optimizer(model, cfg)
    inputs = torch.randint(0, 64, (2, 8))
    model(inputs, labels=inputs).loss.backward()
    opt.step()
    saved = opt.state_dict()
    assert len(saved["state"]) == len(list(model.parameters()))  # each parameter once

    other = build_optimizer(model, cfg)
    other.load_state_dict(saved)
    for name in ("adamw", "muon"):
        inner = getattr(other, name)
        assert inner.state is other.state
        assert all(p in other.state for g in inner.param_groups for p in g["params"])
    muon_param = other.muon.param_groups[0]["params"][0]
    assert torch.equal(
        other.state[muon_param]["momentum_buffer"], opt.state[muon_param]["momentum_buffer"]
    )


def test_wsd_holds_the_peak_then_cools_down():
    cfg = TrainConfig(warmup_steps=10, decay="wsd", cooldown_fraction=0.2, min_lr_ratio=0.0)
    assert cooldown_start(100, cfg) == 80
    assert lr_multiplier(5, 100, cfg) == pytest.approx(0.6)
    assert lr_multiplier(10, 100, cfg) == 1.0
    assert lr_multiplier(79, 100, cfg) == 1.0
    assert lr_multiplier(90, 100, cfg) == pytest.approx(0.5)
    assert lr_multiplier(100, 100, cfg) == pytest.approx(0.0)
    sqrt = TrainConfig(decay="wsd", cooldown_fraction=0.5, cooldown_shape="1-sqrt")
    assert lr_multiplier(75, 100, sqrt) == pytest.approx(1 - 0.5**0.5)
    floor = TrainConfig(decay="wsd", cooldown_fraction=0.5, min_lr_ratio=0.1)
    assert lr_multiplier(100, 100, floor) == pytest.approx(0.1)
    # Before the cool-down the value does not depend on the run's length: it can be extended.
    assert all(lr_multiplier(s, 100, cfg) == lr_multiplier(s, 1000, cfg) for s in range(80))


def test_muon_with_fsdp_is_refused_at_recipe_check():
    recipe = tiny_recipe("train.optimizer=muon", "train.parallelism=fsdp")
    assert any("train.optimizer = 'muon'" in p for p in recipe_problems(recipe))
    assert not any("muon" in p for p in recipe_problems(tiny_recipe("train.optimizer=muon")))


def _final_weights(run_dir, step):
    return load_file(run_dir.checkpoints / f"step_{step:08d}" / "model.safetensors")


def _crash_after(finished, step, shards_from, tmp_path, name):
    """A run that has only ``finished``'s checkpoint at ``step`` (as if killed after it)."""
    resumed = fresh_run_with_shards(tmp_path, name, shards_from)
    resumed.checkpoints.mkdir(parents=True)
    folder = f"step_{step:08d}"
    shutil.copytree(finished.checkpoints / folder, resumed.checkpoints / folder)
    (resumed.checkpoints / "LATEST").write_text(folder)
    return resumed


@pytest.mark.parametrize("crash_at", [3, 5], ids=["stable-part", "cool-down"])
def test_muon_wsd_resume_gives_bitwise_identical_weights(tiny_run, tmp_path, crash_at):
    _, source = tiny_run
    recipe = tiny_recipe(
        "train.max_steps=8", "train.checkpoint_interval=1", "train.keep_checkpoints=10",
        "train.eval_interval=0", "train.optimizer=muon", "train.decay=wsd",
        "train.cooldown_fraction=0.5", "train.warmup_steps=2", "train.weight_decay=0.1",
    )  # fmt: skip
    straight = fresh_run_with_shards(tmp_path, "straight", source)
    run_train(recipe.train, recipe.model, straight)
    resumed = _crash_after(straight, crash_at, source, tmp_path, "resumed")
    run_train(recipe.train, recipe.model, resumed, resume="always")
    a, b = _final_weights(straight, 8), _final_weights(resumed, 8)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_extended_wsd_run_continues_its_stable_part(tiny_run, tmp_path):
    _, source = tiny_run
    common = (
        "train.checkpoint_interval=2", "train.keep_checkpoints=10", "train.eval_interval=0",
        "train.log_interval=1", "train.decay=wsd", "train.cooldown_fraction=0.25",
        "train.warmup_steps=0", "train.optimizer=muon",
    )  # fmt: skip
    short = tiny_recipe("train.max_steps=8", *common)
    long = tiny_recipe("train.max_steps=12", *common)
    straight = fresh_run_with_shards(tmp_path, "straight", source)
    run_train(long.train, long.model, straight)

    # The same run planned for 8 steps, stopped in its stable part (step 4), extended to 12.
    planned_short = fresh_run_with_shards(tmp_path, "short", source)
    run_train(short.train, short.model, planned_short)
    extended = _crash_after(planned_short, 4, source, tmp_path, "extended")
    run_train(long.train, long.model, extended, resume="always")

    a, b = _final_weights(straight, 12), _final_weights(extended, 12)
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = [
        json.loads(line) for line in (extended.train / "history.jsonl").read_text().splitlines()
    ]
    assert any("max_steps" in json.dumps(entry) for entry in history)


def test_muon_trains_the_tiny_model(tiny_run, tmp_path):
    _, source = tiny_run
    recipe = tiny_recipe("train.max_steps=12", "train.optimizer=muon", "train.eval_interval=0")
    run_dir = fresh_run_with_shards(tmp_path, "muon", source)
    run_train(recipe.train, recipe.model, run_dir)
    rows = [json.loads(x) for x in (run_dir.train / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] - 0.5
    state = json.loads((run_dir.checkpoints / "step_00000012" / "trainer_state.json").read_text())
    assert state["precision"] == "fp32"  # what a resume of this run will use
    with pytest.raises(GlottaError, match="no checkpoint"):
        run_train(recipe.train, recipe.model, fresh_run_with_shards(tmp_path, "x", source),
                  resume="always")  # fmt: skip


def _timer(bf16_seconds: float, fp32_seconds: float):
    calls = []

    def step_seconds(dtype):
        calls.append(dtype)
        return bf16_seconds if dtype is torch.bfloat16 else fp32_seconds

    return step_seconds, calls


def test_auto_precision_never_picks_a_path_slower_than_fp32():
    cpu = torch.device("cpu")
    auto = TrainConfig(precision="auto")
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    slow_bf16, calls = _timer(bf16_seconds=0.5, fp32_seconds=0.3)
    choice = decide_precision(auto, cpu, slow_bf16)
    assert choice.dtype is None
    fast_bf16, _ = _timer(bf16_seconds=0.2, fp32_seconds=0.3)
    tie, _ = _timer(bf16_seconds=0.29, fp32_seconds=0.3)  # within noise: the exact path
    assert decide_precision(auto, cpu, tie).dtype is None
    if native:
        assert torch.bfloat16 in calls and None in calls  # both were timed
        assert "0.500 s in bf16, 0.300 s in fp32" in choice.describe()
        assert decide_precision(auto, cpu, fast_bf16).dtype is torch.bfloat16
    else:  # emulated bf16 is never timed, never chosen
        assert not calls and "no native bf16" in choice.describe()
        assert decide_precision(auto, cpu, fast_bf16).dtype is None


def test_explicit_and_recorded_precisions_are_not_measured():
    cpu = torch.device("cpu")
    never, calls = _timer(0.1, 1.0)
    assert decide_precision(TrainConfig(precision="fp32"), cpu, never).dtype is None
    assert decide_precision(TrainConfig(precision="bf16"), cpu, never).dtype is torch.bfloat16
    # A resumed run keeps the arithmetic it started with, whatever a new measurement would say.
    resumed = decide_precision(TrainConfig(precision="auto"), cpu, never, recorded="fp32")
    assert resumed.dtype is None and "as when the run began" in resumed.describe()
    assert not calls


@pytest.mark.slow  # two processes under torchrun; the 1-process Muon path runs in the default suite
def test_muon_under_two_processes_with_accumulation_reproduces_one_process(tiny_run, tmp_path):
    from tests.train.test_engine import assert_two_processes_reproduce_one

    _, source = tiny_run
    # torch.optim.Muon orthogonalises in bf16: a last-bit difference in the summed gradient can
    # move an update entry by one bf16 step (~0.4% of an update of ~1e-2), so the weights agree
    # to ~1e-3 after six steps while every loss agrees to 1e-5 (9.6e-4 seen on an AVX-512 EPYC).
    assert_two_processes_reproduce_one(
        tmp_path, source, "ddp", "train.optimizer=muon", "train.decay=wsd", steps=6,
        weight_tolerance=2e-3,
    )  # fmt: skip


def test_auto_precision_is_measured_once_per_machine_and_step(tmp_path):
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no native bf16: 'auto' never measures here")
    cpu, auto, cache = torch.device("cpu"), TrainConfig(precision="auto"), tmp_path / "p.json"
    fast_bf16, first_calls = _timer(bf16_seconds=0.2, fp32_seconds=0.3)
    first = decide_precision(auto, cpu, fast_bf16, cache=cache, cache_key="machine|model")
    assert first.dtype is torch.bfloat16 and first_calls
    # Close timings the second time would flip the choice; the cached measurement keeps it.
    tie, calls = _timer(bf16_seconds=0.3, fp32_seconds=0.3)
    again = decide_precision(auto, cpu, tie, cache=cache, cache_key="machine|model")
    assert again.dtype is torch.bfloat16 and not calls and "first measured" in again.describe()
    other = decide_precision(auto, cpu, tie, cache=cache, cache_key="machine|other model")
    assert other.dtype is None and calls
    assert set(json.loads(cache.read_text())) == {"machine|model", "machine|other model"}
