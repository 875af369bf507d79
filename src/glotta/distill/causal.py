"""Distilling a causal LM: the loss of a student that learns from a frozen teacher's predictions
(soft targets at temperature T), the data (next-token cross-entropy) and, optionally, the
teacher's last hidden state (cosine). Run by :func:`glotta.distill.stage.run_distill`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from glotta.config import DistillConfig
from glotta.distill.losses import (
    LossWeights,
    TermMeans,
    distillation_loss_sum,
    fused_distillation_loss_sum,
)
from glotta.distill.student import (
    attach_projection,
    copy_teacher_layers,
    freeze_position_embeddings,
    student_parameters,
)
from glotta.distill.teacher import (
    check_vocabulary,
    load_teacher,
    teacher_dtype,
    teacher_identity,
)
from glotta.errors import GlottaError
from glotta.models import build_model, count_parameters
from glotta.rundir import write_json_atomic
from glotta.train.distributed import Dist
from glotta.train.fused_loss import supports_fused_head
from glotta.train.objective import Objective, TrainingSetup


class DistillObjective(Objective, TrainingSetup):
    """Loss = alpha_ce KL(teacher/T || student/T) T^2 + alpha_clm CE + alpha_cos (1 - cos).

    Both the loss and the setup of the run: the teacher it loads is what the loss compares with,
    and what every checkpoint records (a student continues only with the teacher it started
    with).
    """

    def __init__(self, cfg: DistillConfig, tokenizer_dir: Path, info_path: Path | None = None):
        self.cfg = cfg
        self.weights = LossWeights(cfg.alpha_ce, cfg.alpha_clm, cfg.alpha_cos, cfg.temperature)
        self.identity = teacher_identity(cfg.teacher)
        self.tokenizer_dir = Path(tokenizer_dir)
        self.info_path = info_path
        self.teacher = None
        self.projection: torch.nn.Linear | None = None
        self.vocab_size = 0
        self.student_parameters = 0
        self.is_main = True
        self.terms = TermMeans()

    def build(self, model_cfg, objective, vocab_size, block_size, special_ids, ctx: Dist):
        """The student, then the teacher beside it (:meth:`prepare`)."""
        model = self.build_student(model_cfg, objective, vocab_size, block_size, special_ids)
        self.prepare(model, ctx)
        return model

    def build_student(self, model_cfg, objective, vocab_size, block_size, special_ids):
        """The student of ``[model]`` (its blocks are copied from the teacher in ``prepare``)."""
        return build_model(model_cfg, objective, vocab_size, block_size, special_ids)

    def prepare(self, model: torch.nn.Module, ctx: Dist) -> None:
        """Load the teacher, check the vocabulary, initialise the student, add the projection."""
        cfg = self.cfg
        dtype = teacher_dtype(cfg.teacher_dtype, ctx.device, log=ctx.is_main)
        # Copied blocks come from the fp32 weights, so the student starts with them exactly.
        teacher = load_teacher(cfg.teacher, torch.float32 if cfg.student_layers else dtype)
        self.vocab_size = check_vocabulary(
            teacher, cfg.teacher_tokenizer or cfg.teacher, self.tokenizer_dir
        )
        if model.get_input_embeddings().num_embeddings != self.vocab_size:
            raise GlottaError(
                f"the student has {model.get_input_embeddings().num_embeddings} embeddings but the "
                f"tokenizer {self.tokenizer_dir} has {self.vocab_size} tokens; re-run `glotta pack`"
            )
        if cfg.student_layers:
            copy_teacher_layers(model, teacher, list(cfg.student_layers))
        if cfg.alpha_cos:
            self.projection = attach_projection(model, teacher.config.hidden_size)
        if cfg.freeze_position_embeddings:
            freeze_position_embeddings(model)
        self.teacher = teacher.to(device=ctx.device, dtype=dtype)
        self.student_parameters = student_parameters(model)
        self.is_main = ctx.is_main
        if ctx.is_main:
            info = self.describe(model, dtype)
            if self.info_path is not None:
                self.info_path.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(self.info_path, info)
            print(
                f"glotta: distill: teacher {cfg.teacher} ({info['teacher_parameters'] / 1e6:.2f}M "
                f"parameters, {info['teacher_runs_in']}, frozen) -> student "
                f"{self.student_parameters / 1e6:.2f}M ("
                + (f"teacher blocks {list(cfg.student_layers)}" if cfg.student_layers else "random")
                + (f", projection {info['projection']}" if info["projection"] else "")
                + f"); loss {cfg.alpha_ce} KL(T={cfg.temperature}) + {cfg.alpha_clm} CE + "
                f"{cfg.alpha_cos} cos",
                flush=True,
            )

    def describe(self, model, dtype: torch.dtype) -> dict:
        """What the model card and `glotta compare` say about this distillation."""
        teacher = self.teacher
        projection = None
        if self.projection is not None:
            projection = [self.projection.in_features, self.projection.out_features]
        return {
            "teacher": self.identity,
            "teacher_tokenizer": self.cfg.teacher_tokenizer or self.cfg.teacher,
            "teacher_parameters": count_parameters(teacher),
            "teacher_model_type": teacher.config.model_type,
            "teacher_layers": getattr(teacher.config, "num_hidden_layers", None),
            "teacher_width": teacher.config.hidden_size,
            "teacher_runs_in": str(dtype).removeprefix("torch."),
            "student_parameters": self.student_parameters,
            "projection": projection,
            "config": dataclasses.asdict(self.cfg),
        }

    def loss_sum(self, model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.fused_loss and self.weights.alpha_ce and supports_fused_head(self.teacher):
            total, parts = fused_distillation_loss_sum(
                model, self.teacher, inputs, targets, self.weights, self.vocab_size, self.projection
            )  # train.fused_loss: neither the student's nor the teacher's logits stored whole
            return self._record(model, total, parts, targets.numel())
        hidden = bool(self.weights.alpha_cos)
        out = model(input_ids=inputs, output_hidden_states=hidden)
        if not (self.weights.alpha_ce or hidden):  # the data alone (an ablation): no teacher pass
            total, parts = distillation_loss_sum(out.logits, out.logits, targets, self.weights)
            return self._record(model, total, parts, targets.numel())
        with torch.inference_mode():  # no graph, no saved activations: the teacher only predicts
            taught = self.teacher(input_ids=inputs, output_hidden_states=hidden)
        student_hidden = teacher_hidden = None
        if hidden:
            student_hidden = out.hidden_states[-1]
            if self.projection is not None:
                student_hidden = self.projection(student_hidden)
            teacher_hidden = taught.hidden_states[-1]
        total, parts = distillation_loss_sum(
            out.logits,
            taught.logits[..., : self.vocab_size],  # padded vocabularies: the tokenizer's ids
            targets,
            self.weights,
            student_hidden,
            teacher_hidden,
        )
        return self._record(model, total, parts, targets.numel())

    def _record(self, model, total: torch.Tensor, parts: dict, positions: int) -> torch.Tensor:
        """Keep the terms of training steps (not of validation) for the metrics log."""
        if model.training:
            self.terms.add(parts, positions)
        return total

    def log_values(self) -> dict[str, float]:
        return self.terms.pop()

    def state(self) -> dict:
        return {"kind": "distill", "teacher": self.identity}

    def check_resume(self, state: dict) -> None:
        previous = state.get("teacher")
        if previous == self.identity:
            return
        was = (
            f"distilled from {previous.get('source')} (sha256 {previous.get('sha256')})"
            if previous
            else "trained without a teacher"
        )
        raise GlottaError(
            f"the checkpoint to resume was {was}, but distill.teacher is "
            f"{self.identity['source']} (sha256 {self.identity['sha256']}): a student continues "
            "only with the teacher it started with; start over with --no-resume"
        )
