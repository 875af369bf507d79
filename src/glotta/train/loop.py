"""The pretraining loop (objectives ``clm`` and ``mlm``): one entry function, ``run_train``.

    glotta train demo                                  # one process, CPU or one GPU
    torchrun --nproc_per_node 4 -m glotta train demo   # DDP, same results at the same global batch

Reads RUN_DIR/shards (train.bin, valid.bin, meta.json), writes RUN_DIR/train: checkpoints/,
metrics.jsonl, tensorboard/, summary.json, and COMPLETE.json last.

The loss is token-weighted over micro-batches and processes (sum of token losses divided by the
number of predicted tokens in the whole optimizer step), not a mean of per-batch means. For the
masked LM the predicted tokens are the masked ones, whose number varies from batch to batch: the
step's micro-batches are masked first and their count summed over processes before any backward
pass (see :mod:`glotta.masking` for blocks and masks; the causal LM reads RUN_DIR/shards only, the
masked LM also the tokenizer in RUN_DIR/tokenizer for its special tokens and word boundaries).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from glotta.config import ModelConfig, TrainConfig
from glotta.errors import GlottaError
from glotta.masking import (
    TRAIN_STREAM,
    VALID_STREAM,
    MaskedBlockDataset,
    MaskingSpec,
)
from glotta.models import (
    check_model_settings,
    count_parameters,
    extend_positions,
    transformer_blocks,
)
from glotta.rundir import (
    RunDir,
    begin_stage,
    is_complete,
    mark_complete,
    stage_fingerprint,
    write_json_atomic,
)
from glotta.train import checkpoint, provenance
from glotta.train.data import BlockDataset, DataPosition, EpochSampler, rank_slice
from glotta.train.distributed import Dist, all_reduce_sum, barrier, setup, teardown
from glotta.train.fused_loss import supports_fused_head
from glotta.train.host_memory import reuse_host_memory
from glotta.train.objective import Objective, TrainingSetup
from glotta.train.optim import build_optimizer, build_scheduler
from glotta.train.plan import (
    Precision,
    StepPlan,
    autocast_context,
    decide_precision,
    machine_key,
    phase_rope_thetas,
    plan_steps,
    precision_cache,
    training_phases,
)
from glotta.train.run_log import MetricsLog, StopRequest, log_plan, write_train_config


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module,
    data: BlockDataset,
    cfg: TrainConfig,
    ctx: Dist,
    amp: torch.dtype | None,
    objective: Objective | None = None,
) -> float:
    """Mean token loss on the first ``eval_batches`` micro-batches of the valid shard.

    Masked LM: the masks of a valid block depend on its index only, the same at every evaluation.
    """
    objective = objective or Objective()
    model.eval()
    count = min(data.num_blocks, cfg.eval_batches * cfg.micro_batch_size * ctx.world_size)
    count -= count % ctx.world_size
    indices = rank_slice(torch.arange(count).numpy(), ctx.rank, ctx.world_size)
    loss_sum, tokens = 0.0, 0
    for start in range(0, len(indices), cfg.micro_batch_size):
        rows = indices[start : start + cfg.micro_batch_size]
        inputs, targets = data.batch(rows, first_row=int(rows[0]))
        inputs, targets = inputs.to(ctx.device), targets.to(ctx.device)
        with autocast_context(ctx.device, amp):
            loss_sum += objective.validation_loss_sum(model, inputs, targets).item()
        tokens += objective.predicted_tokens(inputs, targets)
    model.train()
    loss_sum, tokens = all_reduce_sum([loss_sum, float(tokens)], ctx)
    return loss_sum / max(tokens, 1.0)


def read_shard_meta(run_dir: RunDir) -> dict:
    if not is_complete(run_dir.shards):
        raise GlottaError(f"no packed shards in {run_dir.shards}; run `glotta pack` first")
    return json.loads((run_dir.shards / "meta.json").read_text())


def open_blocks(
    cfg: TrainConfig, path: Path, masking: MaskingSpec | None, phase: int = 0, stream: int = 0
) -> BlockDataset | MaskedBlockDataset:
    """Next-token blocks (clm), or ``[CLS] ... [SEP]`` blocks masked anew at every step (mlm)."""
    if masking is None:
        return BlockDataset(path, cfg.block_size)
    return MaskedBlockDataset(
        path,
        cfg.block_size,
        masking,
        cfg.mlm_probability,
        cfg.whole_word_masking,
        seed=cfg.seed,
        phase=phase,
        stream=stream,
    )


def run_train(
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    run_dir: RunDir,
    resume: str = "auto",
    objective: Objective | None = None,
    stage: str = "train",
    settings=None,
    model_setup: TrainingSetup | None = None,
) -> dict:
    """Train (or continue training) the model; ``resume`` is 'auto', 'always' or 'never'.

    ``objective`` is the loss (default: the token loss) and ``model_setup`` makes the model and
    guards resumes (default: ``[model]`` from scratch or ``init_from``); ``stage`` names the
    stage in RUN_DIR/train/COMPLETE.json and ``settings`` is what its fingerprint covers
    (default: :class:`TrainStage`). The distill stage passes its own of all four.
    """
    settings = settings or TrainStage(cfg, model_cfg)
    check_model_settings(model_cfg, cfg, "[train]/[model]")
    meta = read_shard_meta(run_dir)
    ctx = setup(cfg.device)
    try:
        objective = objective or Objective()
        model_setup = model_setup or TrainingSetup()
        return _train(
            cfg, model_cfg, run_dir, resume, meta, ctx, objective, model_setup, stage, settings
        )
    finally:
        teardown()


@dataclasses.dataclass
class RunProgress:
    """What the whole run has done so far; saved in every checkpoint's trainer_state.json."""

    step: int = 0
    tokens_seen: int = 0
    elapsed_before: float = 0.0  # seconds spent by earlier (interrupted) processes
    last_loss: float = float("nan")
    val_loss: float | None = None
    best_val_loss: float | None = None
    provenance: dict = dataclasses.field(default_factory=dict)  # what the weights come from
    precision: str | None = None  # 'bf16' or 'fp32' once decided; a resume keeps it


