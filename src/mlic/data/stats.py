"""Statistics of feature arrays (HOG vectors, image caches), accumulated in chunks so memory maps stay cheap."""

from __future__ import annotations

import numpy as np


def mean_std(array: np.ndarray, chunk_values: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over every axis but the last, accumulated in float64 over chunks (bounded memory, memmaps).

    A chunk holds about `chunk_values` values (32 MB in float64), whatever the last axis's length: rows of
    1,680 HOG dimensions and rows of 3 channels alike. An array-like that only reads by rows
    (`mlic.layout.CropViews`) is read a block of rows at a time.
    """
    if not isinstance(array, np.ndarray):
        return _mean_std_by_rows(array, chunk_values)
    flat = array.reshape(-1, array.shape[-1])
    total, total_sq = np.zeros(flat.shape[1]), np.zeros(flat.shape[1])
    step = max(1, chunk_values // max(1, flat.shape[1]))
    for start in range(0, len(flat), step):
        block = np.asarray(flat[start : start + step], dtype=np.float64)
        total += block.sum(axis=0)
        total_sq += np.square(block, out=block).sum(axis=0)
    count = max(1, len(flat))
    mean = total / count
    return mean, np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))


def _mean_std_by_rows(array, chunk_values: int) -> tuple[np.ndarray, np.ndarray]:
    """`mean_std` of an array-like read by blocks of rows of about `chunk_values` values each."""
    per_row = int(np.prod(array.shape[1:]))
    step = max(1, chunk_values // max(per_row, 1))
    total, total_sq, count = np.zeros(array.shape[-1]), np.zeros(array.shape[-1]), 0
    for start in range(0, len(array), step):
        block = np.asarray(array[start : start + step], dtype=np.float64).reshape(-1, array.shape[-1])
        total += block.sum(axis=0)
        total_sq += np.square(block, out=block).sum(axis=0)
        count += len(block)
    mean = total / max(1, count)
    return mean, np.sqrt(np.maximum(total_sq / max(1, count) - mean**2, 0.0))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension float32 mean and std of (N, ..., D) features, for standardising them."""
    mean, std = mean_std(features)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)  # constant dims: no division by 0
