"""What a training stage plugs into the loop: an :class:`Objective` (the loss, and how many
tokens it predicted) and a :class:`TrainingSetup` (how the model is made, and which checkpoints
it may continue). Plain pretraining uses the defaults; distillation (:mod:`glotta.distill`)
brings its own of both and reuses everything else of the loop: steps, token weighting,
checkpoints, resume, DDP/FSDP. The stage's name and fingerprint are the stage's own business
(arguments of :func:`glotta.train.loop.run_train`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glotta.config import ModelConfig
from glotta.errors import GlottaError
from glotta.masking import IGNORE_INDEX
from glotta.models import build_model
from glotta.train.distributed import Dist
from glotta.train.fused_loss import fused_token_loss_sum


def token_loss_sum(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, fused: bool = False
) -> torch.Tensor:
    """Sum of next-token cross-entropy over all positions (fp32 logits for a stable softmax).

    ``fused``: the LM head and the loss chunk by chunk, without the full logits
    (:mod:`glotta.train.fused_loss`; same value and gradients).
    """
    if fused:
        return fused_token_loss_sum(model, inputs, targets)
    logits = model(input_ids=inputs).logits
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
    )


class Objective:
    """What the loop minimises, and the count it is divided by.

    ``loss_sum`` returns a sum over the micro-batch's predicted tokens, which
    ``predicted_tokens`` counts (the loop divides the step's summed loss by their total over the
    step and all processes: a token-weighted loss). Validation uses ``validation_loss_sum``: the
    token loss by default, so validation losses compare across objectives that predict tokens.
    The default is the token loss of causal and masked LMs (targets not predicted are
    ``IGNORE_INDEX``).
    """

    # The loop sets this where train.fused_loss is on and the model supports it.
    fused_loss = False

    def loss_sum(self, model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return token_loss_sum(model, inputs, targets, self.fused_loss)

    def validation_loss_sum(self, model, inputs: torch.Tensor, targets: torch.Tensor):
        return token_loss_sum(model, inputs, targets, self.fused_loss)

    def predicted_tokens(self, inputs: torch.Tensor, targets: torch.Tensor) -> int:
        """Positions ``loss_sum`` sums over: every target that is not ignored (mlm: the masked)."""
        return int((targets != IGNORE_INDEX).sum())

    def log_values(self) -> dict[str, float]:
        """Extra values for the metrics log at each logged step (e.g. each loss term's mean)."""
        return {}


class TrainingSetup:
    """How the stage gets its model, and which checkpoints it may continue.

    ``build`` runs once on every process, before a checkpoint is loaded into the model: modules
    it adds to the model are trained and checkpointed with it. ``state()`` goes into every
    checkpoint's trainer_state.json and comes back to ``check_resume`` on resume.
    """

    def build(
        self,
        model_cfg: ModelConfig,
        objective: str,
        vocab_size: int,
        block_size: int,
        special_ids: dict[str, int],
        ctx: Dist,
    ) -> torch.nn.Module:
        """The model of ``[model]`` (:func:`glotta.models.build_model`)."""
        return build_model(model_cfg, objective, vocab_size, block_size, special_ids)

    def state(self) -> dict:
        return {}

    def check_resume(self, state: dict) -> None:
        """Plain training does not continue a distilled student (its loss would change silently)."""
        if state.get("kind") == "distill":
            teacher = (state.get("teacher") or {}).get("source", "?")
            raise GlottaError(
                f"the checkpoint to resume is a student distilled from {teacher}: continue it "
                "with `glotta distill`, or start plain training over (`glotta train "
                "--no-resume`, or delete RUN_DIR/train/checkpoints)"
            )
