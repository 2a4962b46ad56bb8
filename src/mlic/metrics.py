"""Multi-label metrics in vectorised numpy: Kaggle's sample-averaged F-beta, mAP, and the research tables' set.

The research tables (e.g. ML-GCN, SRN) report, besides mAP:
- CP, CR: per-class precision and recall, averaged over classes (macro); CF1 = 2 CP CR / (CP + CR).
- OP, OR, OF1: precision, recall and F1 over all (image, label) pairs (micro).
- The same six for the top-3 labels of each image instead of the thresholded ones.
A class that is never predicted has precision 0, and one with no positives has recall 0 (sklearn's
`zero_division=0`); `tests/test_metrics_thresholds.py` checks every figure against sklearn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fbeta_per_row(y_true: np.ndarray, y_pred: np.ndarray, beta: float = 2.0) -> np.ndarray:
    """F-beta of each row (sample). A row with no true and no predicted label scores 1 (perfect agreement).

    Args:
        y_true: Binary (N, C) ground truth.
        y_pred: Binary (N, C) predictions.
        beta: Recall weight; Planet and iMet use 2.

    Returns:
        (N,) float64 scores.
    """
    return fbeta_from_counts(*confusion_counts(y_true, y_pred, axis=1), beta)


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives summed along `axis` (1: per row, 0: per class)."""
    t, p = y_true.astype(bool), y_pred.astype(bool)
    return (t & p).sum(axis), (~t & p).sum(axis), (t & ~p).sum(axis)


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Num / den, and 0 where den is 0 (sklearn's `zero_division=0`)."""
    return np.where(den > 0, num / np.maximum(den, 1), 0.0)


def fbeta_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, beta: float) -> np.ndarray:
    """Element-wise F-beta from true-positive, false-positive and false-negative counts (0/0 counts as 1)."""
    b2 = beta * beta
    num = (1 + b2) * tp
    den = num + b2 * fn + fp
    return np.where(den > 0, num / np.maximum(den, 1), 1.0)


def fbeta_samples(y_true: np.ndarray, y_pred: np.ndarray, beta: float = 2.0) -> float:
    """Sample-averaged F-beta, the Kaggle metric of Planet and iMet (beta = 2)."""
    return float(fbeta_per_row(y_true, y_pred, beta).mean())


