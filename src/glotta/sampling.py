"""Sampling the next token: the logits processors in transformers' order, then one seeded draw.

Every decoding path (``glotta generate``, ``glotta serve``, through ``glotta.scheduler``) samples
here, each row with its own ``torch.Generator``, so a row's tokens do not depend on what else is
in its batch.
"""

from __future__ import annotations

import torch

from glotta.config import GenerateConfig


def _candidates(
    logits: torch.Tensor, history: torch.Tensor, cfg: GenerateConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids that may be sampled next and their scaled logits, most likely first.

    Repetition penalty, temperature, top-k, then top-p (the order of transformers' warpers).
    Top-k runs first on the whole vocabulary, so top-p sorts only k values instead of all of
    them: most of the per-token sampling cost at a 32k vocabulary.
    """
    logits = logits.float()
    if cfg.repetition_penalty != 1.0 and history.numel():
        logits = logits.clone()
        seen = logits[history]
        # CTRL's penalty (Keskar et al., 2019): push seen tokens' logits towards less likely.
        logits[history] = torch.where(
            seen > 0, seen / cfg.repetition_penalty, seen * cfg.repetition_penalty
        )
    if cfg.temperature <= 0:  # greedy: the single most likely token
        value, index = logits.max(dim=-1)
        return index.view(1), value.view(1)
    logits = logits / cfg.temperature
    if cfg.top_k > 0:
        values, ids = torch.topk(logits, min(cfg.top_k, logits.numel()))  # sorted, descending
        at_least_kth = logits >= values[-1]
        if int(at_least_kth.sum()) > len(ids):  # ties with the k-th value all stay, as in HF
            tied = at_least_kth.nonzero().flatten()
            values, order = torch.sort(logits[tied], descending=True)
            ids = tied[order]
    else:
        values, ids = torch.sort(logits, descending=True)
    if cfg.top_p < 1.0:
        probs = torch.softmax(values, dim=-1)
        # Keep a token while the tokens before it have not yet reached top_p (the first always).
        keep = (probs.cumsum(-1) - probs) < cfg.top_p
        values, ids = values[keep], ids[keep]
    return ids, values


def _filter_logits(
    logits: torch.Tensor, history: torch.Tensor, cfg: GenerateConfig
) -> torch.Tensor:
    """The full (vocab,) logit vector after filtering: -inf for every token not a candidate."""
    ids, values = _candidates(logits, history, cfg)
    if cfg.temperature <= 0:
        return logits.float()
    filtered = torch.full_like(logits, float("-inf"), dtype=torch.float32)
    filtered[ids] = values
    return filtered


def sample_next(
    logits: torch.Tensor, history: torch.Tensor, cfg: GenerateConfig, generator: torch.Generator
) -> int:
    """The next token id from one position's logits: the filters of ``_candidates``, then one
    draw from ``generator`` (none when a single candidate is left, e.g. greedy)."""
    candidates, values = _candidates(logits, history, cfg)
    if len(candidates) == 1:
        return int(candidates[0])
    probs = torch.softmax(values, dim=-1).cpu()
    return int(candidates[int(torch.multinomial(probs, 1, generator=generator))])
