"""Distillation: the loss terms against hand computations, the student's initialisation, the
frozen teacher, vocabulary checks, resume to the bit, a teacher trained by glotta distilled end to
end, and the Japanese recipe with tiny overrides."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from glotta.config import DistillConfig, ModelConfig
from glotta.distill import run_distill
from glotta.distill import teacher as teacher_module
from glotta.distill.causal import DistillObjective
from glotta.distill.losses import (
    LossWeights,
    cosine_loss_sum,
    distillation_loss_sum,
    soft_target_kl_sum,
)
from glotta.distill.student import PROJECTION, attach_projection
from glotta.distill.teacher import check_vocabulary, load_teacher
from glotta.errors import GlottaError
from glotta.models import count_parameters, gpt2_config
from glotta.pipeline import run_recipe, save_recipe
from glotta.recipe import load_recipe
from glotta.rundir import RunDir, is_complete
from glotta.train.data import BlockDataset
from glotta.train.distributed import Dist
from glotta.train.objective import token_loss_sum
from tests.conftest import glotta, glotta_torchrun
from tests.distill.conftest import student_recipe, student_run
from tests.train.test_engine import assert_bitwise_equal, loss_curve, weights

CPU = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
NARROW = ['model.preset="custom"', "model.n_layer=1", "model.n_embd=64", "model.n_head=2"]


def tiny_config(n_embd: int, vocab_size: int) -> GPT2Config:
    return GPT2Config(
        n_layer=1, n_embd=n_embd, n_head=2, vocab_size=vocab_size, bos_token_id=0, eos_token_id=0
    )


# ---------------------------------------------------------------------------------------------
# Loss math


def test_soft_target_kl_times_t_squared_equals_a_hand_computation():
    student = torch.tensor([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]])
    teacher = torch.tensor([[[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]])
    t = 2.0

    def softmax(row: list[float]) -> list[float]:
        exp = [math.exp(x / t) for x in row]
        return [x / sum(exp) for x in exp]

    expected = 0.0
    for s_row, t_row in zip(student[0].tolist(), teacher[0].tolist(), strict=True):
        p, q = softmax(t_row), softmax(s_row)
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected *= t * t

    got = soft_target_kl_sum(student, teacher, t)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # HF's DistilGPT2 loss (KLDivLoss "batchmean" over the flattened positions, x T^2) is the mean
    # over positions: our sum divided by the tokens, which is what the loop does.
    hf = torch.nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(student.view(-1, 3) / t, dim=-1), F.softmax(teacher.view(-1, 3) / t, dim=-1)
    )
    assert got.item() / 2 == pytest.approx(hf.item() * t * t, rel=1e-6)
    assert soft_target_kl_sum(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-6)


def test_cosine_loss_through_a_learned_projection():
    torch.manual_seed(0)
    student = GPT2LMHeadModel(tiny_config(n_embd=8, vocab_size=20))
    projection = attach_projection(student, teacher_width=12)
    assert getattr(student, PROJECTION) is projection  # trained and checkpointed with the student
    assert {id(p) for p in projection.parameters()} <= {id(p) for p in student.parameters()}
    same_width = GPT2LMHeadModel(tiny_config(n_embd=12, vocab_size=20))
    assert attach_projection(same_width, 12) is None

    student_hidden, teacher_hidden = torch.randn(2, 3, 8), torch.randn(2, 3, 12)
    loss = cosine_loss_sum(projection(student_hidden), teacher_hidden)
    projected = (student_hidden @ projection.weight.T + projection.bias).reshape(-1, 12).tolist()
    expected = 0.0
    for a, b in zip(projected, teacher_hidden.reshape(-1, 12).tolist(), strict=True):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        expected += 1 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    assert cosine_loss_sum(teacher_hidden, 3 * teacher_hidden).item() == pytest.approx(0, abs=1e-5)


def test_total_is_the_weighted_sum_and_clm_alone_is_the_loops_cross_entropy():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_config(n_embd=16, vocab_size=30)).eval()  # no dropout
    inputs, targets = torch.randint(0, 30, (2, 8)), torch.randint(0, 30, (2, 8))
    out = model(input_ids=inputs, output_hidden_states=True)
    teacher_logits, teacher_hidden = torch.randn(2, 8, 30), torch.randn(2, 8, 16)
    weights_ = LossWeights(alpha_ce=5.0, alpha_clm=0.5, alpha_cos=1.0, temperature=2.0)
    total, parts = distillation_loss_sum(
        out.logits, teacher_logits, targets, weights_, out.hidden_states[-1], teacher_hidden
    )
    expected = 5.0 * parts["kl"] + 0.5 * parts["ce"] + 1.0 * parts["cos"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    clm_only, _ = distillation_loss_sum(
        out.logits, teacher_logits, targets, LossWeights(0.0, 1.0, 0.0, 2.0)
    )
    assert clm_only.item() == pytest.approx(token_loss_sum(model, inputs, targets).item(), rel=1e-6)


def test_bf16_teacher_only_where_the_device_has_native_bf16(monkeypatch, capsys):
    cpu = torch.device("cpu")
    monkeypatch.setattr(teacher_module, "native_bf16", lambda device: False)
    assert teacher_module.teacher_dtype("bf16", cpu) is torch.float32
    assert "no native bf16; the teacher runs in fp32" in capsys.readouterr().out
    monkeypatch.setattr(teacher_module, "native_bf16", lambda device: True)
    assert teacher_module.teacher_dtype("bf16", cpu) is torch.bfloat16
    assert teacher_module.teacher_dtype("fp32", cpu) is torch.float32


# ---------------------------------------------------------------------------------------------
# Student, teacher, vocabulary (the teacher: 60 real steps of the tiny demo)


def make_student(teacher_run: RunDir, **model) -> GPT2LMHeadModel:
    meta = json.loads((teacher_run.shards / "meta.json").read_text())
    return GPT2LMHeadModel(
        gpt2_config(ModelConfig(**model), meta["vocab_size"], 64, meta["eos_id"])
    )


def test_student_starts_from_the_chosen_teacher_blocks_exactly(teacher_run):
    from safetensors.torch import load_file

    cfg = DistillConfig(teacher=str(teacher_run.export), student_layers=[1])
    student = make_student(teacher_run, n_layer=1)  # tiny preset: the teacher's 128 x 2 heads
    DistillObjective(cfg, teacher_run.tokenizer).prepare(student, CPU)
    state = student.state_dict()
    copied = 0
    for name, value in load_file(teacher_run.export / "model.safetensors").items():
        if name.startswith("transformer.h.1."):
            assert torch.equal(state[name.replace(".h.1.", ".h.0.")], value), name
            copied += 1
        elif name.startswith(("transformer.wte", "transformer.wpe", "transformer.ln_f")):
            assert torch.equal(state[name], value), name
            copied += 1
    assert copied >= 12

    with pytest.raises(
        GlottaError, match=r"names 1 teacher blocks but the student has model.n_layer = 2"
    ):
        DistillObjective(cfg, teacher_run.tokenizer).prepare(make_student(teacher_run), CPU)
    narrow = make_student(teacher_run, preset="custom", n_layer=1, n_embd=64, n_head=2)
    with pytest.raises(GlottaError, match=r"set model.n_embd = 128 and model.n_head = 2"):
        DistillObjective(cfg, teacher_run.tokenizer).prepare(narrow, CPU)


def test_teacher_is_frozen_in_inference_mode_and_gets_no_gradients(teacher_run):
    cfg = DistillConfig(teacher=str(teacher_run.export))  # a narrower student at random
    student = make_student(teacher_run, preset="custom", n_layer=1, n_embd=64, n_head=2)
    objective = DistillObjective(cfg, teacher_run.tokenizer)
    objective.prepare(student, CPU)
    teacher = objective.teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in student.parameters()}
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    modes: list[bool] = []
    teacher.register_forward_hook(lambda *_: modes.append(torch.is_inference_mode_enabled()))

    inputs, targets = BlockDataset(teacher_run.shards / "train.bin", 64).batch([0, 1])
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    objective.loss_sum(student, inputs, targets).backward()
    optimizer.step()
    assert modes == [True]
    assert all(p.grad is None for p in teacher.parameters())
    assert objective.projection.weight.grad is not None
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_a_teacher_with_another_vocabulary_is_refused_naming_both(teacher_run, tmp_path):
    from tokenizers import Tokenizer, models

    other = tmp_path / "other-tokenizer"
    other.mkdir()
    vocab = {f"t{i}": i for i in range(512)}
    Tokenizer(models.WordLevel(vocab, unk_token="t0")).save(str(other / "tokenizer.json"))
    teacher = load_teacher(str(teacher_run.export))
    with pytest.raises(GlottaError, match="is not the student's tokenizer") as error:
        check_vocabulary(teacher, str(teacher_run.export), other)
    assert str(teacher_run.export) in str(error.value) and str(other) in str(error.value)
    assert check_vocabulary(teacher, str(teacher_run.export), teacher_run.tokenizer) == 512


# ---------------------------------------------------------------------------------------------
# The stage: resume, end to end


def test_resume_is_bitwise_identical_and_another_teacher_is_refused(teacher_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from glotta.export.stage import run_export

    recipe = student_recipe(
        teacher_run,
        *NARROW,
        "model.dropout=0.1",  # the RNG state is part of what a resume restores
        "train.max_steps=6",
        "train.checkpoint_interval=3",
        "train.keep_checkpoints=5",
    )
    straight = student_run(tmp_path, "straight", teacher_run)
    run_distill(recipe.distill, straight, recipe.train, recipe.model)
    resumed = student_run(tmp_path, "resumed", teacher_run)
    resumed.checkpoints.mkdir(parents=True)
    shutil.copytree(straight.checkpoints / "step_00000003", resumed.checkpoints / "step_00000003")
    (resumed.checkpoints / "LATEST").write_text("step_00000003")
    run_distill(recipe.distill, resumed, recipe.train, recipe.model, resume="always")

    final = weights(straight.checkpoints / "step_00000006")
    assert f"{PROJECTION}.weight" in final  # the projection is trained and checkpointed ...
    assert_bitwise_equal(final, weights(resumed.checkpoints / "step_00000006"))
    state = json.loads((straight.checkpoints / "step_00000006" / "trainer_state.json").read_text())
    assert state["objective"]["teacher"]["source"] == str(teacher_run.export)
    summary = json.loads((straight.train / "summary.json").read_text())
    assert summary["parameters"] + summary["projection_parameters"] == sum(
        v.numel() for k, v in final.items()
    )

    out = run_export(recipe.export, recipe.recipe, recipe.generate, straight)  # ... not exported
    exported = AutoModelForCausalLM.from_pretrained(out)
    assert not hasattr(exported, PROJECTION)
    assert count_parameters(exported) == summary["parameters"]

    moved = tmp_path / "moved-teacher"  # the same files elsewhere: another teacher
    shutil.copytree(teacher_run.export, moved)
    other = dataclasses.replace(recipe.distill, teacher=str(moved))
    with pytest.raises(GlottaError, match="continues only with the teacher it started with"):
        run_distill(other, resumed, recipe.train, recipe.model, resume="always")
    # plain training does not silently continue a distilled student
    from glotta.train.loop import run_train

    with pytest.raises(GlottaError, match="continue it with `glotta distill`"):
        run_train(recipe.train, recipe.model, resumed, resume="always")


def test_a_teacher_trained_by_glotta_distills_into_a_student_that_beats_scratch(
    teacher_run, tmp_path
):
    """`glotta run` with [distill]: the distill stage replaces train; eval, compare, export."""
    from glotta.evaluate.compare import run_compare
    from glotta.export.stage import run_export

    same = ["model.n_layer=1", "train.max_steps=30", "train.checkpoint_interval=30"]
    recipe = student_recipe(teacher_run, *same, "distill.student_layers=[1]")
    student = RunDir(tmp_path / "student")
    timings = run_recipe(recipe, student)
    assert "distill" in timings and "train" not in timings
    assert json.loads((student.train / "COMPLETE.json").read_text())["stage"] == "distill"
    assert all(is_complete(d) for d in (student.tokenizer, student.eval, student.export))
    assert (student.tokenizer / "tokenizer.json").read_text() == (
        teacher_run.export / "tokenizer.json"
    ).read_text()
    assert run_recipe(recipe, student)["distill"] == 0.0  # finished: skipped

    scratch = RunDir(tmp_path / "scratch")  # the same student and tokens, no teacher
    run_recipe(student_recipe(teacher_run, *same, 'distill.teacher=""'), scratch)
    result = run_compare(recipe.eval, student, scratch=[str(scratch.root)], speed_tokens=8)
    rows = {row["role"]: row for row in result["rows"]}
    assert set(rows) == {"teacher", "distilled", "scratch"}
    assert rows["distilled"]["training_tokens"] == rows["scratch"]["training_tokens"] == 30_720
    assert rows["distilled"]["bits_per_byte"] < rows["scratch"]["bits_per_byte"]
    assert rows["teacher"]["retention_percent"] == 100.0
    assert rows["distilled"]["parameters"] < rows["teacher"]["parameters"]
    assert json.loads((student.eval / "compare.json").read_text())["rows"] == result["rows"]

    run_export(recipe.export, recipe.recipe, recipe.generate, student)
    card = (student.export / "README.md").read_text()
    assert f"distilled from `{teacher_run.export}`" in card and "## Distillation" in card
    assert "5.0 × KL(teacher/T ‖ student/T) × T²" in card and "| scratch |" in card


def test_japanese_distilled_recipe_carries_the_cards_settings():
    from transformers import GPT2LMHeadModel

    recipe = load_recipe("japanese-gpt2-distilled")
    d = recipe.distill
    assert (d.teacher, recipe.tokenizer.pretrained) == ("rinna/japanese-gpt2-medium",) * 2
    assert (d.alpha_ce, d.alpha_clm, d.alpha_cos, d.temperature) == (5.0, 0.5, 1.0, 2.0)
    assert d.student_layers == [] and d.freeze_position_embeddings
    m = recipe.model
    assert (m.n_layer, m.n_embd, m.n_head, m.n_positions) == (6, 1024, 16, 1024)
    config = gpt2_config(m, 32000, recipe.train.block_size, 2)
    with torch.device("meta"):
        assert count_parameters(GPT2LMHeadModel(config)) == pytest.approx(109e6, rel=0.02)


def test_japanese_distilled_recipe_runs_with_tiny_overrides(tmp_path):
    """A tiny Japanese teacher by the japanese-gpt2-small recipe, then the distilled recipe."""
    from safetensors.torch import load_file

    from tests.test_seed_recipes import TINY, japanese_sentences

    text = japanese_sentences(tmp_path)
    data = [f'corpus.inputs=["{text}"]', 'corpus.format="txt"', 'corpus.txt_documents="lines"']
    teacher = RunDir(tmp_path / "teacher")
    run_recipe(
        load_recipe("japanese-gpt2-small", [*TINY, *data, "tokenizer.vocab_size=2000"]), teacher
    )
    student = RunDir(tmp_path / "student")
    recipe = load_recipe(
        "japanese-gpt2-distilled",
        [
            *TINY,
            *data,
            f'tokenizer.pretrained="{teacher.export}"',
            f'distill.teacher="{teacher.export}"',
            "model.n_layer=1",
            "train.checkpoint_interval=2",
            "train.keep_checkpoints=5",
        ],
    )
    run_recipe(recipe, student)
    assert is_complete(student.export)
    assert f"distilled from `{teacher.export}`" in (student.export / "README.md").read_text()
    # freeze_position_embeddings: the positions did not move, the token embeddings did
    first, last = (
        load_file(student.checkpoints / s / "model.safetensors")
        for s in ("step_00000002", "step_00000004")
    )
    assert torch.equal(first["transformer.wpe.weight"], last["transformer.wpe.weight"])
    assert not torch.equal(first["transformer.wte.weight"], last["transformer.wte.weight"])


# ---------------------------------------------------------------------------------------------
# Many processes


@pytest.mark.slow
@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_two_processes_distill_like_one(teacher_run, tmp_path, parallelism):
    """Same global batch: 1 process x 16 sequences, or 2 processes x 4 micro x 2 accumulation."""
    common = [
        *NARROW,
        "train.max_steps=6",
        "train.global_batch_size=16",
        "train.checkpoint_interval=1000",
        f'train.parallelism="{parallelism}"',
    ]
    runs = []
    for name, micro in (("one", 16), ("two", 4)):
        run_dir = student_run(tmp_path, name, teacher_run)
        save_recipe(
            student_recipe(teacher_run, *common, f"train.micro_batch_size={micro}"), run_dir
        )
        runs.append(run_dir)
    one, two = runs
    result = glotta("distill", "--run-dir", str(one.root))
    assert result.returncode == 0, result.stderr[-3000:]
    result = glotta_torchrun("distill", "--run-dir", str(two.root))
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = loss_curve(one), loss_curve(two)
    assert len(a) == len(b) == 6
    assert max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True)) <= 1e-5, (a, b)
    wa, wb = (weights(r.checkpoints / "step_00000006") for r in runs)
    assert f"{PROJECTION}.weight" in wa and wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 5e-5