def average_precision_per_class(y_true: np.ndarray, probs: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """Average precision of each class, as sklearn's `average_precision_score` (NaN for a class without positives).

    AP = sum over distinct score cut-offs of (recall gain) x (precision there). Tied scores form one cut-off,
    so only the last position of each run of equal scores counts. Columns are processed `chunk` at a time: by
    default as many as keep each (N, chunk) temporary near `AP_CHUNK_VALUES` (at least 8). A fixed 64 columns
    made temporaries of 56 MB at iMet's 109k rows, out of the CPU's cache, and the cost per row rose with N.
    """
    y_true = np.asarray(y_true).astype(bool)
    chunk = chunk or max(8, AP_CHUNK_VALUES // max(1, len(y_true)))
    out = np.full(y_true.shape[1], np.nan)
    for start in range(0, y_true.shape[1], chunk):
        cols = slice(start, start + chunk)
        order = np.argsort(-probs[:, cols], axis=0, kind="stable")
        scores = np.take_along_axis(probs[:, cols], order, axis=0)
        hits = np.take_along_axis(y_true[:, cols], order, axis=0)
        tp = np.cumsum(hits, axis=0, dtype=np.int64)
        rank = np.arange(1, len(hits) + 1)[:, None]
        last_of_tie = np.ones_like(hits)
        last_of_tie[:-1] = scores[:-1] != scores[1:]
        tp_at = np.where(last_of_tie, tp, 0)
        # recall gain at each cut-off: tp there minus tp at the previous cut-off
        prev = np.maximum.accumulate(np.vstack([np.zeros((1, hits.shape[1]), np.int64), tp_at[:-1]]), axis=0)
        gain = np.where(last_of_tie, tp - prev, 0)
        n_pos = tp[-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[cols] = np.where(n_pos > 0, (gain * (tp / rank)).sum(axis=0) / n_pos, np.nan)
    return out


AP_CHUNK_VALUES = 1 << 19  # values per (N, chunk) temporary of `average_precision_per_class`: 4 MB of int64


def mean_average_precision(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro mAP over the classes that have at least one positive (AP is undefined without one)."""
    ap = average_precision_per_class(y_true, probs)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def top_k_predictions(probs: np.ndarray, k: int = 3) -> np.ndarray:
    """Binary (N, C) predictions of each row's k highest-probability labels (ties: the lower class index)."""
    pred = np.zeros(probs.shape, dtype=np.uint8)
    for start in range(0, len(probs), TOP_K_ROWS):  # O(C) a row (`top_k_mask`), not a sort; bounded temporaries
        pred[start : start + TOP_K_ROWS] = top_k_mask(np.asarray(probs[start : start + TOP_K_ROWS]), k)
    return pred


TOP_K_ROWS = 4096  # rows per block of `top_k_mask`: a few (rows, C) temporaries of 36 MB at iMet's 1,103 classes


def top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """(rows, C) bool: each row's k highest scores, ties to the lower column, as `argsort(-scores, stable)[:k]`."""
    if k >= scores.shape[1]:
        return np.ones(scores.shape, dtype=bool)
    if k == 1:
        mask = np.zeros(scores.shape, dtype=bool)
        mask[np.arange(len(scores)), np.argmax(scores, axis=1)] = True  # argmax: the first of equal maxima
        return mask
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]  # each row's k-th highest score
    above = scores > kth
    ties = scores == kth
    room = k - above.sum(axis=1, keepdims=True)  # how many of the tied scores still fit, lowest columns first
    return above | (ties & (np.cumsum(ties, axis=1) <= room))


def precision_recall_f1(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """CP, CR, CF1 (per class, macro-averaged), OP, OR, OF1 (overall, micro) and sklearn's macro F1 (mean of F1s)."""
    tp, fp, fn = confusion_counts(y_true, y_pred, axis=0)
    cp, cr = float(safe_ratio(tp, tp + fp).mean()), float(safe_ratio(tp, tp + fn).mean())
    op, orec = float(safe_ratio(tp.sum(), tp.sum() + fp.sum())), float(safe_ratio(tp.sum(), tp.sum() + fn.sum()))
    return {
        "cp": cp,
        "cr": cr,
        "cf1": 2 * cp * cr / (cp + cr) if cp + cr else 0.0,
        "op": op,
        "or": orec,
        "of1": 2 * op * orec / (op + orec) if op + orec else 0.0,
        "f1_macro": float(np.mean(fbeta_from_counts(tp, fp, fn, 1.0) * ((tp + fp + fn) > 0))),
    }


def summary_metrics(
    y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray, beta: float = 2.0, ranking: dict | None = None
) -> dict[str, float]:
    """Every headline metric of one set of predictions, rounded to 6 decimals.

    Args:
        y_true: Binary (N, C) ground truth.
        probs: (N, C) predicted probabilities, for mAP and the top-3 metrics.
        y_pred: Binary (N, C) thresholded predictions.
        beta: F-beta's beta for the sample-averaged score.
        ranking: `ranking_metrics` of these rows, when the caller has them (None: computed here).

    Returns:
        `f{beta}_samples`, `map`, cp, cr, cf1, op, or, of1, f1_macro (thresholded), and `*_top3` of the seven
        threshold-free counterparts (the top-3 labels of each row), with `f{beta}_samples_top3`.
    """
    ranked = ranking_metrics(y_true, probs, beta) if ranking is None else ranking
    out = {f"f{beta:g}_samples": fbeta_samples(y_true, y_pred, beta), "map": ranked["map"]}
    out.update(precision_recall_f1(y_true, y_pred))
    out.update({k: v for k, v in ranked.items() if k != "map"})
    return {k: round(float(v), 6) for k, v in out.items()}


def ranking_metrics(y_true: np.ndarray, probs: np.ndarray, beta: float = 2.0) -> dict[str, float]:
    """The threshold-free part of `summary_metrics`: mAP, and the scores of each row's top-3 labels.

    They take a sort per class, the most of `summary_metrics`' time; a caller that scores several sets of
    thresholds on the same rows computes them once and passes them as its `ranking`.
    """
    top3 = top_k_predictions(probs, 3)
    out = {"map": mean_average_precision(y_true, probs), f"f{beta:g}_samples_top3": fbeta_samples(y_true, top3, beta)}
    out.update({f"{k}_top3": v for k, v in precision_recall_f1(y_true, top3).items()})
    return out


def per_class_table(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], beta: float = 2.0
) -> list[dict[str, float | int | str]]:
    """One row per class: support, precision, recall, F1 and F-beta of the thresholded predictions."""
    tp, fp, fn = confusion_counts(y_true, y_pred, axis=0)
    precision, recall = safe_ratio(tp, tp + fp), safe_ratio(tp, tp + fn)
    f1 = fbeta_from_counts(tp, fp, fn, 1.0)
    fb = fbeta_from_counts(tp, fp, fn, beta)
    return [
        {
            "class": name,
            "support": int(tp[j] + fn[j]),
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
