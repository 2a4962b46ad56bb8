"""Multi-label metrics: Kaggle's sample-averaged F-beta, mAP, micro/macro F1, and a per-class table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, f1_score


def fbeta_per_row(y_true: np.ndarray, y_pred: np.ndarray, beta: float = 2.0) -> np.ndarray:
    """F-beta of each row (sample). A row with no true and no predicted label scores 1 (perfect agreement).

    Args:
        y_true: Binary (N, C) ground truth.
        y_pred: Binary (N, C) predictions.
        beta: Recall weight; Planet and iMet use 2.

    Returns:
        (N,) float64 scores.
    """
    y_true, y_pred = y_true.astype(bool), y_pred.astype(bool)
    tp = (y_true & y_pred).sum(axis=1)
    fp = (~y_true & y_pred).sum(axis=1)
    fn = (y_true & ~y_pred).sum(axis=1)
    return fbeta_from_counts(tp, fp, fn, beta)


def fbeta_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, beta: float) -> np.ndarray:
    """Element-wise F-beta from true-positive, false-positive and false-negative counts (0/0 counts as 1)."""
    b2 = beta * beta
    num = (1 + b2) * tp
    den = num + b2 * fn + fp
    return np.where(den > 0, num / np.maximum(den, 1), 1.0)


def fbeta_samples(y_true: np.ndarray, y_pred: np.ndarray, beta: float = 2.0) -> float:
    """Sample-averaged F-beta, the Kaggle metric of Planet and iMet (beta = 2)."""
    return float(fbeta_per_row(y_true, y_pred, beta).mean())


def mean_average_precision(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro mAP over the classes that have at least one positive (AP is undefined without one)."""
    has_pos = y_true.sum(axis=0) > 0
    if not has_pos.any():
        return float("nan")
    return float(average_precision_score(y_true[:, has_pos], probs[:, has_pos], average="macro"))


def summary_metrics(y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray, beta: float = 2.0) -> dict[str, float]:
    """The headline metrics of one set of predictions.

    Args:
        y_true: Binary (N, C) ground truth.
        probs: (N, C) predicted probabilities, for mAP.
        y_pred: Binary (N, C) thresholded predictions.
        beta: F-beta's beta for the sample-averaged score.
    """
    return {
        f"f{beta:g}_samples": round(fbeta_samples(y_true, y_pred, beta), 6),
        "map_macro": round(mean_average_precision(y_true, probs), 6),
        "f1_micro": round(float(f1_score(y_true, y_pred, average="micro", zero_division=0)), 6),
        "f1_macro": round(float(f1_score(y_true, y_pred, average="macro", zero_division=0)), 6),
    }


def per_class_table(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], beta: float = 2.0
) -> list[dict[str, float | int | str]]:
    """One row per class: support, precision, recall, F1 and F-beta of the thresholded predictions."""
    t, p = y_true.astype(bool), y_pred.astype(bool)
    tp, fp, fn = (t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0)
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    f1 = fbeta_from_counts(tp, fp, fn, 1.0)
    fb = fbeta_from_counts(tp, fp, fn, beta)
    return [
        {
            "class": name,
            "support": int(t[:, j].sum()),
            "precision": round(float(precision[j]), 6),
            "recall": round(float(recall[j]), 6),
            "f1": round(float(f1[j]), 6),
            f"f{beta:g}": round(float(fb[j]), 6),
        }
        for j, name in enumerate(classes)
    ]


def fold_prior_probs(labels: np.ndarray, val_rows_per_fold: Sequence[np.ndarray]) -> np.ndarray:
    """The all-prior baseline: each validation row gets the label frequencies of its fold's training rows.

    It predicts the same thing for every image, so any model worth having must beat it after the same
    threshold fitting.
    """
    probs = np.zeros(labels.shape, dtype=np.float32)
    for val_rows in val_rows_per_fold:
        train = np.ones(len(labels), dtype=bool)
        train[val_rows] = False
        probs[val_rows] = labels[train].mean(axis=0)
    return probs
