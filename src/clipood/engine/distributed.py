"""Multi-process data-parallel training as launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in each process. When
``WORLD_SIZE`` is above 1 the training loop joins a process group (NCCL on CUDA, Gloo on
CPU), wraps the image encoder in ``DistributedDataParallel`` and gives each rank its own
shard of every step's batch. Only rank 0 writes files and logs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job: rank, number of processes and local GPU index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistributedContext:
    """Read the ``torchrun`` environment; a plain process is rank 0 of 1."""
    return DistributedContext(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def init_distributed(device: str) -> tuple[DistributedContext, str]:
    """Join the process group if ``torchrun`` started several processes.

    Returns the context and the device this rank trains on: with ``device="cuda"``
    each rank takes GPU ``LOCAL_RANK``. Joining twice is a no-op.
    """
    context = context_from_env()
    if not context.enabled:
        return context, device
    if torch.device(device).type == "cuda":
        device = f"cuda:{context.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        logger.info(
            "joined %s process group as rank %d of %d", backend, context.rank, context.world_size
        )
    return context, device


def shutdown() -> None:
    """Wait for every rank, then leave the process group (no-op when not distributed)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()


def shard(indices: Sequence[int], context: DistributedContext) -> list[int]:
    """Return this rank's interleaved share of one group's batch."""
    return list(indices[context.rank :: context.world_size])


def mean_across_ranks(value: float, context: DistributedContext, device: str) -> float:
    """Average a number over ranks (NCCL needs the tensor on this rank's GPU)."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size
