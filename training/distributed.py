"""This process's place in a ``torchrun`` job, and the few collective operations training uses.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) everything here is a no-op on one process, so
the same trainer runs on this CPU, on 8 GPUs (NCCL) or on several machines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (world 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Process 0: the one that logs, writes checkpoints and evaluates."""
        return self.rank == 0

    def mean(self, values: Tensor) -> Tensor:
        """``values`` averaged over the processes (in place; itself with one process)."""
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        return values

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for with one)."""
        if self.world > 1:
            dist.barrier()


def init_distributed(device: torch.device) -> Distributed:
    """Join the ``torchrun`` process group (gloo on the CPU, NCCL on GPUs) when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
