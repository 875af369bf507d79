"""The pretraining loop (objective ``clm``): one entry function, ``run_train``.

    glotta train demo                                  # one process, CPU or one GPU
    torchrun --nproc_per_node 4 -m glotta train demo   # DDP, same results at the same global batch

Reads RUN_DIR/shards (train.bin, valid.bin, meta.json), writes RUN_DIR/train: checkpoints/,
metrics.jsonl, tensorboard/, summary.json, and COMPLETE.json last.

The loss is token-weighted over micro-batches and processes (sum of token losses divided by the
number of predicted tokens in the whole optimizer step), not a mean of per-batch means.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from glotta.config import ModelConfig, TrainConfig
from glotta.errors import GlottaError
from glotta.models import build_causal_lm, count_parameters
from glotta.rundir import RunDir, begin_stage, is_complete, mark_complete, stage_fingerprint
from glotta.train import checkpoint
from glotta.train.data import BlockDataset, DataPosition, EpochSampler, rank_slice
from glotta.train.distributed import Dist, all_reduce_sum, barrier, setup, teardown
from glotta.train.optim import build_optimizer, build_scheduler


@dataclasses.dataclass
class StepPlan:
    """How the recipe's global batch is reached on this hardware."""

    micro_batch_size: int
    accumulation: int
    world_size: int
    total_steps: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.accumulation * self.world_size


def plan_steps(cfg: TrainConfig, world_size: int, num_blocks: int) -> StepPlan:
    if cfg.global_batch_size:
        per_step = cfg.micro_batch_size * world_size
        if cfg.global_batch_size % per_step:
            raise GlottaError(
                f"train.global_batch_size ({cfg.global_batch_size}) must be a multiple of "
                f"micro_batch_size x processes ({cfg.micro_batch_size} x {world_size})"
            )
        accumulation = cfg.global_batch_size // per_step
    else:
        accumulation = cfg.gradient_accumulation_steps
    global_batch = cfg.micro_batch_size * accumulation * world_size
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * num_blocks / global_batch))
    return StepPlan(cfg.micro_batch_size, accumulation, world_size, total)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where it pays: on request, or 'auto' on GPUs with bf16 support."""
    if cfg.precision == "bf16":
        return torch.bfloat16
    if cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def token_loss_sum(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Sum of next-token cross-entropy over all positions (fp32 logits for a stable softmax)."""
    logits = model(input_ids=inputs).logits
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
    )


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, data: BlockDataset, cfg: TrainConfig, ctx: Dist, amp: torch.dtype | None
) -> float:
    """Mean token loss on the first ``eval_batches`` micro-batches of the valid shard."""
    model.eval()
    count = min(data.num_blocks, cfg.eval_batches * cfg.micro_batch_size * ctx.world_size)
    count -= count % ctx.world_size
    indices = rank_slice(torch.arange(count).numpy(), ctx.rank, ctx.world_size)
    loss_sum, tokens = 0.0, 0
    for start in range(0, len(indices), cfg.micro_batch_size):
        inputs, targets = data.batch(indices[start : start + cfg.micro_batch_size])
        with _autocast(ctx.device, amp):
            loss_sum += token_loss_sum(model, inputs.to(ctx.device), targets.to(ctx.device)).item()
        tokens += targets.numel()
    model.train()
    loss_sum, tokens = all_reduce_sum([loss_sum, float(tokens)], ctx)
    return loss_sum / max(tokens, 1.0)


