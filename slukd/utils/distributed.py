"""The distributed helpers of the package, in one place (every one is a no-op without torch.distributed).

``rank_and_world()`` -> (rank, world size); ``ddp_active()``; ``barrier()``; ``all_reduce_mean(t)`` (in place, the
mean over the processes); ``all_gather_objects(obj)`` -> [one per process].
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ddp_active", "rank_and_world", "barrier", "all_reduce_mean", "all_gather_objects"]


def ddp_active() -> bool:
    """Whether a torch.distributed process group is running."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) without DDP."""
    if ddp_active():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every process."""
    if ddp_active():
        torch.distributed.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Replace ``tensor`` (in place) by its mean over the processes; returns it."""
    if ddp_active():
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        tensor /= torch.distributed.get_world_size()
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` without DDP."""
    if not ddp_active():
        return [obj]
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, obj)
    return parts
