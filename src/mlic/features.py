"""The outputs of the `hog` stage: HOG vectors of every cached view, and their training-set statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlic.errors import MlicError

# File names inside the hog output directory (the directory itself comes from hog.out_dir).
TRAIN_HOG = "train_hog.npy"
TEST_HOG = "test_hog.npy"
STATS_FILE = "hog_stats.npz"


@dataclass(frozen=True)
class HogFeatures:
    """(N, views, D) float16 HOG arrays, memory-mapped, and the per-dimension mean and std of the training set."""

    train: np.ndarray
    test: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @property
    def dim(self) -> int:
        """Length of one HOG vector."""
        return int(self.train.shape[-1])


def mean_std(array: np.ndarray, chunk_rows: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over every axis but the last, accumulated in float64 over chunks (bounded memory, memmaps)."""
    flat = array.reshape(-1, array.shape[-1])
    total, total_sq = np.zeros(flat.shape[1]), np.zeros(flat.shape[1])
    for start in range(0, len(flat), chunk_rows):
        block = np.asarray(flat[start : start + chunk_rows], dtype=np.float64)
        total += block.sum(axis=0)
        total_sq += (block**2).sum(axis=0)
    count = max(1, len(flat))
    mean = total / count
    return mean, np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension float32 mean and std of (N, ..., D) features, for standardising them."""
    mean, std = mean_std(features)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)  # constant dims: no division by 0


def load_hog(out_dir: str | Path) -> HogFeatures:
    """Open the hog stage's outputs."""
    out = Path(out_dir)
    if not (out / STATS_FILE).is_file():
        raise MlicError("HOG features not found", path=out, fix="run `mlic hog` (or `dvc repro hog`) first")
    with np.load(out / STATS_FILE) as stats:
        mean, std = stats["mean"], stats["std"]
    return HogFeatures(np.load(out / TRAIN_HOG, mmap_mode="r"), np.load(out / TEST_HOG, mmap_mode="r"), mean, std)
