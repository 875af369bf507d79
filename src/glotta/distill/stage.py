"""The distill stage: a student learns from a frozen teacher, through the ordinary training loop.

    glotta distill RECIPE                               # one process, CPU or one GPU
    torchrun --nproc_per_node 4 -m glotta distill RECIPE  # DDP (or FSDP: train.parallelism)
    glotta run RECIPE                                   # a recipe whose [distill] names a teacher

It writes what `glotta train` writes (RUN_DIR/train: checkpoints/, metrics.jsonl, summary.json,
COMPLETE.json with stage "distill"), so eval and export work on the student as on any model,
plus RUN_DIR/train/distill.json (teacher, weights of the loss terms, temperature, initialisation)
for the model card. Steps, batches, schedule, checkpoints, resume and DDP/FSDP are the loop's
(:func:`glotta.train.loop.run_train`); only the loss differs: :class:`DistillObjective` for a
causal LM student, :class:`glotta.distill.encoder.EncoderDistillObjective` for an encoder
(train.objective = "mlm").

The teacher lives beside the student, not inside it: it is neither wrapped in DDP nor sharded
nor checkpointed; every process holds a copy, frozen, in eval mode, runs it under
``torch.inference_mode()`` and in bf16 where the device has native bf16.
"""

from __future__ import annotations

import dataclasses

from glotta.config import DistillConfig, ModelConfig, TrainConfig
from glotta.distill.causal import DistillObjective
from glotta.distill.encoder import EncoderDistillObjective
from glotta.errors import GlottaError
from glotta.models import context_length, count_parameters
from glotta.rundir import RunDir, write_json_atomic
from glotta.train.loop import run_train
from glotta.train.plan import training_phases
from glotta.validate import distill_setting_problems

DISTILL_INFO = "distill.json"  # in RUN_DIR/train


@dataclasses.dataclass(frozen=True)
class DistillStage:
    """What the distill stage's fingerprint covers: the train stage's settings and the teacher's."""

    train: TrainConfig
    model: ModelConfig
    distill: DistillConfig


def check_config(cfg: DistillConfig, train_cfg: TrainConfig) -> None:
    """Reject settings that cannot work, naming the key, before any model is loaded."""
    if not cfg.teacher:
        raise GlottaError(
            "distill.teacher is empty: name a causal LM folder or hub id (e.g. --teacher "
            "runs/teacher/export)"
        )
    found = distill_setting_problems(cfg, train_cfg)
    if found:
        raise GlottaError("; ".join(found))


def _check_teacher_context(cfg: DistillConfig, train_cfg: TrainConfig) -> None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(cfg.teacher)
    except (OSError, ValueError) as exc:
        raise GlottaError(f"distill.teacher: cannot load {cfg.teacher!r}: {exc}") from None
    context = context_length(config)
    longest = max(phase.block_size for phase in training_phases(train_cfg))
    if context and context < longest:
        raise GlottaError(
            f"the teacher {cfg.teacher} reads at most {context} tokens but train.block_size "
            f"is {longest}; lower train.block_size"
        )


def run_distill(
    cfg: DistillConfig,
    run_dir: RunDir,
    train_cfg: TrainConfig,
    model_cfg: ModelConfig,
    resume: str = "auto",
) -> dict:
    """Stage entry: distill the teacher into a student of shape [model] (an encoder student: cut
    from the teacher, see :mod:`glotta.distill.encoder`), trained as [train] says.

    ``resume`` is 'auto', 'always' or 'never', as for training. Returns the training summary.
    """
    check_config(cfg, train_cfg)
    info_path = run_dir.train / DISTILL_INFO
    if train_cfg.objective == "mlm":
        objective = EncoderDistillObjective(cfg, run_dir.tokenizer, info_path)
    else:
        _check_teacher_context(cfg, train_cfg)
        objective = DistillObjective(cfg, run_dir.tokenizer, info_path)
    settings = DistillStage(train_cfg, model_cfg, cfg)
    summary = run_train(
        train_cfg, model_cfg, run_dir, resume, objective, "distill", settings, model_setup=objective
    )
    if objective.projection is not None:
        # The loop counted the projection too; the card describes the student as exported.
        summary["parameters"] = objective.student_parameters
        summary["projection_parameters"] = count_parameters(objective.projection)
        if objective.is_main:
            write_json_atomic(run_dir.train / "summary.json", summary)
    return summary
