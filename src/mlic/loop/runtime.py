"""Where and how tensors are computed: the device, mixed precision, memory format, and the inputs' normalisation."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from mlic.config import TrainConfig
from mlic.loop.batches import one_opencv_thread
from mlic.sources import SOURCES, Stats, normalisers


@dataclass(frozen=True)
class Runtime:
    """The device, the AMP dtype (None: float32), channels_last, and each source's normaliser on the device."""

    device: torch.device
    normalisers: nn.ModuleDict
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    def inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A batch on the device: each source normalised (spatial ones channels_last when enabled), and the target."""
        out = {}
        for name, normalise in self.normalisers.items():
            if name in batch:
                x = normalise(batch[name].to(self.device, non_blocking=True))
                spatial = self.channels_last and SOURCES.get(name).spatial
                out[name] = x.contiguous(memory_format=torch.channels_last) if spatial else x
        if "target" in batch:
            out["target"] = batch["target"].to(self.device, non_blocking=True)
        return out

    def autocast(self):
        """Mixed precision on CUDA when enabled; a no-op elsewhere (CPU autocast is slower than float32 here)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)


def resolve_device(cfg: TrainConfig, local_rank: int = 0) -> torch.device:
    """`train.device` as a torch device: auto picks CUDA when present; under torchrun, GPU `local_rank`."""
    name = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def make_runtime(cfg: TrainConfig, stats: dict[str, Stats], device: torch.device | None = None) -> Runtime:
    """The runtime on `device` (default: `resolve_device`) for sources with these statistics.

    AMP uses bf16 where the GPU supports it, fp16 otherwise; channels_last and AMP apply on CUDA only.
    """
    device = device or resolve_device(cfg)
    amp_dtype = None
    if cfg.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Runtime(device, normalisers(stats).to(device), amp_dtype, cfg.channels_last and device.type == "cuda")


MAX_LOADER_WORKERS = 16


def loader_workers(setting: int | str, processes: int = 1) -> int:
    """`train.num_workers` as a count; auto: the cores this process may use, less one for the loop, at most 16.

    Args:
        setting: An integer, or "auto".
        processes: Training processes sharing the machine's cores (DDP's local world size).
    """
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(MAX_LOADER_WORKERS, cores // max(processes, 1) - 1))


def loader_options(cfg: TrainConfig, processes: int = 1) -> dict:
    """DataLoader keyword arguments from `train`: workers (persistent, prefetching), pinned memory on CUDA.

    With workers, this process drops to one OpenCV thread first (`one_opencv_thread`): they are forked from it.
    """
    workers = loader_workers(cfg.num_workers, processes)
    options = {"num_workers": workers, "pin_memory": torch.cuda.is_available()}
    if workers:
        one_opencv_thread()
        options |= {"persistent_workers": True, "prefetch_factor": cfg.prefetch_factor}
    return options
