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