class StopRequest:
    """SIGTERM/SIGINT ask the loop to save and stop after the current step (preemptible clusters)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def read_shard_meta(run_dir: RunDir) -> dict:
    if not is_complete(run_dir.shards):
        raise GlottaError(f"no packed shards in {run_dir.shards}; run `glotta pack` first")
    return json.loads((run_dir.shards / "meta.json").read_text())


def run_train(
    cfg: TrainConfig, model_cfg: ModelConfig, run_dir: RunDir, resume: str = "auto"
) -> dict:
    """Train (or continue training) the model; ``resume`` is 'auto', 'always' or 'never'."""
    meta = read_shard_meta(run_dir)
    ctx = setup(cfg.device)
    try:
        return _train(cfg, model_cfg, run_dir, resume, meta, ctx)
    finally:
        teardown()


def _train(cfg, model_cfg, run_dir: RunDir, resume: str, meta: dict, ctx: Dist) -> dict:
    fingerprint = stage_fingerprint(TrainStage(cfg, model_cfg), run_dir.shards)
    if ctx.is_main:
        begin_stage(run_dir.train)
    torch.manual_seed(cfg.seed)

    train_data = BlockDataset(run_dir.shards / "train.bin", cfg.block_size)
    valid_data = BlockDataset(run_dir.shards / "valid.bin", cfg.block_size)
    if train_data.num_blocks < 1:
        raise GlottaError(
            f"{run_dir.shards / 'train.bin'} holds fewer than block_size+1 = {cfg.block_size + 1} "
            "tokens; lower train.block_size or add text"
        )
    plan = plan_steps(cfg, ctx.world_size, train_data.num_blocks)

    model = build_causal_lm(model_cfg, meta["vocab_size"], cfg.block_size, meta["eos_id"])
    model.to(ctx.device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, plan.total_steps, cfg)

    step, tokens_seen, elapsed_before = 0, 0, 0.0
    position = DataPosition()
    resume_from = checkpoint.find_resume_checkpoint(run_dir.checkpoints)
    if resume == "always" and resume_from is None:
        raise GlottaError(f"--resume: no checkpoint in {run_dir.checkpoints}")
    if resume == "never" and ctx.is_main:
        shutil.rmtree(run_dir.checkpoints, ignore_errors=True)  # a fresh start forgets old runs
        resume_from = None
    if resume != "never" and resume_from is not None:
        state = checkpoint.load_checkpoint(resume_from, model, optimizer, scheduler)
        step, tokens_seen = state["step"], state["tokens_seen"]
        elapsed_before = state["elapsed_seconds"]
        position = DataPosition(**state["data_position"])
        if ctx.is_main:
            print(f"glotta: resuming from {resume_from} (step {step})", flush=True)
    sampler = EpochSampler(train_data.num_blocks, cfg.seed, position)

    amp = autocast_dtype(cfg, ctx.device)
    forward_model: torch.nn.Module = model
    if cfg.compile:
        forward_model = torch.compile(forward_model)
    if ctx.enabled:
        device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        forward_model = torch.nn.parallel.DistributedDataParallel(
            forward_model, device_ids=device_ids
        )

    if ctx.is_main:
        _log_plan(cfg, plan, model, amp, ctx)
        _write_train_config(run_dir, cfg, model_cfg, plan, model, ctx)
    metrics = MetricsLog(run_dir.train, enabled=ctx.is_main, resume_step=step)
    tokens_per_step = plan.global_batch * cfg.block_size
    progress = tqdm(
        total=plan.total_steps,
        initial=step,
        desc="train",
        unit="step",
        disable=not ctx.is_main,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    window_start, window_tokens = start, 0
    last_loss = float("nan")
    val_loss = None

    def trainer_state() -> dict:
        return {
            "step": step,
            "tokens_seen": tokens_seen,
            "elapsed_seconds": elapsed_before + time.perf_counter() - start,
            "data_position": sampler.position.state_dict(),
            "global_batch": plan.global_batch,
            "world_size": ctx.world_size,
            "fingerprint": fingerprint,
            "last_train_loss": last_loss,
            "val_loss": val_loss,
        }

    def save() -> None:
        if ctx.is_main:
            checkpoint.save_checkpoint(
                run_dir.checkpoints,
                step,
                model,
                optimizer,
                scheduler,
                trainer_state(),
                cfg.keep_checkpoints,
            )
        barrier(ctx)

    forward_model.train()
    with StopRequest() as stop:
        while step < plan.total_steps:
            indices = rank_slice(sampler.take(plan.global_batch), ctx.rank, ctx.world_size)
            loss_sum = 0.0
            for micro in range(plan.accumulation):
                batch = indices[micro * plan.micro_batch_size : (micro + 1) * plan.micro_batch_size]
                inputs, targets = batch_to(train_data.batch(batch), ctx.device)
                last_micro = micro == plan.accumulation - 1
                sync = (
                    contextlib.nullcontext()
                    if (last_micro or not ctx.enabled)
                    else forward_model.no_sync()
                )
                with sync:
                    with _autocast(ctx.device, amp):
                        loss = token_loss_sum(forward_model, inputs, targets)
                    # DDP averages gradients over processes; scaling by world size turns that
                    # average into the sum, so the gradient is d(total loss)/d(w) / step tokens.
                    (loss * ctx.world_size / (tokens_per_step)).backward()
                loss_sum += loss.item()
            grad_norm = 0.0
            if cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += tokens_per_step
            window_tokens += tokens_per_step
            (total_loss,) = all_reduce_sum([loss_sum], ctx)
            last_loss = total_loss / tokens_per_step

            if step % cfg.log_interval == 0 or step == plan.total_steps:
                now = time.perf_counter()
                rate = window_tokens / max(now - window_start, 1e-9)
                window_start, window_tokens = now, 0
                metrics.write(
                    step,
                    loss=last_loss,
                    lr=scheduler.get_last_lr()[0],
                    grad_norm=grad_norm,
                    tokens_seen=tokens_seen,
                    tokens_per_second=rate,
                )
                progress.set_postfix(loss=f"{last_loss:.3f}", tok_s=f"{rate:,.0f}")
            progress.update(1)
            if (cfg.eval_interval and step % cfg.eval_interval == 0) or step == plan.total_steps:
                if valid_data.num_blocks:
                    val_loss = validation_loss(forward_model, valid_data, cfg, ctx, amp)
                    metrics.write(step, val_loss=val_loss, tokens_seen=tokens_seen)
            if step == plan.total_steps or step % cfg.checkpoint_interval == 0 or stop.requested:
                save()
            if stop.requested:
                progress.close()
                metrics.close()
                raise GlottaError(
                    f"stopped by signal at step {step}; checkpoint saved, continue with --resume"
                )
    progress.close()
    metrics.close()
    summary = trainer_state()
    summary["parameters"] = count_parameters(model)
    summary["total_steps"] = plan.total_steps
    if ctx.is_main:
        (run_dir.train / "summary.json").write_text(json.dumps(summary, indent=2))
        mark_complete(run_dir.train, "train", fingerprint, summary)
    barrier(ctx)
    return summary


@dataclasses.dataclass(frozen=True)
class TrainStage:
    """What the train stage's fingerprint covers."""

    train: TrainConfig
    model: ModelConfig


