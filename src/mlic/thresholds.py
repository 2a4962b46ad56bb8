"""Decision thresholds: fit per-class thresholds for sample-averaged F-beta, and apply them.

Methods are registered by name and chosen with `thresholds.method` in params.yaml.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mlic.config import ThresholdsConfig
from mlic.errors import MlicError
from mlic.metrics import fbeta_from_counts, fbeta_samples
from mlic.registry import Registry

ThresholdFitter = Callable[[np.ndarray, np.ndarray, ThresholdsConfig], np.ndarray]
THRESHOLD_METHODS: Registry[ThresholdFitter] = Registry("threshold method", "thresholds.method")


def binarize(probs: np.ndarray, thresholds: np.ndarray | float, min_labels: int = 1) -> np.ndarray:
    """Binary predictions `probs >= thresholds`, topping up rows that have fewer than `min_labels` labels.

    A row short of labels gets those with the highest probability relative to their threshold, since Kaggle
    scores an empty row as 0.

    Args:
        probs: (N, C) probabilities.
        thresholds: A scalar or (C,) thresholds.
        min_labels: Minimum number of labels per row (0 allows empty rows).

    Returns:
        (N, C) uint8 predictions.
    """
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), probs.shape[1:])
    pred = probs >= thresholds
    if min_labels > 0:
        short = pred.sum(axis=1) < min_labels
        if short.any():
            margin = probs[short] - thresholds
            top = np.argsort(-margin, axis=1, kind="stable")[:, :min_labels]
            fill = pred[short]
            np.put_along_axis(fill, top, True, axis=1)
            pred[short] = fill
    return pred.astype(np.uint8)


def threshold_grid(step: float) -> np.ndarray:
    """Candidate thresholds step, 2*step, ... below 1."""
    return np.round(np.arange(step, 1.0, step), 6)


def best_global_threshold(
    probs: np.ndarray, labels: np.ndarray, beta: float = 2.0, min_labels: int = 1, step: float = 0.01
) -> tuple[float, float]:
    """The grid threshold shared by all classes with the best sample F-beta (ties: the lowest), and that score."""
    grid = threshold_grid(step)
    scores = [fbeta_samples(labels, binarize(probs, t, min_labels), beta) for t in grid]
    best = int(np.argmax(scores))
    return float(grid[best]), float(scores[best])


@THRESHOLD_METHODS.register("global")
def fit_global(probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig) -> np.ndarray:
    """One threshold shared by all classes: the grid value with the best sample F-beta (ties: the lowest)."""
    threshold, _ = best_global_threshold(probs, labels, cfg.beta, cfg.min_labels, cfg.grid_step)
    return np.full(probs.shape[1], threshold)


@THRESHOLD_METHODS.register("per_class")
def fit_per_class(probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig, passes: int = 2) -> np.ndarray:
    """Coordinate ascent from the best global threshold: each class in turn takes its best grid value.

    Changing one class's threshold only moves that column's tp/fp/fn, so every grid value of a class is
    scored at once from the other columns' counts: O(N * grid) per class.
    """
    grid = threshold_grid(cfg.grid_step)
    thresholds = fit_global(probs, labels, cfg)
    truth = labels.astype(bool)
    for _ in range(passes):
        for j in range(probs.shape[1]):
            pred = probs >= thresholds
            rest = np.ones(probs.shape[1], dtype=bool)
            rest[j] = False
            tp = (truth[:, rest] & pred[:, rest]).sum(1, keepdims=True)
            fp = (~truth[:, rest] & pred[:, rest]).sum(1, keepdims=True)
            fn = (truth[:, rest] & ~pred[:, rest]).sum(1, keepdims=True)
            col = probs[:, j : j + 1] >= grid[None, :]
            pos = truth[:, j : j + 1]
            scores = fbeta_from_counts(tp + (pos & col), fp + (~pos & col), fn + (pos & ~col), cfg.beta).mean(0)
            thresholds[j] = grid[int(np.argmax(scores))]
    return thresholds


def fit_thresholds(probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig) -> np.ndarray:
    """Fit thresholds with the method named in `cfg.method`."""
    return THRESHOLD_METHODS.get(cfg.method)(probs, labels, cfg)


def load_thresholds(path: str | Path, classes: Sequence[str]) -> np.ndarray:
    """Thresholds written by the `thresholds` stage, in `classes` order."""
    saved = json.loads(Path(path).read_text())["thresholds"]
    missing = [c for c in classes if c not in saved]
    if missing:
        raise MlicError(f"no threshold for classes {missing[:5]}", path=path, fix="rerun the thresholds stage")
    return np.array([saved[c] for c in classes], dtype=np.float64)
