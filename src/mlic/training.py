"""Training and prediction loops for one fold: pure functions over arrays, no file I/O."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mlic.config import TrainConfig
from mlic.registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer", "train.optimizer")
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("sgd")(lambda params, lr, weight_decay: torch.optim.SGD(params, lr, 0.9, weight_decay=weight_decay))


class CachedImages(Dataset):
    """Rows of a uint8 image cache (memory map) with their labels, augmented on the fly.

    Items are uint8 CHW tensors: normalisation happens on the device, batch-wise, which is faster and moves
    a quarter of the bytes.
    """

    def __init__(self, images: np.ndarray, rows: np.ndarray, labels: np.ndarray | None = None, transform=None):
        self.images, self.rows, self.labels, self.transform = images, rows, labels, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        image = np.asarray(self.images[self.rows[i]])
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.labels is None:
            return tensor
        return tensor, torch.from_numpy(self.labels[self.rows[i]].astype(np.float32))


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: seed the worker's augmentation from torch's per-worker, per-epoch seed."""
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info else None
    if transform is not None:
        transform.set_random_seed(torch.initial_seed() % 2**32)


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed."""

    device: torch.device
    mean: torch.Tensor
    std: torch.Tensor
    amp_dtype: torch.dtype | None

    def to_input(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW batch -> normalised float on the device."""
        x = batch.to(self.device, non_blocking=True).float().div_(255.0)
        return (x - self.mean) / self.std

    def autocast(self):
        """Mixed precision on CUDA when enabled; a no-op elsewhere (CPU autocast is slower than float32 here)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)


def make_runtime(cfg: TrainConfig, mean: Sequence[float], std: Sequence[float]) -> Runtime:
    """Resolve `train.device` (auto picks CUDA when present) and the AMP dtype (bf16 where supported)."""
    name = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    amp_dtype = None
    if cfg.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    shape = (1, 3, 1, 1)
    return Runtime(
        device, torch.tensor(mean, device=device).view(shape), torch.tensor(std, device=device).view(shape), amp_dtype
    )


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; returns a generator for the data loader's shuffling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_model(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    cfg: TrainConfig,
    rt: Runtime,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train for `cfg.epochs` with one-cycle cosine LR; returns the mean training loss of each epoch."""
    model.to(rt.device).train()
    optimizer = OPTIMIZERS.get(cfg.optimizer)(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    scaler = torch.amp.GradScaler(enabled=rt.amp_dtype == torch.float16)
    history = []
    for epoch in range(cfg.epochs):
        total, count = 0.0, 0
        for images, targets in tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, mininterval=2.0):
            with rt.autocast():
                loss = loss_fn(model(rt.to_input(images)).float(), targets.to(rt.device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total, count = total + loss.item() * len(images), count + len(images)
        history.append(total / max(count, 1))
        if not math.isfinite(history[-1]):
            raise FloatingPointError(f"training loss became {history[-1]} at epoch {epoch + 1}; lower train.lr")
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return history


@torch.no_grad()
def predict(
    model: nn.Module, loader: DataLoader, rt: Runtime, views: Sequence[Callable[[torch.Tensor], torch.Tensor]]
) -> np.ndarray:
    """Sigmoid probabilities (N, C) float32, averaged over the test-time augmentation views."""
    model.to(rt.device).eval()
    out = []
    for batch in tqdm(loader, desc="predict", leave=False, mininterval=2.0):
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        x = rt.to_input(images)
        with rt.autocast():
            probs = sum(torch.sigmoid(model(view(x)).float()) for view in views) / len(views)
        out.append(probs.cpu().numpy().astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
