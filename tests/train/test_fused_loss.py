"""The fused, chunked LM head + loss equals the plain computation (fp32, relative 1e-5)."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from glotta.distill.losses import soft_target_kl_sum
from glotta.train import fused_loss
from glotta.train.fused_loss import (
    TeacherHead,
    fused_token_loss_sum,
    linear_cross_entropy_sum,
    linear_distillation_sum,
)

VOCAB, WIDTH, ROWS = 211, 24, 37  # odd sizes: the last chunk is partial


def close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Largest difference within ``rel`` of the largest magnitude (per tensor)."""
    scale = expected.detach().abs().max().clamp_min(1e-12)
    error = float((actual - expected).detach().abs().max() / scale)
    assert error <= rel, f"relative error {error:.2e} > {rel:.0e}"


def inputs(bias: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(ROWS, WIDTH, generator=g, requires_grad=True)
    weight = (torch.randn(VOCAB, WIDTH, generator=g) * 0.5).requires_grad_()
    b = (torch.randn(VOCAB, generator=g) * 0.1).requires_grad_() if bias else None
    targets = torch.randint(0, VOCAB, (ROWS,), generator=g)
    targets[::5] = -100  # ignored positions
    return hidden, weight, b, targets


def grads(loss: torch.Tensor, *tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None])


@pytest.mark.parametrize("chunk", [1, 7, 16, ROWS, 1000])
@pytest.mark.parametrize("bias", [False, True])
def test_cross_entropy_and_gradients_match_plain(chunk, bias):
    hidden, weight, b, targets = inputs(bias)
    plain = F.cross_entropy(F.linear(hidden, weight, b), targets, reduction="sum")
    fused = linear_cross_entropy_sum(hidden, weight, targets, b, chunk_size=chunk)
    close(fused, plain)
    # a non-unit outer gradient reaches every input
    for got, want in zip(
        grads(3 * fused, hidden, weight, b), grads(3 * plain, hidden, weight, b), strict=True
    ):
        close(got, want)


@pytest.mark.parametrize("bias", [False, True])
def test_under_bf16_autocast_the_head_runs_in_bf16_like_the_plain_one(bias):
    """Under autocast the fused head computes in bf16 (as nn.Linear would) and the loss in fp32;
    the plain path under the same autocast is the reference (bf16 rounding: relative 1e-2)."""
    hidden, weight, b, targets = inputs(bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.cross_entropy(F.linear(hidden, weight, b).float(), targets, reduction="sum")
        fused = linear_cross_entropy_sum(hidden, weight, targets, b, chunk_size=16)
    assert fused.dtype == torch.float32
    close(fused, plain, rel=1e-2)
    for got, want in zip(
        grads(fused, hidden, weight, b), grads(plain, hidden, weight, b), strict=True
    ):
        close(got, want, rel=2e-2)


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_compiled_chunk_kernel_matches_the_plain_computation(precision):
    """train.compile: each chunk's softmax, loss and gradient in one compiled pass; chunks of
    16, 16 and 5 rows (a recompile for the partial one), every fifth target ignored."""
    hidden, weight, b, targets = inputs(True)
    bf16 = precision == "bf16"
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        plain = F.cross_entropy(F.linear(hidden, weight, b).float(), targets, reduction="sum")
        fused = linear_cross_entropy_sum(hidden, weight, targets, b, chunk_size=16, compiled=True)
    kernel = fused_loss._compiled_chunk_kernel()
    assert kernel.working and kernel.compiled is not fused_loss._chunk_loss_and_grad  # compiled
    rel = 1e-2 if bf16 else 1e-5
    close(fused, plain, rel=rel)
    for got, want in zip(
        grads(fused, hidden, weight, b), grads(plain, hidden, weight, b), strict=True
    ):
        close(got, want, rel=2 * rel)


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("alpha_clm", [0.5, 0.0])
def test_the_compiled_chunk_kernel_matches_plain_distillation(precision, alpha_clm):
    """The KL term (with and without cross-entropy) in the compiled kernel: a padded teacher
    vocabulary, chunks of 16, 16 and 5 rows, every fifth target ignored."""
    hidden, weight, b, targets = inputs(True, seed=1)
    t_hidden, t_weight, t_bias, _ = inputs(True, seed=2)
    t_weight = torch.cat([t_weight, torch.randn(5, WIDTH)]).detach()
    t_bias = torch.cat([t_bias, torch.zeros(5)]).detach()
    temperature, alpha_ce = 2.0, 5.0
    bf16 = precision == "bf16"
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        student = F.linear(hidden, weight, b).float()
        t_logits = F.linear(t_hidden, t_weight, t_bias).detach().float()[:, :VOCAB]
        teacher = TeacherHead(hidden=t_hidden.detach(), weight=t_weight, bias=t_bias,
                              vocab_size=VOCAB)  # fmt: skip
        total, parts = linear_distillation_sum(
            hidden, weight, targets, teacher, temperature, alpha_ce, alpha_clm, b,
            chunk_size=16, compiled=True,
        )  # fmt: skip
    kernel = fused_loss._compiled_chunk_kernel()
    assert kernel.working and kernel.compiled is not fused_loss._chunk_loss_and_grad  # compiled
    kl = soft_target_kl_sum(student, t_logits, temperature)
    plain = alpha_ce * kl + alpha_clm * F.cross_entropy(student, targets, reduction="sum")
    rel = 1e-2 if bf16 else 1e-5
    close(total, plain, rel=rel)
    close(parts["kl"], kl, rel=rel)
    assert ("ce" in parts) == bool(alpha_clm)
    for got, want in zip(
        grads(total, hidden, weight, b), grads(plain, hidden, weight, b), strict=True
    ):
        close(got, want, rel=2 * rel)


def test_a_failing_compile_of_the_chunk_kernel_falls_back_to_eager(monkeypatch):
    def broken(*args):
        raise RuntimeError("inductor bug\nstack")

    kernel = fused_loss._CompiledChunkKernel()
    kernel.compiled = broken
    monkeypatch.setattr(fused_loss, "_compiled_chunk_kernel", lambda: kernel)
    hidden, weight, b, targets = inputs(True)
    plain = F.cross_entropy(F.linear(hidden, weight, b), targets, reduction="sum")
    with pytest.warns(UserWarning, match=r"chunk kernel failed \(RuntimeError: inductor bug\)"):
        fused = linear_cross_entropy_sum(hidden, weight, targets, b, chunk_size=16, compiled=True)
    close(fused, plain)
    assert kernel.working and kernel.compiled is fused_loss._chunk_loss_and_grad


def test_a_compiled_model_is_recognised_through_its_wrappers():
    model = _gpt2()
    assert not fused_loss.is_compiled(model)
    compiled = torch.compile(model)  # wrapping only: nothing compiles before a call
    assert fused_loss.is_compiled(compiled)
    wrapper = torch.nn.Module()
    wrapper.module = compiled  # what DDP looks like from outside
    assert fused_loss.is_compiled(wrapper)
    assert fused_loss.unwrap(wrapper) is model  # no truth test of the compiled module (raised)


def test_all_targets_ignored_gives_zero_loss_and_gradient():
    hidden, weight, _, targets = inputs(False)
    targets[:] = -100
    fused = linear_cross_entropy_sum(hidden, weight, targets, chunk_size=8)
    assert float(fused) == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in grads(fused, hidden, weight))


