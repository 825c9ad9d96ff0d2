"""Process-group setup for torchrun (single node, multi-node) and the few collectives the loop needs."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass
class DistEnv:
    """This process's place in the job and its device."""

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


def select_device(requested: str, local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK when requested or available ("auto"), else cpu."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("device cuda was requested but no CUDA GPU is available: use device cpu "
                            "(train.device=cpu, or --device cpu) or auto")
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} needs GPU {local_rank} but only "
                            f"{torch.cuda.device_count()} are visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def setup(requested_device: str = "auto") -> DistEnv:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(requested_device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        # Long timeout: when eval.batch_size does not divide among ranks, rank 0 evaluates a whole
        # split alone while the others wait in the next collective.
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=60))
    return DistEnv(rank, world_size, local_rank, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op without a process group)."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_to_main(obj: Any, env: DistEnv) -> list[Any] | None:
    """Every rank's `obj` in rank order on rank 0 (None elsewhere); `[obj]` without a process group."""
    if not env.enabled:
        return [obj]
    out: list[Any] | None = [None] * env.world_size if env.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: Any, env: DistEnv) -> Any:
    """Rank 0's `obj` on every rank (`obj` itself without a process group)."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
