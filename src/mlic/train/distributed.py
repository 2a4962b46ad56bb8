"""Multi-process (DDP) training under `torchrun`: which process this is, and the few collectives training needs.

Without torchrun (WORLD_SIZE unset or 1) everything here is a no-op, so the same code path trains on one device.
Under torchrun every process trains on its slice of each batch (`sampling.ShardedBatchSampler`), DDP averages
the gradients, and rank 0 alone validates, checkpoints and writes outputs.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: rank, number of processes, and its local GPU index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True under torchrun with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that validates and writes outputs (rank 0)."""
        return self.rank == 0


SINGLE_PROCESS = DistContext()


def init_distributed(use_cuda: bool) -> DistContext:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU); a no-op without torchrun.

    Args:
        use_cuda: Whether training runs on CUDA; each process then takes GPU `LOCAL_RANK`.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # Rank 0 validates and predicts while the others wait at a barrier: allow it time on large test sets
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)


def wrap_model(
    model: nn.Module, ctx: DistContext, device: torch.device, sync_bn: bool, find_unused: bool = False
) -> nn.Module:
    """The model DDP trains (with synchronised batch norm on CUDA when asked); the model itself without DDP.

    Args:
        model: The model, on `device`.
        ctx: This process's place in the job.
        device: The process's device.
        sync_bn: Convert batch norm to SyncBatchNorm (CUDA only).
        find_unused: Let steps leave parameters without gradients (a phase that freezes part of the model).
    """
    if not ctx.enabled:
        return model
    if sync_bn and device.type == "cuda":  # SyncBatchNorm has no CPU kernels
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def broadcast_flag(flag: bool, ctx: DistContext) -> bool:
    """Rank 0's value of `flag` on every process (e.g. the early-stopping decision)."""
    if not ctx.enabled:
        return flag
    device = torch.device("cuda", ctx.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op without DDP)."""
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Leave the process group."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