@pytest.mark.parametrize("teacher_kind", ["logits", "hidden"])
def test_distillation_terms_match_plain(teacher_kind):
    hidden, weight, b, targets = inputs(True, seed=1)
    t_hidden, t_weight, t_bias, _ = inputs(True, seed=2)
    t_weight = torch.cat([t_weight, torch.randn(5, WIDTH)])  # a padded teacher vocabulary
    t_bias = torch.cat([t_bias, torch.zeros(5)])
    t_logits = F.linear(t_hidden, t_weight, t_bias).detach()
    temperature, alpha_ce, alpha_clm = 2.0, 5.0, 0.5
    student = F.linear(hidden, weight, b)
    kl = soft_target_kl_sum(student, t_logits[:, :VOCAB], temperature)
    ce = F.cross_entropy(student, targets, reduction="sum")
    plain = alpha_ce * kl + alpha_clm * ce
    if teacher_kind == "logits":
        teacher = TeacherHead(logits=t_logits, vocab_size=VOCAB)
    else:
        teacher = TeacherHead(
            hidden=t_hidden.detach(),
            weight=t_weight.detach(),
            bias=t_bias.detach(),
            vocab_size=VOCAB,
        )
    total, parts = linear_distillation_sum(
        hidden, weight, targets, teacher, temperature, alpha_ce, alpha_clm, bias=b, chunk_size=9
    )
    close(total, plain)
    close(parts["kl"], kl)
    close(parts["ce"], ce)
    for got, want in zip(
        grads(total, hidden, weight, b), grads(plain, hidden, weight, b), strict=True
    ):
        close(got, want)


def test_distillation_under_bf16_autocast_matches_the_plain_one():
    """The KL term reads the reused bf16 chunk buffers too (3 chunks, the last partial)."""
    hidden, weight, b, targets = inputs(True, seed=1)
    t_hidden, t_weight, t_bias, _ = inputs(True, seed=2)
    temperature, alpha_ce, alpha_clm = 2.0, 5.0, 0.5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        student = F.linear(hidden, weight, b).float()
        t_logits = F.linear(t_hidden, t_weight, t_bias).detach()
        teacher = TeacherHead(hidden=t_hidden.detach(), weight=t_weight.detach(),
                              bias=t_bias.detach())  # fmt: skip
        total, _ = linear_distillation_sum(
            hidden, weight, targets, teacher, temperature, alpha_ce, alpha_clm, b, chunk_size=16
        )
    kl = soft_target_kl_sum(student, t_logits.float(), temperature)
    plain = alpha_ce * kl + alpha_clm * F.cross_entropy(student, targets, reduction="sum")
    close(total, plain, rel=1e-2)
    for got, want in zip(
        grads(total, hidden, weight, b), grads(plain, hidden, weight, b), strict=True
    ):
        close(got, want, rel=2e-2)


