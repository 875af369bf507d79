"""Peak memory of one training step: glotta (fused LM-head loss on and off) against ``Trainer``.

    python -m benchmarks.memory_step                 # GPT-2 small, block 1024, vocab 50,257
    python -m benchmarks.memory_step --smoke         # a tiny model, seconds
    python -m benchmarks.memory_step --micro-batch 4 --activation-checkpointing
                                                     # both sides recompute block activations
    python -m benchmarks.memory_step --device cuda --precision bf16 --micro-batch 8
                                                     # on a GPU (benchmarks/gpu_check.py runs it)

Each side runs in a fresh process that builds the same GPT-2 (fp32 weights, --precision bf16:
bf16 autocast on both sides; micro batch --micro-batch,
--block-size tokens, token ids drawn at random: memory does not depend on their values), takes
one optimizer step to allocate the optimizer state, then measures the second step:

    glotta-fused     glotta's step: Objective.loss_sum (train.fused_loss on), backward, clipping,
                     AdamW (glotta.train.optim), zero_grad, as glotta.train.loop runs them
    glotta-plain     the same with train.fused_loss off (full logits, fp32 cross-entropy)
    hf-trainer       transformers Trainer, TrainingArguments defaults (fp32, AdamW, clipping 1.0),
                     max_steps 2; the second step is bracketed by a callback

With --activation-checkpointing every side recomputes each block's activations in the backward
pass (glotta: train.activation_checkpointing, as the loop enables it; Trainer:
activation_checkpointing=True, non-reentrant), like for like. The block activations then no
longer dominate the step, and the logits (what the fused loss never stores whole) do.

Memory is the resident set size of the process, sampled from /proc every 2 ms; glibc is told
to map every allocation of 64 KiB or more on its own (MALLOC_MMAP_THRESHOLD_) so that freed
tensors leave the RSS at once and the samples follow live memory. Reported per side: the RSS
before the step (weights, gradients of the previous step released, optimizer state), the peak
during the step, and their difference (what the step itself adds: activations, logits,
gradients). On ``--device cuda`` memory is what PyTorch's caching allocator hands out
(``torch.cuda.memory_allocated`` before the step, ``max_memory_allocated`` during it), exact
and free of sampling. Ends with one JSON line; writes a results file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO_ROOT,
    SMOKE_RESULTS_DIR,
    format_table,
    hardware_info,
    hardware_slug,
    log,
    parse_with_smoke,
    publish,
    results_path,
    today,
)

SIDES = ("glotta-fused", "glotta-plain", "hf-trainer")
# The point of glotta's memory work (fused loss, checkpointing, host memory): a step's peak at
# least 40% below Trainer's, so a model twice the size trains on the same machine.
GOAL_BELOW_TRAINER = 0.40
SMOKE = {
    "n_layer": 2,
    "n_embd": 64,
    "n_head": 2,
    "vocab_size": 512,
    "block_size": 64,
    "results_dir": str(SMOKE_RESULTS_DIR),
}


@dataclass
class Settings:
    n_layer: int = 12
    n_embd: int = 768
    n_head: int = 12
    vocab_size: int = 50257
    block_size: int = 1024
    micro_batch: int = 1
    activation_checkpointing: bool = False
    device: str = "cpu"
    precision: str = "fp32"
    seed: int = 0
    results_dir: str = ""


class RssPeak:
    """The process's resident set size, sampled every 2 ms; ``reset`` starts a new peak."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.rss())

    def reset(self) -> int:
        now = self.rss()
        self.peak = now
        return now

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.rss())


