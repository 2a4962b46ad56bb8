"""The PNG figures of the `evaluate` stage: score against a shared threshold, per-class curves, PR curves."""

from __future__ import annotations

import sys
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

    if "ipykernel" not in sys.modules:  # notebooks keep their inline backend, so figures show in the cell
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


# Figures for the notebooks and the report: each returns the matplotlib figure; `save_figure` writes a PNG.


def save_figure(fig, path: Path) -> None:
    """Write a figure as PNG atomically and release it."""
    _save(fig, _pyplot(), path)


def label_frequency_figure(freq: pd.DataFrame):
    """Horizontal bars: positives per class (a `explore.label_frequencies` table), top MAX_PANELS * 2 classes."""
    plt = _pyplot()
    shown = freq.head(MAX_PANELS * 2).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.22 * len(shown) + 1), dpi=90)
    ax.barh(shown["class"], shown["count"])
    ax.set(xlabel="training images with the label", title=f"label frequencies ({len(freq)} labels)")
    ax.tick_params(axis="y", labelsize=7)
    return fig


def cooccurrence_figure(matrix: pd.DataFrame):
    """Heatmap of P(column label | row label) (a `explore.cooccurrence` table), for the first MAX_PANELS * 2."""
    plt = _pyplot()
    shown = matrix.iloc[: MAX_PANELS * 2, : MAX_PANELS * 2]
    fig, ax = plt.subplots(figsize=(7, 6), dpi=90)
    image = ax.imshow(shown.to_numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(shown.columns)), shown.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(shown.index)), shown.index, fontsize=7)
    ax.set_title("P(column label | row label)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def image_grid_figure(images: np.ndarray, rows_per_class: list[np.ndarray], classes: list[str], max_classes: int = 12):
    """A grid with one line of example images per class (first view of the cache), for up to `max_classes`."""
    plt = _pyplot()
    lines = [(name, rows) for name, rows in zip(classes, rows_per_class, strict=True) if len(rows)][:max_classes]
    cols = max(len(rows) for _, rows in lines)
    fig, axes = plt.subplots(len(lines), cols, figsize=(1.4 * cols + 1, 1.4 * len(lines)), dpi=80, squeeze=False)
    for (name, rows), line in zip(lines, axes, strict=True):
        for ax in line:
            ax.axis("off")
        for row, ax in zip(rows, line, strict=False):
            ax.imshow(images[row, 0])
        line[0].set_title(name, fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def fold_distribution_figure(dist: pd.DataFrame):
    """Grouped bars: each fold's share of every label (an `explore.fold_label_distribution` table)."""
    plt = _pyplot()
    shown = dist.iloc[:, : MAX_PANELS * 2]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * shown.shape[1]), 3.5), dpi=90)
    width = 0.8 / len(shown)
    for i, (name, values) in enumerate(shown.iterrows()):
        ax.bar(np.arange(shown.shape[1]) + i * width, values.to_numpy(), width, label=name)
    ax.set_xticks(np.arange(shown.shape[1]) + 0.4 - width / 2, shown.columns, rotation=90, fontsize=7)
    ax.set(ylabel="share of rows", title="label share per fold (stratified: equal bars)")
    ax.legend(fontsize=7)
    return fig


def class_spread_figure(table: pd.DataFrame, beta: float):
    """Per-class F-beta across folds: the mean with a +-std bar (an `explore.per_class_fold_scores` table)."""
    plt = _pyplot()
    shown = table.head(MAX_PANELS * 2).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.22 * len(shown) + 1), dpi=90)
    ax.barh(shown.index, shown["mean"], xerr=shown["std"], capsize=2)
    ax.set(xlim=(0, 1), xlabel=f"F{beta:g} (mean over folds, bar: std)", title="per-class score across folds")
    ax.tick_params(axis="y", labelsize=7)
    return fig


def training_curves_figure(curves: dict[str, pd.DataFrame], beta: float):
    """Train loss and validation F-beta per epoch, one line per `model fold k` (tables of `Run.training_curves`)."""
    plt = _pyplot()
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 3.5), dpi=90)
    for name, frame in curves.items():
        loss_ax.plot(frame["epoch"], frame["train_loss"], marker=".", label=name)
        score_ax.plot(frame["epoch"], frame[f"val_f{beta:g}"], marker=".", label=name)
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="training loss")
    score_ax.set(xlabel="epoch", ylabel=f"validation F{beta:g}", title="validation score (no TTA)")
    for ax in (loss_ax, score_ax):
        ax.grid(alpha=0.3)
    score_ax.legend(fontsize=7)
    return fig


def error_gallery_figure(images: np.ndarray, errors: pd.DataFrame, true_tags: list[str], probs: np.ndarray,
                         classes: list[str], title: str):  # fmt: skip
    """One panel per mistake (an `explore.worst_errors` table): image, label probability, true tags, top labels.

    `images`, `true_tags` and `probs` are indexed by the table's rows.
    """
    plt = _pyplot()
    cols = min(4, max(1, len(errors)))
    lines = int(np.ceil(max(1, len(errors)) / cols))
    fig, axes = plt.subplots(lines, cols, figsize=(3.2 * cols, 4.0 * lines), dpi=80, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, err in zip(axes.flat, errors.itertuples(), strict=False):
        top = np.argsort(-probs[err.row])[:3]
        ax.imshow(images[err.row, 0])
        ax.set_title(f"{err[2]}: p={err.prob:.2f} (t={err.threshold:.2f})\ntrue: {true_tags[err.row]}\n"
                     + ", ".join(f"{classes[c]} {probs[err.row, c]:.2f}" for c in top), fontsize=7)  # fmt: skip
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def label_maps_figure(images: np.ndarray, maps: np.ndarray, classes: list[str], probs: np.ndarray, per_image: int = 3):
    """Each image, then its `per_image` most probable labels' maps overlaid (from `explore.hourglass_label_maps`).

    Each map's colours span its own range (given in the title), so they show where a label is seen.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(len(images), per_image + 1, figsize=(2.2 * (per_image + 1), 2.3 * len(images)), dpi=80,
                             squeeze=False)  # fmt: skip
    for image, image_maps, p, line in zip(images, maps, probs, axes, strict=True):
        line[0].imshow(image)
        line[0].set_title("image", fontsize=8)
        for c, ax in zip(np.argsort(-p)[:per_image], line[1:], strict=True):
            ax.imshow(image)
            ax.imshow(image_maps[c], cmap="jet", alpha=0.5)  # scaled per map: where, not how much
            ax.set_title(
                f"{classes[c]} p={p[c]:.2f}\nmap {image_maps[c].min():.2f}-{image_maps[c].max():.2f}", fontsize=7
            )
        for ax in line:
            ax.axis("off")
    fig.tight_layout()
    return fig
