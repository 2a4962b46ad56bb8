"""Stage `evaluate`: out-of-fold metrics beside the all-prior baseline, a per-class table and threshold curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlic.config import Config
from mlic.io import atomic_path, write_json
from mlic.metrics import fbeta_samples, fold_prior_probs, mean_average_precision, per_class_table, summary_metrics
from mlic.predictions import FoldPredictions, assemble_oof, ensemble_oof, load_all_folds
from mlic.prepared import load_prepared
from mlic.thresholds import best_global_threshold, binarize, fit_thresholds, load_thresholds, threshold_grid

METRICS_FILE, PER_CLASS_FILE, CURVE_FILE = "metrics.json", "per_class.csv", "threshold_curve.csv"
CURVE_PNG = "threshold_curve.png"


def threshold_curve(labels: np.ndarray, probs: np.ndarray, base: np.ndarray, cfg: Config) -> pd.DataFrame:
    """Sample F-beta of the model and of the baseline, for one shared threshold swept over the grid."""
    t = cfg.thresholds
    grid = threshold_grid(0.02)
    return pd.DataFrame(
        {
            "threshold": grid,
            "model": [fbeta_samples(labels, binarize(probs, g, t.min_labels), t.beta) for g in grid],
            "all_prior_baseline": [fbeta_samples(labels, binarize(base, g, t.min_labels), t.beta) for g in grid],
        }
    ).round(6)


def plot_threshold_curve(curve: pd.DataFrame, ylabel: str, path: Path) -> None:
    """PNG of the model's and the baseline's score against one shared threshold."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(curve["threshold"], curve["model"], label="model (out-of-fold)")
    ax.plot(curve["threshold"], curve["all_prior_baseline"], "--", label="all-prior baseline")
    ax.set(xlabel="shared threshold", ylabel=ylabel, ylim=(0, 1), title="Score vs threshold")
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a CSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def model_scores(per_model: dict[str, list[FoldPredictions]], labels: np.ndarray, cfg: Config) -> dict:
    """Each model's own out-of-fold mAP and F-beta at its best shared threshold, to compare with the ensemble."""
    t, scores = cfg.thresholds, {}
    for model, folds in per_model.items():
        probs, covered = assemble_oof(folds, len(labels))
        threshold, score = best_global_threshold(probs[covered], labels[covered], t.beta, t.min_labels, t.grid_step)
        average_precision = mean_average_precision(labels[covered], probs[covered])
        scores[model] = {f"f{t.beta:g}_global_threshold": round(score, 6), "threshold": threshold,
                         "map": round(average_precision, 6)}  # fmt: skip
    return scores


def main(cfg: Config) -> None:
    """Write `<evaluate.out_dir>/metrics.json`, `per_class.csv` and `threshold_curve.csv`."""
    prep = load_prepared(cfg.prepare.out_dir)
    per_model = load_all_folds(cfg)
    probs, covered = ensemble_oof(per_model, len(prep.train_ids))
    labels, probs = prep.labels[covered], probs[covered]
    base = fold_prior_probs(prep.labels, [f.val_rows for f in next(iter(per_model.values()))])[covered]
    t, out = cfg.thresholds, Path(cfg.evaluate.out_dir)
    thresholds = load_thresholds(t.out_file, prep.classes)
    pred = binarize(probs, thresholds, t.min_labels)
    base_pred = binarize(base, fit_thresholds(base, labels, t), t.min_labels)
    metrics = {
        "oof": summary_metrics(labels, probs, pred, t.beta),
        "all_prior_baseline": summary_metrics(labels, base, base_pred, t.beta),
        "oof_rows": int(covered.sum()),
        "threshold_method": t.method,
        "models": model_scores(per_model, prep.labels, cfg),
    }
    write_json(out / METRICS_FILE, metrics)
    table = pd.DataFrame(per_class_table(labels, pred, prep.classes, t.beta)).assign(threshold=thresholds)
    write_csv(table, out / PER_CLASS_FILE)
    curve = threshold_curve(labels, probs, base, cfg)
    write_csv(curve, out / CURVE_FILE)
    plot_threshold_curve(curve, f"F{t.beta:g} (samples)", out / CURVE_PNG)
    key = f"f{t.beta:g}_samples"
    print(
        f"evaluate: OOF {key} {metrics['oof'][key]:.4f} vs all-prior baseline {metrics['all_prior_baseline'][key]:.4f}"
    )
