"""Data, device runtime and prediction for one fold: pure functions over arrays, no file I/O (the loop: engine.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mlic.config import TrainConfig


class CachedSamples(Dataset):
    """(row, view) samples of the uint8 image cache and/or the HOG arrays, with labels, augmented on the fly.

    Items are dicts: "image" as a uint8 CHW tensor (normalisation happens on the device, batch-wise, which
    is faster and moves a quarter of the bytes), "hog" as float32, "target" as float32 labels. Only the
    arrays given are read, so a HOG-only model never touches the image cache.
    """

    def __init__(self, arrays: dict[str, np.ndarray], rows: np.ndarray, views: np.ndarray, labels=None, transform=None):
        self.arrays, self.rows, self.views, self.labels, self.transform = arrays, rows, views, labels, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row, view = int(self.rows[i]), int(self.views[i])
        item = {}
        if "image" in self.arrays:
            image = np.asarray(self.arrays["image"][row, view])
            if self.transform is not None:
                image = self.transform(image=image)["image"]
            item["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if "hog" in self.arrays:
            item["hog"] = torch.from_numpy(np.asarray(self.arrays["hog"][row, view], dtype=np.float32))
        if self.labels is not None:
            item["target"] = torch.from_numpy(self.labels[row].astype(np.float32))
        return item


def expand_views(rows: np.ndarray, n_views: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, view) pair, row-major: the crop expansion turns N images into N * n_views samples."""
    return np.repeat(rows, n_views), np.tile(np.arange(n_views), len(rows))


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: seed the worker's augmentation from torch's per-worker, per-epoch seed."""
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info else None
    if transform is not None:
        transform.set_random_seed(torch.initial_seed() % 2**32)


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed, and how inputs are normalised."""

    device: torch.device
    mean: torch.Tensor
    std: torch.Tensor
    amp_dtype: torch.dtype | None
    hog_mean: torch.Tensor | None = None
    hog_std: torch.Tensor | None = None
    channels_last: bool = False

    def inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Model inputs on the device: images normalised by the training set's channel stats, HOG standardised."""
        out = {}
        if "image" in batch:
            x = batch["image"].to(self.device, non_blocking=True).float().div_(255.0)
            x = (x - self.mean) / self.std
            out["image"] = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        if "hog" in batch:
            out["hog"] = (batch["hog"].to(self.device, non_blocking=True) - self.hog_mean) / self.hog_std
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


def make_runtime(
    cfg: TrainConfig,
    mean: Sequence[float],
    std: Sequence[float],
    hog_stats: tuple[np.ndarray, np.ndarray] | None = None,
    device: torch.device | None = None,
) -> Runtime:
    """The runtime on `device` (default: `resolve_device`): AMP dtype (bf16 where supported), channels_last."""
    device = device or resolve_device(cfg)
    amp_dtype = None
    if cfg.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    shape = (1, 3, 1, 1)
    hog = [torch.as_tensor(a, dtype=torch.float32, device=device) for a in hog_stats] if hog_stats else [None, None]
    return Runtime(
        device,
        torch.tensor(mean, device=device).view(shape),
        torch.tensor(std, device=device).view(shape),
        amp_dtype,
        *hog,
        channels_last=cfg.channels_last and device.type == "cuda",
    )


def forward(model: nn.Module, inputs: dict[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """Call the model with the batch entries it takes, in its order; returns its final logits."""
    return split_outputs(model(*(inputs[name] for name in names)))[0]


def split_outputs(out: torch.Tensor | dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A model's final logits and its auxiliary logits (deep supervision returns a dict while training)."""
    if isinstance(out, dict):
        return out["logits"], list(out.get("aux_logits", []))
    return out, []


def supervised_loss(model: nn.Module, x: dict, names: Sequence[str], target: torch.Tensor, loss_fn: nn.Module):
    """The loss on the final logits, plus the mean loss of any auxiliary (deeply supervised) outputs."""
    logits, aux = split_outputs(model(*(x[name] for name in names)))
    loss = loss_fn(logits.float(), target)
    if aux:
        loss = loss + sum(loss_fn(a.float(), target) for a in aux) / len(aux)
    return loss


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: DataLoader,
    rt: Runtime,
    views: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    inputs: Sequence[str] = ("image",),
    cached_views: int = 1,
    progress: bool = True,
) -> np.ndarray:
    """Sigmoid probabilities (N, C) float32, averaged over test-time views.

    Two kinds of views are averaged: the flips and rotations in `views`, applied to the image on the device,
    and the `cached_views` consecutive samples of each row (the cached resize and crops; see `expand_views`).
    """
    model.to(rt.device).eval()
    views = views if "image" in inputs else views[:1]  # flipping an image changes nothing for a HOG-only model
    out = []
    for batch in tqdm(loader, desc="predict", leave=False, mininterval=2.0, disable=not progress):
        x = rt.inputs(batch)
        total = 0.0
        with rt.autocast():
            for view in views:
                viewed = {**x, "image": view(x["image"])} if "image" in x else x
                total = total + torch.sigmoid(forward(model, viewed, inputs).float())
        out.append((total / len(views)).cpu().numpy().astype(np.float32))
    probs = np.concatenate(out)
    return probs.reshape(-1, cached_views, probs.shape[1]).mean(axis=1)
