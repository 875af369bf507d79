"""Where one glotta training step's time goes, at the train_speed size (not a comparison).

    python -m benchmarks.profile_step                       # fp32 eager, 3 timed steps + profile
    python -m benchmarks.profile_step --precision bf16 --steps 1

Rebuilds one step of glotta's loop from its own parts (BlockDataset, build_causal_lm,
build_optimizer/scheduler, token_loss_sum; the same order as glotta.train.loop) and times each
phase: batch fetch, forward + loss, backward, gradient clipping, optimizer step, zero_grad. Then
runs one step under torch.profiler and prints the operators with the most self CPU time, and the
share of forward+backward FLOPs that is matmul (model FLOPs from train_speed's formula).
Ends with one JSON line.
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
    CACHE_DIR,
    SMOKE_DATA_DIR,
    SMOKE_RESULTS_DIR,
    SMOKE_VOCAB,
    hardware_info,
    hardware_slug,
    log,
    parse_with_smoke,
    prepare_packed_data,
    publish,
    results_path,
)

PHASES = ("batch", "forward_loss", "backward", "clip", "optimizer", "zero_grad")
# --smoke: a 2-layer GPT-2 on the smoke data, one step of each kind; seconds.
SMOKE = {
    "steps": 1,
    "warmup": 1,
    "micro_batch": 2,
    "block_size": 32,
    "n_layer": 2,
    "n_embd": 64,
    "n_head": 2,
    "vocab_size": SMOKE_VOCAB,
    "top": 5,
    "data_dir": str(SMOKE_DATA_DIR),
    "results_dir": str(SMOKE_RESULTS_DIR),
}


@dataclass
class Settings:
    steps: int = 3
    warmup: int = 1
    micro_batch: int = 8
    block_size: int = 256
    n_layer: int = 6
    n_embd: int = 384
    n_head: int = 6
    vocab_size: int = 32000
    precision: str = "fp32"
    compile: bool = False
    fused_loss: bool = True
    reuse_host_memory: bool = True
    profile: bool = True
    top: int = 20
    data_dir: str = str(CACHE_DIR / "train-data")
    results_dir: str = ""


def run_profile(s: Settings) -> dict[str, Any]:
    import torch

    from glotta.config import ModelConfig, TrainConfig
    from glotta.models import build_causal_lm
    from glotta.train.data import BlockDataset, EpochSampler
    from glotta.train.host_memory import reuse_host_memory
    from glotta.train.objective import token_loss_sum
    from glotta.train.optim import build_optimizer, build_scheduler

    meta = prepare_packed_data(Path(s.data_dir), s.vocab_size)
    cfg = TrainConfig(
        block_size=s.block_size,
        micro_batch_size=s.micro_batch,
        max_steps=s.steps + s.warmup + 1,
        precision=s.precision,
        compile=s.compile,
        reuse_host_memory=s.reuse_host_memory,
        device="cpu",
    )
    reuse_host_memory(cfg.reuse_host_memory, torch.device("cpu"))  # as glotta.train.loop does
    model_cfg = ModelConfig(
        preset="custom",
        n_layer=s.n_layer,
        n_embd=s.n_embd,
        n_head=s.n_head,
        n_positions=s.block_size,
    )
    torch.manual_seed(cfg.seed)
    data = BlockDataset(Path(s.data_dir) / "shards" / "train.bin", s.block_size)
    sampler = EpochSampler(data.num_blocks, cfg.seed)
    model = build_causal_lm(model_cfg, meta["vocab_size"], s.block_size, meta["eos_id"])
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg.max_steps, cfg)
    forward_model = torch.compile(model) if s.compile else model
    forward_model.train()
    tokens_per_step = s.micro_batch * s.block_size

    def autocast():
        if s.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step() -> dict[str, float]:
        times = {}
        t0 = time.perf_counter()
        inputs, targets = data.batch(sampler.take(s.micro_batch))
        t1 = time.perf_counter()
        with autocast():
            loss = token_loss_sum(forward_model, inputs, targets, s.fused_loss)
        loss_value = loss.item()  # the loop calls .item() after backward; eager CPU: no overlap
        t2 = time.perf_counter()
        (loss / tokens_per_step).backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
        t4 = time.perf_counter()
        optimizer.step()
        scheduler.step()
        t5 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        t6 = time.perf_counter()
        times.update(
            batch=t1 - t0,
            forward_loss=t2 - t1,
            backward=t3 - t2,
            clip=t4 - t3,
            optimizer=t5 - t4,
            zero_grad=t6 - t5,
            loss=loss_value,
        )
        return times

    log(f"{s.warmup} warm-up step(s)")
    for _ in range(s.warmup):
        step()
    log(f"{s.steps} timed step(s)")
    timed = [step() for _ in range(s.steps)]
    phases = {p: statistics.median(t[p] for t in timed) for p in PHASES}
    total = sum(phases.values())

    print(
        f"glotta step, GPT-2 {s.n_layer}x{s.n_embd}, vocab {meta['vocab_size']}, micro batch "
        f"{s.micro_batch} x {s.block_size}, {s.precision}{', compiled' if s.compile else ''}"
        f"{', fused loss' if s.fused_loss else ''}"
        f"{', host memory reused' if s.reuse_host_memory else ''}; "
        f"median of {s.steps} steps: {total:.3f} s/step = {tokens_per_step / total:,.0f} tokens/s"
    )
    for p in PHASES:
        print(f"  {p:<13} {phases[p] * 1000:9.1f} ms  {100 * phases[p] / total:5.1f}%")

    top_ops: list[dict[str, Any]] = []
    if s.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        events = prof.key_averages()
        total_self = sum(e.self_cpu_time_total for e in events) or 1
        ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: s.top]
        print(f"\ntop {s.top} operators by self CPU time (one step under torch.profiler):")
        for e in ranked:
            top_ops.append(
                {
                    "op": e.key,
                    "self_ms": round(e.self_cpu_time_total / 1000, 2),
                    "share": round(e.self_cpu_time_total / total_self, 4),
                    "calls": e.count,
                }
            )
            print(
                f"  {e.key[:48]:<48} {e.self_cpu_time_total / 1000:9.1f} ms "
                f"{100 * e.self_cpu_time_total / total_self:5.1f}%  x{e.count}"
            )
    record = {
        "bench": "profile_step",
        "hardware": hardware_info(),
        "settings": asdict(s),
        "seconds_per_step": round(total, 4),
        "tokens_per_second": round(tokens_per_step / total, 1),
        "phases_ms": {p: round(v * 1000, 2) for p, v in phases.items()},
        "top_ops": top_ops,
        "losses": [round(t["loss"] / tokens_per_step, 4) for t in timed],  # mean per token
    }
    path = results_path(
        "profile_step",
        f"gpt2-{s.n_layer}l{s.n_embd}-v{meta['vocab_size']}-b{s.block_size}",
        hardware_slug(record["hardware"]),
        Path(s.results_dir) if s.results_dir else None,
    )
    publish(path, record)
    return record


def main(argv: list[str] | None = None) -> None:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_step",
        description="Time the phases of one glotta training step and list the costliest ops.",
    )
    p.add_argument(
        "--steps", type=int, default=d.steps, help=f"Timed steps (median) (default: {d.steps})."
    )
    p.add_argument(
        "--warmup", type=int, default=d.warmup, help=f"Untimed steps first (default: {d.warmup})."
    )
    p.add_argument(
        "--micro-batch",
        type=int,
        default=d.micro_batch,
        help=f"Sequences per step (default: {d.micro_batch}).",
    )
    p.add_argument(
        "--block-size",
        type=int,
        default=d.block_size,
        help=f"Tokens per sequence (default: {d.block_size}).",
    )
    p.add_argument(
        "--n-layer", type=int, default=d.n_layer, help=f"Transformer blocks (default: {d.n_layer})."
    )
    p.add_argument("--n-embd", type=int, default=d.n_embd, help=f"Width (default: {d.n_embd}).")
    p.add_argument("--n-head", type=int, default=d.n_head, help=f"Heads (default: {d.n_head}).")
    p.add_argument(
        "--vocab-size",
        type=int,
        default=d.vocab_size,
        help=f"BPE vocabulary of the prepared data (default: {d.vocab_size}).",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default=d.precision,
        help=f"Autocast precision (default: {d.precision}).",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=d.compile,
        help="torch.compile the model (default: off).",
    )
    p.add_argument(
        "--fused-loss",
        action=argparse.BooleanOptionalAction,
        default=d.fused_loss,
        help="The fused, chunked LM head + loss, as train.fused_loss (default: on).",
    )
    p.add_argument(
        "--reuse-host-memory",
        action=argparse.BooleanOptionalAction,
        default=d.reuse_host_memory,
        help="Keep freed memory for the next step, as train.reuse_host_memory (default: on).",
    )
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=d.profile,
        help="Also run one step under torch.profiler (default: on).",
    )
    p.add_argument("--top", type=int, default=d.top, help=f"Operators listed (default: {d.top}).")
    p.add_argument(
        "--data-dir", default=d.data_dir, help=f"Prepared run directory (default: {d.data_dir})."
    )
    p.add_argument(
        "--results-dir",
        default="",
        help="Where the results file goes (default: benchmarks/results).",
    )
    a = parse_with_smoke(p, argv, SMOKE)
    run_profile(Settings(**{k: getattr(a, k) for k in asdict(d)}))


if __name__ == "__main__":
    main()