@dataclasses.dataclass
class ResumePoint:
    """A checkpoint being resumed: its trainer state and its optimizer/schedule/RNG tensors."""

    path: Path
    trainer_state: dict
    training: dict  # read once: for a large model the optimizer state is gigabytes

    @property
    def phase(self) -> int:
        return self.trainer_state.get("phase", 0)


def _train(
    cfg,
    model_cfg,
    run_dir: RunDir,
    resume: str,
    meta: dict,
    ctx: Dist,
    objective: Objective,
    model_setup: TrainingSetup,
    stage: str,
    settings,
) -> dict:
    fingerprint = stage_fingerprint(settings, run_dir.shards)
    if ctx.is_main:
        begin_stage(run_dir.train)
    torch.manual_seed(cfg.seed)
    phases = training_phases(cfg)
    rope_thetas = phase_rope_thetas(cfg)
    if ctx.enabled and cfg.parallelism == "fsdp":
        if cfg.compile:
            raise GlottaError("train.compile with train.parallelism = 'fsdp' is not supported yet")
        if len({p.block_size for p in phases}) > 1:
            raise GlottaError(
                "train.phases with a new block_size need train.parallelism = 'ddp' for now "
                "(sharded position embeddings cannot be extended in place)"
            )
    train_path = run_dir.shards / "train.bin"
    masking = None
    if cfg.objective == "mlm":
        if not (run_dir.tokenizer / "tokenizer.json").is_file():
            raise GlottaError(
                f"masked-LM training reads the tokenizer in {run_dir.tokenizer} (special tokens, "
                "word boundaries); run `glotta tokenizer` first"
            )
        masking = MaskingSpec.from_folder(run_dir.tokenizer)
    plans = []
    for phase in phases:
        num_blocks = open_blocks(phase, train_path, masking).num_blocks
        if num_blocks < 1:
            raise GlottaError(
                f"{train_path} holds fewer than block_size+1 = {phase.block_size + 1} tokens; "
                "lower train.block_size or add text"
            )
        plans.append(plan_steps(phase, ctx.world_size, num_blocks))
    phase_ends = list(itertools.accumulate(plan.total_steps for plan in plans))

    special_ids = {"eos": meta["eos_id"]}
    if masking is not None:
        special_ids.update(pad=masking.pad_id, cls=masking.cls_id, sep=masking.sep_id)
    model = model_setup.build(
        model_cfg, cfg.objective, meta["vocab_size"], phases[0].block_size, special_ids, ctx
    )
    run = RunProgress()
    resume_from, damaged = None, []
    if resume == "never":
        if ctx.is_main:
            shutil.rmtree(run_dir.checkpoints, ignore_errors=True)  # a fresh start forgets
        barrier(ctx)
    else:  # the newest intact checkpoint; damaged newer ones are named and set aside below
        resume_from, damaged = checkpoint.find_resume_checkpoint(run_dir.checkpoints)
    if resume == "always" and resume_from is None:
        raise GlottaError(f"--resume: no checkpoint in {run_dir.checkpoints}")
    record = provenance.provenance(settings, run_dir)
    changed, notes = {}, []
    resume_point = None
    if resume_from is not None:
        resume_state = checkpoint.read_trainer_state(resume_from)
        model_setup.check_resume(resume_state.get("objective", {}))
        changed = provenance.check_resume(resume_state.get("provenance"), record, resume_from)
        barrier(ctx)  # every process has picked its checkpoint before damaged ones move
        if ctx.is_main:
            notes = checkpoint.set_aside_damaged(damaged, resume_from)
        resume_point = ResumePoint(
            resume_from, resume_state, checkpoint.read_training_state(resume_from)
        )
        run = RunProgress(
            step=resume_state["step"],
            tokens_seen=resume_state["tokens_seen"],
            elapsed_before=resume_state["elapsed_seconds"],
            last_loss=resume_state["last_train_loss"],
            val_loss=resume_state["val_loss"],
            best_val_loss=resume_state.get("best_val_loss"),
            precision=resume_state.get("precision"),
        )
        longest = max(p.block_size for p in phases[: resume_point.phase + 1])
        extend_positions(model, longest, rope_thetas[resume_point.phase])
        checkpoint.load_weights(resume_from, model)
        checkpoint.restore_rng(resume_point.training)
        if ctx.is_main:
            print(f"glotta: resuming from {resume_from} (step {run.step})", flush=True)
    run.provenance = record
    if ctx.is_main:
        provenance.record_session(run_dir.train, resume_from, run.step, changed, notes, cfg)
    if cfg.activation_checkpointing:
        options = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    model.to(ctx.device)

    metrics = MetricsLog(run_dir.train, enabled=ctx.is_main, resume_step=run.step)
    progress = tqdm(
        total=phase_ends[-1],
        initial=run.step,
        desc="train",
        unit="step",
        disable=not ctx.is_main,
        dynamic_ncols=True,
    )
    if ctx.is_main:
        write_train_config(run_dir, cfg, model_cfg, plans, model, ctx, run.precision)
    try:
        with StopRequest() as stop:
            for index, (phase, plan) in enumerate(zip(phases, plans, strict=True)):
                if run.step >= phase_ends[index]:
                    continue  # finished before the resume
                theta = rope_thetas[index]
                if extend_positions(model, phase.block_size, theta) and ctx.is_main:
                    print(
                        f"glotta: phase {index + 1}: context extended to {phase.block_size}"
                        + (f", RoPE base {theta:g}" if theta else "")
                    )
                resume_here = resume_point if resume_point and resume_point.phase == index else None
                model = _train_phase(
                    phase, plan, index, phase_ends[index] - plan.total_steps, model, run,
                    resume_here, run_dir, fingerprint, ctx, metrics, progress, stop, masking,
                    objective, model_setup,
                )  # fmt: skip
                resume_point = None  # later phases start fresh
                if ctx.is_main:  # again: n_positions may have grown
                    write_train_config(run_dir, cfg, model_cfg, plans, model, ctx, run.precision)
    finally:
        progress.close()
        metrics.close()
    summary = _trainer_state(run, len(phases) - 1, None, plans[-1], ctx, fingerprint, 0.0)
    summary["parameters"] = count_parameters(model)
    summary["total_steps"] = phase_ends[-1]
    if ctx.is_main:
        write_json_atomic(run_dir.train / "summary.json", summary)
        mark_complete(run_dir.train, stage, fingerprint, summary)
    barrier(ctx)
    return summary


