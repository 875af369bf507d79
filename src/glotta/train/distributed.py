"""Process group set-up: the same code runs as one process or under ``torchrun``.

One process:       glotta train demo
Several processes: torchrun --nproc_per_node 2 -m glotta train demo
Several machines:  torchrun --nnodes 2 --node_rank R --rdzv_endpoint HOST:29500 \
                       --nproc_per_node 8 -m glotta train RECIPE

``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK; without them we are a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from glotta.device import resolve_device


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_choice: str = "auto") -> Dist:
    """Join the process group when launched by torchrun (gloo on CPU, NCCL on GPU)."""
    use_cuda = resolve_device(device_choice, "train.device").type == "cuda"
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world_size, local_rank, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], ctx: Dist) -> list[float]:
    """Sum floats over processes (float64, so token-weighted losses add up exactly)."""
    if not ctx.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()
