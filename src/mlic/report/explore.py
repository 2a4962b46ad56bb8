"""Tables behind the notebooks and the report: labels, images, folds, per-class scores and the worst errors.

Pure functions over the arrays a `Run` loads; the figures that draw them are in `mlic.report.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mlic.layout import FoldPredictions
from mlic.metrics import confusion_counts, fbeta_from_counts, fbeta_samples, mean_average_precision
from mlic.thresholds import binarize


def label_frequencies(labels: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Positives per class and their share of the rows, most frequent first."""
    counts = labels.sum(axis=0)
    frame = pd.DataFrame({"class": list(classes), "count": counts.astype(int), "fraction": counts / len(labels)})
    return frame.sort_values("count", ascending=False, kind="stable").reset_index(drop=True)


def cooccurrence(labels: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """P(column label | row label): how often each label comes with each other (the diagonal is 1)."""
    y = labels.astype(np.float64)
    together = y.T @ y
    return pd.DataFrame(
        together / np.maximum(np.diag(together)[:, None], 1), index=list(classes), columns=list(classes)
    )


def example_rows(labels: np.ndarray, per_class: int = 4, seed: int = 0) -> list[np.ndarray]:
    """For each class, up to `per_class` random rows that carry it."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(labels.shape[1]):
        rows = np.flatnonzero(labels[:, c])
        out.append(np.sort(rng.choice(rows, min(per_class, len(rows)), replace=False)))
    return out


def image_file_stats(paths: Sequence[Path], limit: int = 500, seed: int = 0) -> pd.DataFrame:
    """Width, height, colour mode and file size of up to `limit` random image files (headers only, no decoding)."""
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), min(limit, len(paths)), replace=False))
    rows = []
    for i in chosen:
        with Image.open(paths[i]) as image:
            rows.append({"file": Path(paths[i]).name, "width": image.width, "height": image.height,
                         "mode": image.mode, "kbytes": Path(paths[i]).stat().st_size / 1024})  # fmt: skip
    return pd.DataFrame(rows)


def channel_table(images: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
    """Per-channel mean, std, and 1st/99th percentiles (0-255) of the cached images in `rows` (first view)."""
    pixels = np.asarray(images[np.sort(rows), 0], dtype=np.float32).reshape(-1, 3)
    return pd.DataFrame(
        {
            "mean": pixels.mean(0),
            "std": pixels.std(0),
            "p01": np.percentile(pixels, 1, axis=0),
            "p99": np.percentile(pixels, 99, axis=0),
        },
        index=["red", "green", "blue"],
    ).round(2)


def fold_label_distribution(labels: np.ndarray, folds: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Each fold's share of rows carrying each label (rows: folds, then `all`); stratification makes them equal."""
    table = {f"fold {f}": labels[folds == f].mean(axis=0) for f in np.unique(folds)}
    table["all"] = labels.mean(axis=0)
    return pd.DataFrame(table, index=list(classes)).T


def fold_scores(
    labels: np.ndarray, folds: Sequence[FoldPredictions], thresholds: np.ndarray, beta: float, min_labels: int = 1
) -> pd.DataFrame:
    """Per fold: validation rows, sample F-beta at the run's thresholds, and mAP."""
    rows = []
    for f in folds:
        y = labels[f.val_rows]
        pred = binarize(f.oof, thresholds, min_labels)
        rows.append({"fold": f.fold, "rows": len(y), f"f{beta:g}": fbeta_samples(y, pred, beta),
                     "map": mean_average_precision(y, f.oof)})  # fmt: skip
    return pd.DataFrame(rows).set_index("fold")


def per_class_fold_scores(
    labels: np.ndarray, folds: Sequence[FoldPredictions], thresholds: np.ndarray, classes: Sequence[str], beta: float
) -> pd.DataFrame:
    """Each class's F-beta in each fold at the run's thresholds, with the mean and spread (std) across folds."""
    scores = {}
    for f in folds:
        tp, fp, fn = confusion_counts(labels[f.val_rows], f.oof >= thresholds, axis=0)
        scores[f"fold {f.fold}"] = np.where(tp + fp + fn > 0, fbeta_from_counts(tp, fp, fn, beta), np.nan)
    table = pd.DataFrame(scores, index=list(classes))
    table["mean"], table["std"] = table.mean(axis=1), table.std(axis=1, ddof=0)
    table["support"] = labels.sum(axis=0).astype(int)
    return table.sort_values("mean", ascending=False)


def worst_errors(
    labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, classes: Sequence[str], kind: str, k: int = 8
) -> pd.DataFrame:
    """The `k` most confident mistakes of one kind, as (row, class, prob, threshold); rows index `labels`.

    `fp`: absent labels predicted, furthest above their threshold. `fn`: present labels missed, furthest below it.
    """
    margin = probs - thresholds
    wrong = (labels == 0) & (margin >= 0) if kind == "fp" else (labels == 1) & (margin < 0)
    row, col = np.nonzero(wrong)
    order = np.argsort(-np.abs(margin[row, col]), kind="stable")[:k]
    return pd.DataFrame({"row": row[order], "class": [classes[c] for c in col[order]],
                         "prob": probs[row[order], col[order]], "threshold": thresholds[col[order]]})  # fmt: skip


def hourglass_label_maps(fold_model, images: np.ndarray) -> np.ndarray:
    """Per-label probability maps of an hourglass fold model, upsampled to the image: (N, C, S, S) float32.

    Args:
        fold_model: A `mlic.loop.fold_model.FoldModel` whose network has `label_maps` (the hourglass).
        images: (N, S, S, 3) uint8 cached images.
    """
    import torch  # here, so that the evaluate stage, which uses the tables above, does not import torch

    net, rt = fold_model.net, fold_model.runtime
    if not hasattr(net, "label_maps"):
        raise ValueError(f"model {fold_model.model} ({type(net).__name__}) has no label maps; pick an hourglass model")
    with torch.no_grad():
        x = rt.inputs({"image": torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))})["image"]
        maps = net.label_maps(x).float()
        maps = torch.nn.functional.interpolate(maps, size=images.shape[1:3], mode="bilinear", align_corners=False)
    return maps.cpu().numpy()
