"""The optimizers (AdamW; Muon for hidden matrices with AdamW for the rest) and the learning-rate
schedule (warmup, then cosine, linear, constant or warmup-stable-decay)."""

from __future__ import annotations

import math

import torch

from glotta.config import TrainConfig


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names over the model's trainable parameters.

    AdamW: biases and norm weights (1-D tensors) get no weight decay (GPT-2/BERT practice).
    Muon: the 2-D matrices inside the transformer blocks; AdamW keeps embeddings, the LM head,
    norms and biases (Jordan et al. 2024: orthogonalised updates suit hidden matrices only).
    """
    params = _unique_trainable(model)
    if cfg.optimizer == "muon":
        hidden = {id(p) for p in _block_matrices(model)}
        matrices = [p for p in params if id(p) in hidden]
        rest = [p for p in params if id(p) not in hidden]
        return MuonWithAdamW(_adamw(rest, cfg), _muon(matrices, cfg))
    return _adamw(params, cfg)


def _unique_trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    seen: set[int] = set()
    found = []
    for param in model.parameters():
        if param.requires_grad and id(param) not in seen:  # tied embeddings appear twice
            seen.add(id(param))
            found.append(param)
    return found


def _block_matrices(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    # Imported here: models/ imports transformers, which optimizer tests without a model avoid.
    from glotta.models import transformer_blocks

    blocks = transformer_blocks(model)
    return [p for p in blocks.parameters() if p.dim() == 2 and p.requires_grad]


def _adamw(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel runs the whole update in one pass (CPU and CUDA since torch 2.4).
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        groups,
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        fused=fused,
    )


def _muon(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Muon:
    return torch.optim.Muon(
        params,
        lr=cfg.muon_learning_rate or cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        momentum=cfg.muon_momentum,
        nesterov=cfg.muon_nesterov,
        ns_steps=cfg.muon_ns_steps,
        adjust_lr_fn=cfg.muon_adjust_lr,
    )


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon and AdamW stepping together as one optimizer: one list of parameter groups (AdamW's
    first) that the schedule scales, one state and one state dict, so checkpoints, resume and
    ``torch.distributed.checkpoint``'s state-dict helpers treat it like any optimizer."""

    def __init__(self, adamw: torch.optim.AdamW, muon: torch.optim.Muon) -> None:
        self.adamw, self.muon = adamw, muon
        # The groups are the inner optimizers' own dicts: the schedule's lr reaches them.
        super().__init__(adamw.param_groups + muon.param_groups, defaults={})
        self._share_state()

    def _share_state(self) -> None:
        # One state dict keyed by parameter; the two optimizers' parameters are disjoint.
        self.adamw.state = self.muon.state = self.state
        split = len(self.adamw.param_groups)
        self.adamw.param_groups = self.param_groups[:split]
        self.muon.param_groups = self.param_groups[split:]

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)  # replaces self.state and the group dicts
        self._share_state()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.adamw.step()
        self.muon.step()
        return loss


def lr_multiplier(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Linear warmup to the peak, then the decay ``cfg.decay`` names down to ``min_lr_ratio``.

    'wsd' (warmup-stable-decay; Hägele et al. 2024) holds the peak until the last
    ``cooldown_fraction`` of the steps, then cools down linearly or as 1 - sqrt(progress); its
    value before the cool-down does not depend on ``total_steps``, so a run can be extended.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.decay == "constant":
        return 1.0
    if cfg.decay == "wsd":
        start = cooldown_start(total_steps, cfg)
        if step < start:
            return 1.0
        progress = min(1.0, (step - start) / max(1, total_steps - start))
        shape = 1.0 - (math.sqrt(progress) if cfg.cooldown_shape == "1-sqrt" else progress)
    else:
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        if cfg.decay == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            shape = 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def cooldown_start(total_steps: int, cfg: TrainConfig) -> int:
    """The first step of a 'wsd' schedule's cool-down (never inside the warmup)."""
    return max(cfg.warmup_steps, total_steps - round(cfg.cooldown_fraction * total_steps))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, total_steps, cfg)
    )