def _gpt2():
    config = GPT2Config(
        n_layer=2, n_embd=WIDTH, n_head=2, vocab_size=VOCAB, n_positions=32, bos_token_id=0,
        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def _llama():
    config = LlamaConfig(
        num_hidden_layers=2,
        hidden_size=WIDTH,
        intermediate_size=48,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return LlamaForCausalLM(config)


@pytest.mark.parametrize("build", [_gpt2, _llama], ids=["gpt2-tied", "llama-untied"])
def test_model_loss_and_parameter_gradients_match_plain(build):
    torch.manual_seed(0)
    model = build().float()
    x = torch.randint(0, VOCAB, (3, 16))
    y = torch.roll(x, -1, 1)
    y[:, -1] = -100
    logits = model(input_ids=x).logits
    plain = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1), reduction="sum")
    plain.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    fused = fused_token_loss_sum(model, x, y)
    close(fused, plain.detach())
    fused.backward()
    for name, p in model.named_parameters():
        close(p.grad, want[name])
    head = model.get_output_embeddings().weight
    tied = head is model.get_input_embeddings().weight
    assert tied == (build is _gpt2)


def test_training_with_the_fused_loss_follows_the_plain_loop(tiny_run, tmp_path):
    """Same recipe (fp32), fused on and off: the same loss and gradient norm at every step.

    (Weights are not compared: AdamW divides by the gradients' own scale, so rounding noise in
    gradients that are zero in exact arithmetic, such as GPT-2's key biases, becomes visible.)
    """
    import json

    from glotta.train.loop import run_train
    from tests.conftest import tiny_recipe
    from tests.train.conftest import fresh_run_with_shards

    _, source = tiny_run
    logged = {}
    for fused in (True, False):
        recipe = tiny_recipe(
            "train.max_steps=4", "train.eval_interval=0", "train.log_interval=1",
            'train.precision="fp32"', f"train.fused_loss={'true' if fused else 'false'}",
        )  # fmt: skip
        run_dir = fresh_run_with_shards(tmp_path, f"fused-{fused}", source)
        run_train(recipe.train, recipe.model, run_dir)
        rows = [json.loads(x) for x in (run_dir.train / "metrics.jsonl").read_text().splitlines()]
        logged[fused] = [r for r in rows if "loss" in r]
        assert all(r["data_seconds"] >= 0 for r in logged[fused])
        config = json.loads((run_dir.train / "train_config.json").read_text())
        assert config["train"]["fused_loss"] is fused
    assert len(logged[True]) == 4
    for a, b in zip(logged[True], logged[False], strict=True):
        for key in ("loss", "grad_norm"):
            assert abs(a[key] - b[key]) <= 1e-5 * abs(b[key]), (key, a, b)


@pytest.mark.parametrize(
    ("alpha_cos", "compiled"),
    [(0.0, False), (1.0, False),
     pytest.param(0.0, True, marks=pytest.mark.skipif(
         shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler"))],
)  # fmt: skip
def test_fused_distillation_matches_the_plain_distillation_loss(alpha_cos, compiled, monkeypatch):
    """Student and teacher GPT-2s (the teacher's vocabulary padded): every term and gradient.
    A compiled student (train.compile) takes the compiled chunk kernel for the KL term."""
    from glotta.distill.losses import (
        LossWeights,
        distillation_loss_sum,
        fused_distillation_loss_sum,
    )

    torch.manual_seed(0)
    student = _gpt2()
    teacher = GPT2LMHeadModel(
        GPT2Config(
            n_layer=3, n_embd=WIDTH, n_head=2, vocab_size=VOCAB + 5, n_positions=32,
            bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
    ).eval()  # fmt: skip
    weights = LossWeights(alpha_ce=5.0, alpha_clm=0.5, alpha_cos=alpha_cos, temperature=2.0)
    x = torch.randint(0, VOCAB, (2, 16))
    y = torch.roll(x, -1, 1)
    out = student(input_ids=x, output_hidden_states=True)
    with torch.no_grad():
        taught = teacher(input_ids=x, output_hidden_states=True)
    plain, plain_parts = distillation_loss_sum(
        out.logits, taught.logits[..., :VOCAB], y, weights,
        out.hidden_states[-1], taught.hidden_states[-1],
    )  # fmt: skip
    plain.backward()
    want = {n: p.grad.clone() for n, p in student.named_parameters()}
    student.zero_grad()
    kernel_calls = []
    kernel = fused_loss._compiled_chunk_kernel()
    monkeypatch.setattr(
        fused_loss, "_compiled_chunk_kernel", lambda: kernel_calls.append(1) or kernel
    )
    runs = torch.compile(student, backend="eager") if compiled else student  # the model: eager
    fused, parts = fused_distillation_loss_sum(runs, teacher, x, y, weights, VOCAB)
    assert bool(kernel_calls) == compiled
    close(fused, plain.detach())
    assert set(parts) == set(plain_parts)
    for name in parts:
        close(parts[name], plain_parts[name])
    fused.backward()
    for name, p in student.named_parameters():
        close(p.grad, want[name])
