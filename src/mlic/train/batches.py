"""Samples and batches: (row, view) items of the cached sources, with labels, augmented on the fly."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mlic.data.sources import SOURCES


class CachedSamples(Dataset):
    """(row, view) samples of cached source arrays (`mlic.data.sources`), with their labels.

    Items are dicts with one tensor per source, as that source serves it (the image as uint8 CHW, augmented by
    `transform` for spatial sources; HOG as float32), and "target" as float32 labels when labels are given. Only the
    arrays given are read, so a HOG-only model never touches the image cache.

    Args:
        arrays: Source name -> (N, views, ...) array (memory-mapped caches are read item by item).
        rows: Row of each sample.
        views: Cached view of each sample.
        labels: (N, C) label matrix, or None (test rows).
        transform: Training augmentation for the spatial sources, or None.
    """

    def __init__(self, arrays: dict[str, np.ndarray], rows: np.ndarray, views: np.ndarray, labels=None, transform=None):
        self.arrays, self.rows, self.views, self.labels, self.transform = arrays, rows, views, labels, transform
        self.sources = {name: SOURCES.get(name) for name in arrays}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row, view = int(self.rows[i]), int(self.views[i])
        item = {}
        for name, source in self.sources.items():
            item[name] = source.sample(self.arrays[name][row, view], self.transform if source.spatial else None)
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
