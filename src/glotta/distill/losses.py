"""Distillation losses, summed over predicted tokens like the loop's cross-entropy.

    loss = alpha_ce  * KL(softmax(teacher / T) || softmax(student / T)) * T^2
         + alpha_clm * cross-entropy(student, next tokens)
         + alpha_cos * (1 - cos(student hidden state, teacher hidden state))

(Hinton et al. 2015 for the soft targets and the T^2 that keeps their gradients at the scale of
the hard-target loss; Sanh et al. 2019, DistilBERT/DistilGPT2, for the three terms and weights.)

Every term is a *sum over positions*; the training loop divides the step's total by the number of
predicted tokens in the whole step (all micro-batches, all processes), so each term is a
token-weighted mean exactly like the plain cross-entropy, and ``alpha_ce = 0, alpha_cos = 0,
alpha_clm = 1`` is ordinary training. The KL term is therefore HF's ``KLDivLoss(reduction=
"batchmean")`` over flattened positions, and the cosine term its ``CosineEmbeddingLoss``
(target 1) with mean reduction, once divided by the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    alpha_ce: float = 5.0
    alpha_clm: float = 0.5
    alpha_cos: float = 1.0
    temperature: float = 2.0


def soft_target_kl_sum(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Sum over positions of KL(p_teacher || p_student) at temperature T, times T^2.

    Both are softened by T; fp32 softmax. The teacher's logits may come from inference mode:
    only new tensors computed from them are kept for the backward pass.
    """
    t = float(temperature)
    student = F.log_softmax(student_logits.float() / t, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = F.kl_div(
        student.reshape(-1, student.size(-1)),
        teacher.reshape(-1, teacher.size(-1)),
        log_target=True,
        reduction="sum",
    )
    return kl * (t * t)


def cosine_loss_sum(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Sum over positions of 1 - cos(student, teacher); the widths must already agree."""
    student = F.normalize(student_hidden.float(), dim=-1)
    teacher = F.normalize(teacher_hidden.float(), dim=-1)
    return (1.0 - (student * teacher).sum(dim=-1)).sum()


def distillation_loss_sum(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    weights: LossWeights,
    student_hidden: torch.Tensor | None = None,
    teacher_hidden: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted sum of the three terms over all positions, and each term's sum (detached).

    ``student_hidden`` is already projected to the teacher's width when they differ.
    """
    total = student_logits.new_zeros((), dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}  # detached: no device sync here
    if weights.alpha_ce:
        kl = soft_target_kl_sum(student_logits, teacher_logits, weights.temperature)
        total = total + weights.alpha_ce * kl
        parts["kl"] = kl.detach()
    if weights.alpha_clm:
        ce = F.cross_entropy(
            student_logits.float().reshape(-1, student_logits.size(-1)),
            targets.reshape(-1),
            reduction="sum",
        )
        total = total + weights.alpha_clm * ce
        parts["ce"] = ce.detach()
    if weights.alpha_cos:
        if student_hidden is None or teacher_hidden is None:
            raise ValueError("alpha_cos > 0 needs the student's and the teacher's hidden states")
        cos = cosine_loss_sum(student_hidden, teacher_hidden)
        total = total + weights.alpha_cos * cos
        parts["cos"] = cos.detach()
    return total, parts


def fused_distillation_loss_sum(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    weights: LossWeights,
    vocab_size: int,
    projection: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`distillation_loss_sum` of a causal student and teacher, logits never stored whole.

    The KL and cross-entropy terms go through :mod:`glotta.train.fused_loss`: the student's and
    the teacher's final hidden states meet their LM heads chunk by chunk (the teacher runs in
    inference mode). The cosine term reads ``hidden_states[-1]`` exactly as the plain path does.
    """
    from glotta.train.fused_loss import (
        TeacherHead,
        hidden_and_head,
        is_compiled,
        linear_distillation_sum,
    )

    cos = bool(weights.alpha_cos)
    hidden, head, out = hidden_and_head(student, inputs, output_hidden_states=cos)
    teacher_side = taught = None
    if weights.alpha_ce or cos:
        with torch.inference_mode():  # no graph, no saved activations: the teacher only predicts
            t_hidden, t_head, taught = hidden_and_head(teacher, inputs, output_hidden_states=cos)
        teacher_side = TeacherHead(
            hidden=t_hidden, weight=t_head.weight, bias=t_head.bias, vocab_size=vocab_size
        )
    total, parts = linear_distillation_sum(
        hidden, head.weight, targets, teacher_side, weights.temperature, weights.alpha_ce,
        weights.alpha_clm, bias=head.bias, compiled=is_compiled(student),
    )  # fmt: skip
    if cos:
        student_hidden = out.hidden_states[-1]
        if projection is not None:
            student_hidden = projection(student_hidden)
        term = cosine_loss_sum(student_hidden, taught.hidden_states[-1])
        total = total + weights.alpha_cos * term
        parts["cos"] = term.detach()
    return total, parts


# Encoder (masked-LM) students: layer-to-layer losses of TinyBERT (Jiao et al. 2020), which
# LightMBERT (Jiao et al. 2021) applies to an mBERT student made of the teacher's bottom layers.
# Both are sums over positions, like the terms above; the loop divides by the step's positions.


def hidden_mse_sum(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Sum over positions of the mean squared error over the hidden width (widths already equal)."""
    return (student_hidden.float() - teacher_hidden.float()).pow(2).mean(dim=-1).sum()


def attention_mse_sum(student_scores: torch.Tensor, teacher_scores: torch.Tensor) -> torch.Tensor:
    """Sum over query positions of the mean squared error of attention scores over heads and keys.

    Scores are ``(batch, heads, queries, keys)`` before the softmax, as TinyBERT compares them
    (they carry more than the probabilities, which the softmax squeezes towards 0 for most keys).
    """
    return (student_scores.float() - teacher_scores.float()).pow(2).mean(dim=(1, 3)).sum()


class TermMeans:
    """Each loss term's mean per position since the last report, for the metrics log.

    Sums stay on the device (no sync per micro-batch) until ``pop``; under DDP they are process
    0's share of the step, an estimate of the whole (the loss itself is all-reduced).
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.positions = 0

    def add(self, parts: dict[str, torch.Tensor], positions: int) -> None:
        for name, value in parts.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.positions += positions

    def pop(self) -> dict[str, float]:
        means = {f"loss_{k}": float(v) / max(self.positions, 1) for k, v in self.sums.items()}
        self.sums, self.positions = {}, 0
        return means