def _train_phase(
    cfg: TrainConfig,
    plan: StepPlan,
    phase_index: int,
    first_step: int,
    model: torch.nn.Module,
    run: RunProgress,
    resume: ResumePoint | None,
    run_dir: RunDir,
    fingerprint: str,
    ctx: Dist,
    metrics: MetricsLog,
    progress: tqdm,
    stop: StopRequest,
    masking: MaskingSpec | None = None,
    objective: Objective = Objective(),
    model_setup: TrainingSetup = TrainingSetup(),
) -> torch.nn.Module:
    """Run one phase from ``run.step`` to its last step; returns the (possibly sharded) model."""
    # Before the phase's buffers exist (optimizer state, steps); a no-op after the first phase.
    host_memory_reused = reuse_host_memory(cfg.reuse_host_memory, ctx.device)
    shards = run_dir.shards
    train_data = open_blocks(cfg, shards / "train.bin", masking, phase_index, TRAIN_STREAM)
    valid_data = open_blocks(cfg, shards / "valid.bin", masking, phase_index, VALID_STREAM)
    sharded = ctx.enabled and cfg.parallelism == "fsdp"
    if sharded:
        model = shard_model(model)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, plan.total_steps, cfg)
    position = DataPosition()
    if resume is not None:
        checkpoint.load_training_state(resume.training, model, optimizer, scheduler, sharded)
        position = DataPosition(**resume.trainer_state["data_position"])
    sampler = EpochSampler(train_data.num_blocks, cfg.seed + phase_index, position)

    # FSDP shards the head's weight between forward calls: the fused loss needs it whole.
    objective.fused_loss = cfg.fused_loss and not sharded and supports_fused_head(model)
    precision = _choose_precision(cfg, ctx, model, objective, train_data, plan, run.precision)
    run.precision = precision.name
    amp = precision.dtype
    forward_model: torch.nn.Module = model
    if cfg.compile:
        forward_model = torch.compile(forward_model)
    if ctx.enabled and not sharded:
        device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        forward_model = torch.nn.parallel.DistributedDataParallel(
            forward_model, device_ids=device_ids
        )
    if ctx.is_main:
        log_plan(cfg, plan, phase_index, model, precision, ctx, host_memory_reused)

    tokens_per_step = plan.global_batch * cfg.block_size
    last_step = first_step + plan.total_steps
    start = time.perf_counter()
    window_start, window_tokens, window_data = start, 0, 0.0

    def save(is_best: bool) -> None:
        state = _trainer_state(
            run, phase_index, sampler.position, plan, ctx, fingerprint, time.perf_counter() - start
        )
        state["objective"] = model_setup.state()  # e.g. the teacher a student learns from
        checkpoint.save_checkpoint(
            run_dir.checkpoints, run.step, model, optimizer, scheduler, state,
            cfg.keep_checkpoints, is_best=is_best, sharded=sharded, is_main=ctx.is_main,
        )  # fmt: skip
        barrier(ctx)

    forward_model.train()
    while run.step < last_step:
        indices = rank_slice(sampler.take(plan.global_batch), ctx.rank, ctx.world_size)
        size = plan.micro_batch_size
        data_start = time.perf_counter()
        # Rows are numbered in the global batch, so masks do not depend on the process layout.
        micro_batches = [
            train_data.batch(
                indices[m * size : (m + 1) * size],
                step=run.step,
                first_row=ctx.rank * len(indices) + m * size,
            )
            for m in range(plan.accumulation)
        ]
        window_data += time.perf_counter() - data_start  # the loop waits for its data here
        # Tokens predicted in the whole step on all processes: all of them (clm), or the masked
        # ones (mlm), whose number varies and is counted before any backward pass.
        step_targets = float(tokens_per_step)
        if masking is not None:
            local = sum(objective.predicted_tokens(*batch) for batch in micro_batches)
            step_targets = max(1.0, all_reduce_sum([float(local)], ctx)[0])
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for micro in range(plan.accumulation):
            inputs, targets = batch_to(micro_batches[micro], ctx.device)
            # DDP: synchronise gradients only on the last micro-batch of the step. FSDP2
            # reduce-scatters every micro-batch (its no-sync mode keeps full gradients).
            defer_sync = ctx.enabled and not sharded and micro < plan.accumulation - 1
            with forward_model.no_sync() if defer_sync else contextlib.nullcontext():
                with autocast_context(ctx.device, amp):
                    loss = objective.loss_sum(forward_model, inputs, targets)
                # DDP and FSDP average gradients over processes; scaling by world size turns
                # that average into the sum, so the gradient is d(total loss)/d(w) / step tokens.
                (loss * ctx.world_size / step_targets).backward()
            loss_sum += loss.detach()  # stays on the device: no host sync per micro-batch
        grad_norm = torch.zeros(())
        if cfg.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        run.step += 1
        run.tokens_seen += tokens_per_step
        window_tokens += tokens_per_step
        # One collective per step: the loss, and whether any process was asked to stop (all
        # must stop at the same step, or the others would wait forever in the next one).
        # One process reads the loss (a host sync) only on steps that log or checkpoint.
        if ctx.enabled:
            total_loss, stop_votes = all_reduce_sum([float(loss_sum), float(stop.requested)], ctx)
        else:
            total_loss, stop_votes = loss_sum, float(stop.requested)
        log_now = run.step % cfg.log_interval == 0 or run.step == last_step
        checkpoint_now = (
            run.step == last_step or run.step % cfg.checkpoint_interval == 0 or stop_votes > 0
        )
        if log_now or checkpoint_now:
            run.last_loss = float(total_loss) / step_targets

        if log_now:
            now = time.perf_counter()
            rate = window_tokens / max(now - window_start, 1e-9)
            metrics.write(
                run.step,
                loss=run.last_loss,
                lr=scheduler.get_last_lr()[0],
                grad_norm=float(grad_norm),
                tokens_seen=run.tokens_seen,
                tokens_per_second=rate,
                data_seconds=round(window_data, 6),
                **objective.log_values(),
            )
            window_start, window_tokens, window_data = now, 0, 0.0
            progress.set_postfix(loss=f"{run.last_loss:.3f}", tok_s=f"{rate:,.0f}")
        progress.update(1)
        evaluate_now = (cfg.eval_interval and run.step % cfg.eval_interval == 0) or checkpoint_now
        is_best = False
        if evaluate_now and valid_data.num_blocks:
            # Validation also runs at every checkpoint, so the best checkpoint is known.
            run.val_loss = validation_loss(forward_model, valid_data, cfg, ctx, amp, objective)
            metrics.write(run.step, val_loss=run.val_loss, tokens_seen=run.tokens_seen)
            is_best = run.best_val_loss is None or run.val_loss < run.best_val_loss
            if is_best and checkpoint_now:
                run.best_val_loss = run.val_loss
        if checkpoint_now:
            save(is_best)
        if stop_votes > 0:
            raise GlottaError(
                f"stopped by signal at step {run.step}; checkpoint saved, continue with --resume"
            )
    run.elapsed_before += time.perf_counter() - start
    return model


