"""Statistics of feature arrays (HOG vectors, image caches), accumulated in chunks so memory maps stay cheap."""

from __future__ import annotations

import numpy as np


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
