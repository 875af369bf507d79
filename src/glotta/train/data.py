"""Training batches from a packed token shard, with a data position that resumes in O(1).

The shard is cut into non-overlapping blocks of ``block_size + 1`` tokens (inputs and shifted
targets share one slice). Each epoch visits every block once in an order drawn from
``(seed, epoch)``; the position in the run is just ``(epoch, offset)``, so resuming at step 10**6
recomputes one permutation instead of replaying consumed batches (transformers #11284).

Every optimizer step takes the next ``global_batch`` block indices; process ``rank`` of ``world``
takes its own contiguous slice, so processes read disjoint data with no gaps, and the union over
ranks is exactly what one process would have read at the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glotta.tokenizer.shards import open_shard


@dataclass
class DataPosition:
    epoch: int = 0
    offset: int = 0  # blocks of this epoch already consumed

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}


class BlockDataset:
    """Fixed-size blocks of a token shard, addressed by index."""

    def __init__(self, shard_path: Path, block_size: int):
        self.tokens = open_shard(shard_path)
        self.block_size = block_size
        self.num_blocks = max(0, (len(self.tokens) - 1) // block_size)  # an empty shard: 0, not -1

    def batch(
        self, indices: list[int] | np.ndarray, *, step: int = 0, first_row: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, int64, shape (len(indices), block_size).

        ``step`` and ``first_row`` place the rows in the run (the masked-LM blocks of
        :class:`glotta.masking.MaskedBlockDataset` draw their masks from them); next-token
        targets need no randomness and ignore them.
        """
        size = self.block_size
        rows = [np.asarray(self.tokens[i * size : i * size + size + 1]) for i in indices]
        block = torch.from_numpy(np.stack(rows).astype(np.int64))
        return block[:, :-1], block[:, 1:]


class EpochSampler:
    """Deterministic, resumable order of block indices over epochs."""

    def __init__(self, num_blocks: int, seed: int, position: DataPosition | None = None):
        if num_blocks <= 0:
            raise ValueError("no complete block in the shard")
        self.num_blocks = num_blocks
        self.seed = seed
        self.position = position or DataPosition()
        self._order_epoch = -1
        self._order: np.ndarray = np.empty(0, dtype=np.int64)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(self.num_blocks, generator=generator).numpy()
            self._order_epoch = epoch
        return self._order

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` block indices, crossing into the next epoch when one ends."""
        taken = []
        while count > 0:
            order = self._epoch_order(self.position.epoch)
            chunk = order[self.position.offset : self.position.offset + count]
            taken.append(chunk)
            count -= len(chunk)
            self.position.offset += len(chunk)
            if self.position.offset >= self.num_blocks:
                self.position = DataPosition(self.position.epoch + 1, 0)
        return np.concatenate(taken)


def rank_slice(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """The contiguous share of one process; ``len(indices)`` is a multiple of ``world``."""
    per_rank = len(indices) // world
    return indices[rank * per_rank : (rank + 1) * per_rank]