class CudaPeak:
    """RssPeak's interface over the CUDA caching allocator's own counters (no sampling)."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda

    def reset(self) -> int:
        self.cuda.synchronize()
        self.cuda.reset_peak_memory_stats()
        return self.cuda.memory_allocated()

    def stop(self) -> int:
        self.cuda.synchronize()
        return self.cuda.max_memory_allocated()


def memory_meter(s: Settings) -> RssPeak | CudaPeak:
    return CudaPeak() if s.device == "cuda" else RssPeak()


def build(s: Settings):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(s.seed)
    config = GPT2Config(
        n_layer=s.n_layer,
        n_embd=s.n_embd,
        n_head=s.n_head,
        vocab_size=s.vocab_size,
        n_positions=s.block_size,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config)
    if s.activation_checkpointing:  # the options glotta.train.loop uses (non-reentrant)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(0, s.vocab_size, (s.micro_batch, s.block_size + 1))
    return model, ids


def glotta_side(s: Settings, fused: bool) -> dict[str, Any]:
    import torch

    from glotta.config import TrainConfig
    from glotta.train.fused_loss import supports_fused_head
    from glotta.train.objective import Objective
    from glotta.train.optim import build_optimizer

    model, ids = build(s)
    device = torch.device(s.device)
    model.to(device)
    ids = ids.to(device)
    cfg = TrainConfig(precision=s.precision, fused_loss=fused, device=s.device)
    objective = Objective()
    objective.fused_loss = cfg.fused_loss and supports_fused_head(model)  # as the loop sets it
    optimizer = build_optimizer(model, cfg)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    model.train()
    meter = memory_meter(s)
    marks = {}
    for step in range(2):
        if step == 1:
            marks["before"] = meter.reset()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
            loss = objective.loss_sum(model, inputs, targets)
        (loss / targets.numel()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks[f"loss_{step}"] = float(loss.detach()) / targets.numel()
    marks["peak"] = meter.stop()
    return marks


def hf_side(s: Settings) -> dict[str, Any]:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model, ids = build(s)
    meter = memory_meter(s)
    marks: dict[str, Any] = {}

    class Blocks(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4 * s.micro_batch

        def __getitem__(self, i: int):
            row = ids[i % s.micro_batch, :-1]
            return {"input_ids": row, "labels": row}  # the model shifts the labels

    class SecondStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                marks["before"] = meter.reset()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                marks["peak"] = meter.stop()

    with tempfile.TemporaryDirectory(prefix="hf-memory-") as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=s.micro_batch,
            max_steps=2,
            use_cpu=s.device == "cpu",
            bf16=s.precision == "bf16",
            report_to="none",
            save_strategy="no",
            seed=s.seed,
            activation_checkpointing=s.activation_checkpointing,  # transformers 5: renamed
            activation_checkpointing_kwargs={"use_reentrant": False},
        )
        Trainer(model=model, args=args, train_dataset=Blocks(), callbacks=[SecondStep()]).train()
    return marks


def worker(side: str, s: Settings, out: Path) -> None:
    if side == "hf-trainer":
        marks = hf_side(s)
    else:
        marks = glotta_side(s, fused=side == "glotta-fused")
    out.write_text(json.dumps(marks))


def run_side(side: str, s: Settings, work: Path) -> dict[str, Any]:
    out = work / f"{side}.json"
    command = [sys.executable, "-m", "benchmarks.memory_step", "--worker", side]
    command += ["--worker-settings", json.dumps(dataclasses.asdict(s)), "--worker-out", str(out)]
    # Freed tensors go back to the OS at once, so the sampled RSS follows live memory.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    log(f"run {side}")
    start = time.perf_counter()
    proc = subprocess.run(command, stdout=sys.stderr, cwd=REPO_ROOT, env=env, check=False)
    if proc.returncode != 0 or not out.is_file():
        return {"error": f"worker exited with {proc.returncode}"}
    marks = json.loads(out.read_text())
    mib = 2**20
    return {
        "rss_before_step_mib": round(marks["before"] / mib, 1),
        "peak_step_rss_mib": round(marks["peak"] / mib, 1),
        "step_added_mib": round((marks["peak"] - marks["before"]) / mib, 1),
        "seconds": round(time.perf_counter() - start, 1),
        **{k: v for k, v in marks.items() if k.startswith("loss")},
    }


def run_memory_step(s: Settings) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="memory-step-") as tmp:
        sides = {side: run_side(side, s, Path(tmp)) for side in SIDES}
    failed = [name for name, r in sides.items() if "error" in r]

    def below(name: str, key: str) -> float | None:
        mine, theirs = sides[name].get(key), sides["hf-trainer"].get(key)
        return None if not mine or not theirs else round(1 - mine / theirs, 4)

    versus = {
        "fused_peak_below_trainer": below("glotta-fused", "peak_step_rss_mib"),
        "fused_step_added_below_trainer": below("glotta-fused", "step_added_mib"),
        "plain_peak_below_trainer": below("glotta-plain", "peak_step_rss_mib"),
        "fused_peak_below_plain": None,
    }
    fused, plain = sides["glotta-fused"], sides["glotta-plain"]
    if fused.get("peak_step_rss_mib") and plain.get("peak_step_rss_mib"):
        versus["fused_peak_below_plain"] = round(
            1 - fused["peak_step_rss_mib"] / plain["peak_step_rss_mib"], 4
        )
    value = versus["fused_peak_below_trainer"]
    hardware = hardware_info()
    record = {
        "bench": "memory_step",
        "date": today(),
        "hardware": hardware,
        "settings": dataclasses.asdict(s),
        "sides": sides,
        "versus": versus,
        "failed_runs": failed,
        "goals": {
            "peak_below_trainer": {
                "value": value,
                "target": GOAL_BELOW_TRAINER,
                "met": None if value is None else value >= GOAL_BELOW_TRAINER,
                "measure": "peak CUDA memory allocated during the step"
                if s.device == "cuda"
                else "peak RSS of the whole process during the step",
            }
        },
    }
    rows = [
        {
            "side": name,
            "before": f"{r['rss_before_step_mib']:,.0f}",
            "peak": f"{r['peak_step_rss_mib']:,.0f}",
            "added": f"{r['step_added_mib']:,.0f}",
        }
        if "error" not in r
        else {"side": name, "before": r["error"]}
        for name, r in sides.items()
    ]
    print(
        f"GPT-2 {s.n_layer}x{s.n_embd}, vocab {s.vocab_size:,}, {s.micro_batch} x {s.block_size} "
        f"tokens, {s.precision} on {s.device}"
        + (", activation checkpointing on every side" if s.activation_checkpointing else "")
        + "; the second optimizer step of each side"
    )
    memory = "CUDA allocated" if s.device == "cuda" else "RSS"  # the *_rss_mib keys hold it
    columns = [
        ("side", "side"),
        ("before", f"{memory} before step MiB"),
        ("peak", "peak in step MiB"),
        ("added", "added by step MiB"),
    ]
    print(format_table(rows, columns))
    for key, v in versus.items():
        print(f"{key}: {'n/a' if v is None else f'{100 * v:.1f}%'}")
    path = results_path(
        "memory_step",
        f"gpt2-{s.n_layer}l{s.n_embd}-v{s.vocab_size}-b{s.block_size}-mb{s.micro_batch}"
        + ("-ckpt" if s.activation_checkpointing else "")
        + (f"-{s.precision}" if s.precision != "fp32" else "")
        + (f"-{s.device}" if s.device != "cpu" else ""),
        hardware_slug(hardware),
        Path(s.results_dir) if s.results_dir else None,
    )
    publish(path, record)
    if failed:
        log(f"failed: {', '.join(failed)}")
        sys.exit(1)
    return record


def main(argv: list[str] | None = None) -> None:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.memory_step",
        description="Peak memory of one training step: glotta with and without the fused "
        "LM-head loss, and transformers Trainer; ends with one JSON line.",
    )
    p.add_argument("--n-layer", type=int, default=d.n_layer, help="Blocks (default: 12).")
    p.add_argument("--n-embd", type=int, default=d.n_embd, help="Width (default: 768).")
    p.add_argument("--n-head", type=int, default=d.n_head, help="Heads (default: 12).")
    p.add_argument(
        "--vocab-size", type=int, default=d.vocab_size, help="Vocabulary (default: 50257)."
    )
    p.add_argument(
        "--block-size", type=int, default=d.block_size, help="Tokens per sequence (default: 1024)."
    )
    p.add_argument(
        "--micro-batch", type=int, default=d.micro_batch, help="Sequences per step (default: 1)."
    )
    p.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="Recompute block activations in the backward pass, on every side (default: off).",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=d.device,
        help="Where the step runs; cuda measures the allocator's peak (default: cpu).",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default=d.precision,
        help="fp32, or bf16 autocast on every side (Trainer: bf16=True) (default: fp32).",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="Init and data seed (default: 0).")
    p.add_argument(
        "--results-dir",
        default="",
        help="Where the results file goes (default: benchmarks/results).",
    )
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--worker-settings", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    a = parse_with_smoke(p, argv, SMOKE)
    if a.worker:
        worker(a.worker, Settings(**json.loads(a.worker_settings)), a.worker_out)
        return
    run_memory_step(Settings(**{f.name: getattr(a, f.name) for f in dataclasses.fields(Settings)}))


if __name__ == "__main__":
    main()
