"""The LM head + loss alone, forward and backward: plain PyTorch vs glotta's fused loss.

    python -m benchmarks.loss_speed                         # fp32, cross-entropy and distillation
    python -m benchmarks.loss_speed --precision bf16 --repeats 7

One training step's positions (``--rows``, 2,048 = the train_speed batch of 8 x 256) meet a
``(vocab x width)`` head; the time of ``loss.backward()`` after the loss is measured, the loss
and the gradients of the hidden states and the head included. Three sides, alternated in each
round and timed as the median of the rounds:

- ``plain``: the logits whole, as Hugging Face models and ``Trainer`` compute them
  (``cross_entropy(linear(h, W), targets)``; for distillation also the teacher's logits whole
  and glotta's plain ``soft_target_kl_sum``);
- ``fused``: :mod:`glotta.train.fused_loss`, eager (the default of ``train.fused_loss``);
- ``fused-compiled``: the same with each chunk's softmax, loss and gradient compiled (what a
  ``train.compile`` run uses).

Two objectives: next-token cross-entropy, and distillation (alpha_ce x T^2 x KL + alpha_clm x
CE, the teacher's head of width ``--teacher-width`` computed chunk by chunk). Each side's loss is
compared with the plain one (relative difference, a sanity check; exactness is tested in
tests/train/test_fused_loss.py). Prints a table, writes the results file, ends with one JSON
line. Speed only: memory is benchmarks/memory_step.py's job.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    SMOKE_RESULTS_DIR,
    format_table,
    hardware_info,
    hardware_slug,
    log,
    parse_with_smoke,
    publish,
    ratio,
    results_path,
)

SIDES = ("plain", "fused", "fused-compiled")
OBJECTIVES = ("ce", "distill")
# --smoke: a few rows and a small vocabulary, one round; seconds plus the kernel's compiles.
SMOKE = {
    "rows": 64,
    "width": 16,
    "teacher_width": 24,
    "vocab_size": 512,
    "rounds": 1,
    "warmup": 1,
    "results_dir": str(SMOKE_RESULTS_DIR),
}


@dataclass
class Settings:
    rows: int = 2048
    width: int = 384
    teacher_width: int = 512
    vocab_size: int = 32000
    precision: str = "fp32"
    temperature: float = 2.0
    alpha_ce: float = 0.5
    alpha_clm: float = 0.5
    rounds: int = 5
    warmup: int = 2
    seed: int = 1337
    results_dir: str = ""


def _loss_functions(s: Settings) -> tuple[dict[tuple[str, str], Any], tuple[Any, Any]]:
    """(objective, side) -> a function returning the summed loss of fixed inputs; and the two
    tensors that get gradients (the hidden states and the head)."""
    import torch
    import torch.nn.functional as F

    from glotta.distill.losses import soft_target_kl_sum
    from glotta.train.fused_loss import (
        TeacherHead,
        linear_cross_entropy_sum,
        linear_distillation_sum,
    )

    g = torch.Generator().manual_seed(s.seed)
    hidden = torch.randn(s.rows, s.width, generator=g).requires_grad_()
    weight = (torch.randn(s.vocab_size, s.width, generator=g) * 0.02).requires_grad_()
    targets = torch.randint(0, s.vocab_size, (s.rows,), generator=g)
    t_hidden = torch.randn(s.rows, s.teacher_width, generator=g)
    t_weight = torch.randn(s.vocab_size, s.teacher_width, generator=g) * 0.02
    teacher = TeacherHead(hidden=t_hidden, weight=t_weight)
    kd = (s.temperature, s.alpha_ce, s.alpha_clm)

    def plain_ce():
        return F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")

    def plain_distill():
        student = F.linear(hidden, weight).float()
        with torch.inference_mode():
            taught = F.linear(t_hidden, t_weight).float()
        kl = soft_target_kl_sum(student, taught, s.temperature)
        return s.alpha_ce * kl + s.alpha_clm * F.cross_entropy(student, targets, reduction="sum")

    functions = {("ce", "plain"): plain_ce, ("distill", "plain"): plain_distill}
    for side, compiled in (("fused", False), ("fused-compiled", True)):
        functions["ce", side] = lambda c=compiled: linear_cross_entropy_sum(
            hidden, weight, targets, compiled=c
        )
        functions["distill", side] = lambda c=compiled: linear_distillation_sum(
            hidden, weight, targets, teacher, *kd, compiled=c
        )[0]
    return functions, (hidden, weight)


def run_loss_speed(s: Settings) -> dict[str, Any]:
    import torch

    functions, (hidden, weight) = _loss_functions(s)

    def autocast():
        if s.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def once(key) -> tuple[float, float]:
        hidden.grad = weight.grad = None
        start = time.perf_counter()
        with autocast():
            loss = functions[key]()
        loss.backward()
        return time.perf_counter() - start, float(loss.detach())

    keys = [(objective, side) for objective in OBJECTIVES for side in SIDES]
    log(f"{s.warmup} warm-up call(s) of each side (the compiled kernel compiles here)")
    losses = {}
    for key in keys:
        for _ in range(s.warmup):
            losses[key] = once(key)[1]
    seconds: dict[tuple[str, str], list[float]] = {key: [] for key in keys}
    for round_index in range(s.rounds):
        log(f"round {round_index + 1} of {s.rounds}")
        order = keys if round_index % 2 == 0 else keys[::-1]  # alternated: drift hits all sides
        for key in order:
            seconds[key].append(once(key)[0])

    results: dict[str, dict[str, Any]] = {}
    for objective in OBJECTIVES:
        plain_loss = losses[objective, "plain"]
        per_side = {}
        for side in SIDES:
            median = statistics.median(seconds[objective, side])
            per_side[side] = {
                "ms": round(median * 1000, 2),
                "ms_rounds": [round(t * 1000, 2) for t in seconds[objective, side]],
                "loss_rel_diff_vs_plain": abs(losses[objective, side] - plain_loss)
                / max(abs(plain_loss), 1e-12),
            }
        results[objective] = per_side
    ratios = {
        f"{objective}_{name}": ratio(
            results[objective][slower]["ms"], results[objective][faster]["ms"]
        )
        for objective in OBJECTIVES
        for name, slower, faster in (
            ("fused_vs_plain", "plain", "fused"),
            ("compiled_vs_plain", "plain", "fused-compiled"),
            ("compiled_vs_fused", "fused", "fused-compiled"),
        )
    }  # speed-ups: how many times faster the second side is

    rows = [
        {
            "objective": objective,
            "side": side,
            "ms": f"{results[objective][side]['ms']:,.1f}",
            "speedup": f"{results[objective]['plain']['ms'] / results[objective][side]['ms']:.2f}x",
            "loss_diff": f"{results[objective][side]['loss_rel_diff_vs_plain']:.1e}",
        }
        for objective in OBJECTIVES
        for side in SIDES
    ]
    print(
        f"LM head + loss, forward and backward: {s.rows} rows x width {s.width}, vocab "
        f"{s.vocab_size:,}, {s.precision}; teacher width {s.teacher_width}; median of "
        f"{s.rounds} alternated rounds"
    )
    print(
        format_table(
            rows,
            [
                ("objective", "objective"),
                ("side", "side"),
                ("ms", "ms"),
                ("speedup", "vs plain"),
                ("loss_diff", "loss rel. diff"),
            ],
        )
    )
    record = {
        "bench": "loss_speed",
        "hardware": hardware_info(),
        "settings": asdict(s),
        "results": results,
        "ratios": ratios,
    }
    path = results_path(
        "loss_speed",
        f"head-w{s.width}-v{s.vocab_size}-r{s.rows}-{s.precision}",
        hardware_slug(record["hardware"]),
        Path(s.results_dir) if s.results_dir else None,
    )
    publish(path, record)
    return record


def main(argv: list[str] | None = None) -> None:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.loss_speed",
        description="Time the LM head + loss (forward and backward): the plain computation vs "
        "glotta's fused loss, eager and compiled, for cross-entropy and distillation.",
    )
    p.add_argument(
        "--rows",
        type=int,
        default=d.rows,
        help=f"Positions per step (batch x block) (default: {d.rows}).",
    )
    p.add_argument(
        "--width", type=int, default=d.width, help=f"Student width (default: {d.width})."
    )
    p.add_argument(
        "--teacher-width",
        type=int,
        default=d.teacher_width,
        help=f"The distillation teacher's width (default: {d.teacher_width}).",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=d.vocab_size,
        help=f"Rows of the head (default: {d.vocab_size}).",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default=d.precision,
        help=f"Autocast precision of the heads (default: {d.precision}).",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=d.temperature,
        help=f"Distillation temperature (default: {d.temperature}).",
    )
    p.add_argument(
        "--alpha-ce",
        type=float,
        default=d.alpha_ce,
        help=f"Weight of the KL term (default: {d.alpha_ce}).",
    )
    p.add_argument(
        "--alpha-clm",
        type=float,
        default=d.alpha_clm,
        help=f"Weight of the cross-entropy term in distillation (default: {d.alpha_clm}).",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=d.rounds,
        help=f"Timed rounds, every side once per round, alternated (default: {d.rounds}).",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=d.warmup,
        help=f"Untimed calls of each side first (default: {d.warmup}).",
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"Input seed (default: {d.seed}).")
    p.add_argument(
        "--results-dir",
        default=d.results_dir,
        help="Where the results file goes (default: benchmarks/results).",
    )
    args = parse_with_smoke(p, argv, SMOKE)
    fields = {k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__}
    run_loss_speed(Settings(**fields))


if __name__ == "__main__":
    main()
