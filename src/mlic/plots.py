"""The PNG figures of the `evaluate` stage: score against a shared threshold, per-class curves, PR curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve

from mlic.io import atomic_path
from mlic.metrics import average_precision_per_class, fbeta_from_counts
from mlic.thresholds import threshold_grid

MAX_PANELS = 24  # per-class figures show the most frequent classes


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display on servers and CI), imported only when plotting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_threshold_curve(curve: pd.DataFrame, ylabel: str, path: Path) -> None:
    """PNG of the model's and the baseline's score against one shared threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(curve["threshold"], curve["model"], label="model (out-of-fold)")
    ax.plot(curve["threshold"], curve["all_prior_baseline"], "--", label="all-prior baseline")
    ax.set(xlabel="shared threshold", ylabel=ylabel, ylim=(0, 1), title="Score vs threshold")
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def _panels(labels: np.ndarray, classes: list[str]):
    """A figure with one small panel per class, for the MAX_PANELS most frequent classes."""
    plt = _pyplot()
    shown = np.argsort(-labels.sum(0), kind="stable")[:MAX_PANELS]
    cols = min(6, len(shown))
    rows = int(np.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows), dpi=80, squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.axis("off")
    return fig, plt, [(int(c), classes[c], ax) for c, ax in zip(shown, axes.flat, strict=False)]


def plot_class_curves(
    labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, classes: list[str], beta: float, path: Path
) -> None:
    """PNG: each class's own F-beta against its threshold, with the fitted threshold marked."""
    grid = threshold_grid(0.02)
    fig, plt, panels = _panels(labels, classes)
    for c, name, ax in panels:
        y, p = labels[:, c].astype(bool), probs[:, c][:, None] >= grid[None, :]
        tp, fp, fn = (y[:, None] & p).sum(0), (~y[:, None] & p).sum(0), (y[:, None] & ~p).sum(0)
        ax.plot(grid, np.where(tp + fp + fn > 0, fbeta_from_counts(tp, fp, fn, beta), 0.0))
        ax.axvline(thresholds[c], color="k", ls=":", lw=1)
        ax.set(title=f"{name} (n={int(y.sum())})", ylim=(0, 1), xlim=(0, 1))
        ax.title.set_fontsize(8)
    fig.suptitle(f"per-class F{beta:g} vs threshold (dotted: fitted)")
    _save(fig, plt, path)


def plot_pr_curves(labels: np.ndarray, probs: np.ndarray, classes: list[str], path: Path) -> None:
    """PNG: each class's precision-recall curve, titled with its average precision."""
    ap = average_precision_per_class(labels, probs)
    fig, plt, panels = _panels(labels, classes)
    for c, name, ax in panels:
        if labels[:, c].any():
            precision, recall, _ = precision_recall_curve(labels[:, c], probs[:, c])
            ax.plot(recall, precision)
        ax.set(title=f"{name} AP={ap[c]:.2f}", xlim=(0, 1), ylim=(0, 1.02))
        ax.title.set_fontsize(8)
    fig.suptitle("precision-recall per class (x: recall, y: precision)")
    _save(fig, plt, path)


def _save(fig, plt, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