def _trainer_state(
    run: RunProgress,
    phase: int,
    position: DataPosition | None,
    plan: StepPlan,
    ctx: Dist,
    fingerprint: str,
    phase_seconds: float,
) -> dict:
    return {
        "step": run.step,
        "phase": phase,
        "tokens_seen": run.tokens_seen,
        "elapsed_seconds": run.elapsed_before + phase_seconds,
        "data_position": position.state_dict() if position else None,
        "global_batch": plan.global_batch,
        "world_size": ctx.world_size,
        "fingerprint": fingerprint,
        "last_train_loss": run.last_loss,
        "val_loss": run.val_loss,
        "best_val_loss": run.best_val_loss,
        "provenance": run.provenance,
        "precision": run.precision,
    }


def _choose_precision(cfg, ctx: Dist, model, objective, train_data, plan, recorded):
    """:func:`decide_precision` timing this model's real training step on one micro-batch.

    The timing steps leave no trace: gradients are dropped and the random state (dropout) is
    restored, so a run that measured trains exactly like one that did not. Under torchrun each
    process measures the unwrapped model (no collectives) and bf16 needs every process's vote.
    """
    rows = list(range(min(plan.micro_batch_size, train_data.num_blocks)))

    def step_seconds(dtype: torch.dtype | None) -> float:
        inputs, targets = batch_to(train_data.batch(rows), ctx.device)
        with torch.random.fork_rng(devices=[]):
            start = time.perf_counter()
            with autocast_context(ctx.device, dtype):
                loss = objective.loss_sum(model, inputs, targets)
            loss.backward()
            seconds = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        return seconds

    step = (
        f"{count_parameters(model)} parameters, {len(rows)} x {train_data.block_size} tokens, "
        f"{type(objective).__name__}{' fused' if objective.fused_loss else ''}"
    )
    precision = decide_precision(
        cfg, ctx.device, step_seconds, recorded, precision_cache(), f"{machine_key()}|{step}"
    )
    if ctx.enabled:
        votes = all_reduce_sum([float(precision.dtype is not None)], ctx)[0]
        if 0 < votes < ctx.world_size:
            precision = Precision(None, "auto: not every process measured bf16 faster")
    return precision


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: shard each transformer block, then the rest (embeddings, final norm, head)."""
    from torch.distributed.fsdp import fully_shard

    for block in transformer_blocks(model):
        fully_shard(block)
    fully_shard(model)
    return model


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
