"""Stage `evaluate`: out-of-fold metrics beside the all-prior baseline, a per-class table and threshold curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlic.config import Config
from mlic.io import atomic_path, write_json
from mlic.metrics import (
    fbeta_samples,
    fold_prior_probs,
    mean_average_precision,
    per_class_table,
    summary_metrics,
)
from mlic.plots import plot_class_curves, plot_pr_curves, plot_threshold_curve
from mlic.predictions import FoldPredictions, assemble_oof, load_all_folds, load_ensemble
from mlic.prepared import load_prepared
from mlic.thresholds import best_global_threshold, binarize, fit_thresholds, load_thresholds, threshold_grid

METRICS_FILE, PER_CLASS_FILE, CURVE_FILE = "metrics.json", "per_class.csv", "threshold_curve.csv"
CURVE_PNG, CLASS_CURVES_PNG, PR_PNG = "threshold_curve.png", "class_threshold_curves.png", "pr_curves.png"


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
    per_model, ens = load_all_folds(cfg), load_ensemble(cfg.ensemble.out_dir)
    labels, probs = prep.labels[ens.rows], ens.oof
    val_rows = [ens.rows[ens.folds == f] for f in np.unique(ens.folds)]
    base = fold_prior_probs(prep.labels, val_rows)[ens.rows]
    t, out = cfg.thresholds, Path(cfg.evaluate.out_dir)
    thresholds = load_thresholds(t.out_file, prep.classes)
    pred = binarize(probs, thresholds, t.min_labels, t.max_labels)
    # the baseline gets the exact per-class cuts whatever thresholds.method is (an optuna study here would be slow)
    base_pred = binarize(base, fit_thresholds(base, labels, t, "per_class_exact"), t.min_labels, t.max_labels)
    metrics = {
        "oof": summary_metrics(labels, probs, pred, t.beta),
        "all_prior_baseline": summary_metrics(labels, base, base_pred, t.beta),
        "oof_rows": len(ens.rows),
        "threshold_method": t.method,
        "models": model_scores(per_model, prep.labels, cfg),
    }
    write_json(out / METRICS_FILE, metrics)
    table = pd.DataFrame(per_class_table(labels, pred, prep.classes, t.beta)).assign(threshold=thresholds)
    write_csv(table, out / PER_CLASS_FILE)
    curve = threshold_curve(labels, probs, base, cfg)
    write_csv(curve, out / CURVE_FILE)
    plot_threshold_curve(curve, f"F{t.beta:g} (samples)", out / CURVE_PNG)
    plot_class_curves(labels, probs, thresholds, list(prep.classes), t.beta, out / CLASS_CURVES_PNG)
    plot_pr_curves(labels, probs, list(prep.classes), out / PR_PNG)
    key = f"f{t.beta:g}_samples"
    print(
        f"evaluate: OOF {key} {metrics['oof'][key]:.4f} vs all-prior baseline {metrics['all_prior_baseline'][key]:.4f}"
    )
