"""Masked-LM evaluation: loss and perplexity over the masked tokens of held-out text.

    masked-token loss       = total NLL of the masked tokens / number of masked tokens
    masked-token perplexity = exp(masked-token loss)

The text is cut into ``[CLS] ... [SEP]`` blocks as in training (:mod:`glotta.masking`) and masked
with a fixed seed: 15% of the tokens, one token at a time (no whole-word masking, whatever the
training used), 80/10/10. So every evaluation of a run, and every model evaluated with the same
tokenizer and block size, predicts exactly the same positions. The numbers are not comparable with
a causal LM's perplexity (the masked LM sees both sides), nor with other tokenizers; bits per
byte is not defined, as only 15% of the tokens are predicted. It is not the pseudo-perplexity of
Salazar et al. (2020), which masks every token once. A unigram baseline fitted on the train
shard scores the same masked tokens: the floor the model must clear.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from glotta.evaluate.perplexity import unigram_baseline
from glotta.masking import EVAL_STREAM, IGNORE_INDEX, MaskedBlockDataset, MaskingSpec

EVAL_MASK_SEED = 0
EVAL_MLM_PROBABILITY = 0.15


@dataclass
class MaskedScore:
    nll: float = 0.0  # nats
    masked_tokens: int = 0
    tokens: int = 0  # all tokens of the scored blocks, [CLS]/[SEP] included
    blocks: int = 0

    @property
    def loss(self) -> float:
        return self.nll / self.masked_tokens if self.masked_tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.masked_tokens else float("nan")

    def as_dict(self) -> dict:
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "nll_nats": self.nll,
            "masked_tokens": self.masked_tokens,
            "tokens": self.tokens,
            "blocks": self.blocks,
        }


def eval_blocks(tokens, block_size: int, spec: MaskingSpec) -> MaskedBlockDataset:
    """The evaluation blocks of a shard path or token array, with the fixed evaluation masks."""
    return MaskedBlockDataset(
        tokens,
        block_size,
        spec,
        EVAL_MLM_PROBABILITY,
        whole_word=False,
        seed=EVAL_MASK_SEED,
        stream=EVAL_STREAM,
    )


def _batches(data: MaskedBlockDataset, batch_size: int, max_blocks: int = 0):
    count = min(data.num_blocks, max_blocks) if max_blocks else data.num_blocks
    for start in range(0, count, batch_size):
        rows = list(range(start, min(count, start + batch_size)))
        yield data.batch(rows, first_row=start)  # masks depend on the block index only


@torch.no_grad()
def masked_lm_eval(
    model: torch.nn.Module,
    data: MaskedBlockDataset,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    max_blocks: int = 0,
) -> MaskedScore:
    """Summed NLL over the masked tokens of (the first ``max_blocks``) blocks of ``data``."""
    model.eval()
    score = MaskedScore()
    for inputs, labels in _batches(data, batch_size, max_blocks):
        logits = model(input_ids=inputs.to(device)).logits.float()
        nll = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)),
            labels.to(device).reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        score.nll += float(nll.double().item())
        score.masked_tokens += int((labels != IGNORE_INDEX).sum())
        score.tokens += labels.numel()
        score.blocks += len(labels)
    return score


def masked_unigram_baseline(
    train_tokens: np.ndarray, vocab_size: int, data: MaskedBlockDataset, max_blocks: int = 0
) -> MaskedScore:
    """The unigram model of the train shard on the same masked tokens as :func:`masked_lm_eval`."""
    targets: Iterable[tuple[list[int], int]] = (
        (labels[labels != IGNORE_INDEX].tolist(), 0)
        for _, labels in _batches(data, 256, max_blocks)
    )
    score = unigram_baseline(train_tokens, vocab_size, targets)
    blocks = min(data.num_blocks, max_blocks) if max_blocks else data.num_blocks
    return MaskedScore(score.nll, score.tokens, blocks * data.block_size, blocks)


def encode_stream(tokenizer, texts: Iterable[str], separator_id: int) -> np.ndarray:
    """Documents as one token stream, each followed by the separator (what the pack stage writes)."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(separator_id)
    return np.asarray(ids, dtype=np.int64)
