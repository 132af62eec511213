"""Multi-process training under ``torchrun``: the rank record, joining the group, reductions.

Backend: nccl when the run uses CUDA, gloo on CPU. Every helper here is a
no-op in a single process, so the trainer calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DistInfo", "all_reduce_sum", "dist_info", "init_distributed", "sync_buffers"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _group_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def dist_info() -> DistInfo:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1); else do nothing."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist_info()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over the ranks (float64); unchanged in a single process.

    The sum runs on ``device`` when it is a GPU (nccl), else on the CPU (gloo).
    """
    import torch.distributed as dist

    if not _group_active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def sync_buffers(model: nn.Module) -> None:
    """Average floating buffers (BatchNorm running statistics) over the ranks.

    DDP broadcasts rank 0's buffers before each forward, but the last forward
    of an epoch leaves each rank with statistics of its own batch; averaging
    makes every rank (and rank 0's checkpoint) hold the same model.
    """
    import torch.distributed as dist

    if not _group_active():
        return
    world = dist.get_world_size()
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b.div_(world)