def batch_to(batch: tuple[torch.Tensor, torch.Tensor], device: torch.device):
    inputs, targets = batch
    non_blocking = device.type == "cuda"
    return inputs.to(device, non_blocking=non_blocking), targets.to(
        device, non_blocking=non_blocking
    )


class MetricsLog:
    """Metrics as JSON lines (for the model card's loss curve) and as a TensorBoard log.

    On resume, lines logged after the checkpoint's step (by the run that crashed) are dropped,
    so the curve has exactly one value per step.
    """

    def __init__(self, folder: Path, enabled: bool, resume_step: int = 0):
        self.enabled = enabled
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "metrics.jsonl"
        kept = []
        if resume_step and path.is_file():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
        path.write_text("".join(line + "\n" for line in kept))
        self._file = open(path, "a", encoding="utf-8")
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard; rank 0 only

        self._tensorboard = SummaryWriter(
            str(folder / "tensorboard"), purge_step=resume_step or None
        )

    def write(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        for key, value in values.items():
            if value is not None:
                self._tensorboard.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tensorboard.close()


def _log_plan(cfg: TrainConfig, plan: StepPlan, model, amp, ctx: Dist) -> None:
    print(
        f"glotta: {count_parameters(model) / 1e6:.2f}M parameters on {ctx.world_size} x "
        f"{ctx.device.type}; global batch {plan.global_batch} sequences = "
        f"{plan.micro_batch_size} micro x {plan.accumulation} accumulation x "
        f"{plan.world_size} processes, {cfg.block_size} tokens each; {plan.total_steps} steps; "
        f"precision {'bf16 autocast' if amp else 'fp32'}{'; compiled' if cfg.compile else ''}",
        flush=True,
    )


def _write_train_config(run_dir: RunDir, cfg, model_cfg, plan: StepPlan, model, ctx: Dist) -> None:
    info = {
        "train": dataclasses.asdict(cfg),
        "model": dataclasses.asdict(model_cfg),
        "model_config": model.config.to_dict(),
        "plan": dataclasses.asdict(plan),
        "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
    }
    (run_dir.train / "train_config.json").write_text(json.dumps(info, indent=2, default=str))
