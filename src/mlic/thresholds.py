"""Applying decision thresholds: probabilities to labels (with label limits), the best shared threshold, a fitted set.

Fitting per-class thresholds is `mlic.predict.threshold_fitting`; this module is what training's validation, the
submission, the evaluation and `mlic predict` apply, so they do not depend on the fitting methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlic.errors import MlicError
from mlic.layout import read_json
from mlic.metrics import TOP_K_ROWS, fbeta_from_counts, fbeta_samples, top_k_mask


def binarize(probs: np.ndarray, thresholds: np.ndarray | float, min_labels: int = 1, max_labels: int = 0) -> np.ndarray:
    """Binary predictions `probs >= thresholds`, with at least `min_labels` and at most `max_labels` per row.

    A row short of labels gets those with the highest probability relative to their threshold (Kaggle scores an
    empty row 0); a row over `max_labels` keeps its `max_labels` labels with the highest such margin.

    Args:
        probs: (N, C) probabilities.
        thresholds: A scalar or (C,) thresholds.
        min_labels: Minimum number of labels per row (0 allows empty rows).
        max_labels: Maximum number of labels per row (0: no limit).

    Returns:
        (N, C) uint8 predictions.
    """
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), probs.shape[1:])
    pred = probs >= thresholds
    counts = pred.sum(axis=1)
    if min_labels > 0:
        _keep_top(pred, probs, thresholds, counts < min_labels, min_labels)
    if max_labels > 0:
        _keep_top(pred, probs, thresholds, counts > max_labels, max_labels)
    return pred.astype(np.uint8)


def _keep_top(pred: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, rows: np.ndarray, k: int) -> None:
    """Set the selected rows of `pred` to exactly their k labels of highest margin `prob - threshold`, in place.

    Ties go to the lower class index (the order of a stable sort). The selection runs in blocks of rows in O(C)
    per row (`top_k_mask`), not a sort of every row: at a high cut nearly every row is short of labels.
    """
    selected = np.flatnonzero(rows)
    for start in range(0, len(selected), TOP_K_ROWS):
        block = selected[start : start + TOP_K_ROWS]
        pred[block] = top_k_mask(np.asarray(probs[block], dtype=np.float64) - thresholds, k)


def threshold_grid(step: float) -> np.ndarray:
    """Candidate thresholds step, 2*step, ... below 1."""
    return np.round(np.arange(step, 1.0, step), 6)


def shared_threshold_scores(
    probs: np.ndarray, labels: np.ndarray, grid: np.ndarray, beta: float = 2.0, min_labels: int = 1
) -> np.ndarray:
    """Sample F-beta at every shared threshold of an increasing `grid`, in one O(N C) pass (min_labels <= 1).

    Each probability falls in a grid bin; per row, a bincount of the bins of all labels and of the true ones,
    summed from the top, gives the predicted and true-positive counts at every grid value at once. A row with
    nothing predicted scores as its top class alone when `min_labels` is 1. Rows go in blocks of about
    `_BLOCK_VALUES` values (probabilities, or per-row counts at every grid value, whichever a row has more of),
    so the temporaries stay small whatever N is; the row scores are summed in row order, as `mean` over all of
    them would.
    """
    total = np.zeros(len(grid))
    step = max(1, _BLOCK_VALUES // max(probs.shape[1], len(grid) + 1))  # (rows, classes) and (rows, grid) arrays
    for start in range(0, len(probs), step):
        rows = _row_scores(probs[start : start + step], labels[start : start + step], grid, beta, min_labels)
        total = np.concatenate([total[None], rows]).sum(axis=0)  # one sum from the running total: row order
    return total / len(probs)


_BLOCK_VALUES = 1 << 22  # values per block of `shared_threshold_scores`: 32 MB for each int64 or float64 temporary


def _row_scores(probs: np.ndarray, labels: np.ndarray, grid: np.ndarray, beta: float, min_labels: int) -> np.ndarray:
    """(rows, len(grid)) sample F-beta of each row at every shared threshold (`shared_threshold_scores`)."""
    n, n_bins = len(probs), len(grid) + 1
    bins = np.searchsorted(grid, probs, side="right")  # p >= grid[j] exactly when j < bins
    index = (np.arange(n)[:, None] * n_bins + bins).ravel()
    predicted = np.bincount(index, minlength=n * n_bins).reshape(n, n_bins)
    true_pos = np.bincount(index, weights=labels.ravel().astype(np.float64), minlength=n * n_bins).reshape(n, n_bins)
    predicted = np.cumsum(predicted[:, ::-1], axis=1)[:, ::-1][:, 1:]  # (n, len(grid)): count with bin > j
    true_pos = np.cumsum(true_pos[:, ::-1], axis=1)[:, ::-1][:, 1:]
    positives = labels.sum(axis=1, dtype=np.int64)[:, None]
    scores = fbeta_from_counts(true_pos, predicted - true_pos, positives - true_pos, beta)
    if min_labels == 1:
        top_true = labels[np.arange(n), probs.argmax(axis=1)].astype(np.int64)[:, None]
        top_only = fbeta_from_counts(top_true, 1 - top_true, positives - top_true, beta)
        scores = np.where(predicted == 0, top_only, scores)
    return scores


def best_global_threshold(
    probs: np.ndarray, labels: np.ndarray, beta: float = 2.0, min_labels: int = 1, step: float = 0.01
) -> tuple[float, float]:
    """The grid threshold shared by all classes with the best sample F-beta (ties: the lowest), and that score."""
    grid = threshold_grid(step)
    if min_labels <= 1:
        scores = shared_threshold_scores(probs, labels, grid, beta, min_labels)
    else:
        scores = np.array([fbeta_samples(labels, binarize(probs, t, min_labels), beta) for t in grid])
    best = int(np.argmax(scores))
    return float(grid[best]), float(scores[best])


def load_thresholds(path: str | Path, classes: Sequence[str]) -> np.ndarray:
    """Thresholds written by the `thresholds` stage, in `classes` order."""
    saved = read_json(path)["thresholds"]
    missing = [c for c in classes if c not in saved]
    if missing:
        raise MlicError(f"no threshold for classes {missing[:5]}", path=path, fix="rerun the thresholds stage")
    return np.array([saved[c] for c in classes], dtype=np.float64)
