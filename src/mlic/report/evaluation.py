"""Scoring a run's out-of-fold predictions for the `evaluate` stage, and the report that shows it.

The ensemble is scored against the all-prior baseline, per model, per class and per shared threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlic.config import Config
from mlic.io import write_text
from mlic.layout import (
    CLASS_CURVES_PNG,
    CURVE_PNG,
    PR_PNG,
    REPORT_FILE,
    SPREAD_PNG,
    TRAINING_PNG,
    EnsemblePredictions,
    FoldPredictions,
    assemble_oof,
)
from mlic.metrics import fbeta_samples, fold_prior_probs, mean_average_precision, summary_metrics
from mlic.predict.threshold_fitting import fit_thresholds
from mlic.report.explore import per_class_fold_scores
from mlic.report.markdown import (
    classes_section,
    figures_section,
    metrics_section,
    models_section,
    render_report,
    thresholds_section,
)
from mlic.report.plots import class_spread_figure, save_figure, training_curves_figure
from mlic.run import Run
from mlic.thresholds import best_global_threshold, binarize, threshold_grid


def all_prior_baseline(labels: np.ndarray, ens: EnsemblePredictions) -> np.ndarray:
    """Each OOF row's prediction by the baseline that knows only its training folds' label frequencies."""
    val_rows = [ens.rows[ens.folds == f] for f in np.unique(ens.folds)]
    return fold_prior_probs(labels, val_rows)[ens.rows]


def oof_metrics(labels: np.ndarray, ens: EnsemblePredictions, pred: np.ndarray, base: np.ndarray, cfg: Config) -> dict:
    """The ensemble's OOF summary metrics beside the all-prior baseline's (at its own exact per-class cuts)."""
    t = cfg.thresholds
    # the baseline gets the exact per-class cuts whatever thresholds.method is (an optuna study here would be slow)
    base_pred = binarize(base, fit_thresholds(base, labels, t, "per_class_exact"), t.min_labels, t.max_labels)
    return {
        "oof": summary_metrics(labels, ens.oof, pred, t.beta),
        "all_prior_baseline": summary_metrics(labels, base, base_pred, t.beta),
        "oof_rows": len(ens.rows),
        "threshold_method": t.method,
    }


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


def ensemble_folds(ens: EnsemblePredictions) -> list[FoldPredictions]:
    """The blended OOF probabilities split back into folds (row indices into the prepared label matrix)."""
    masks = {int(f): ens.folds == f for f in np.unique(ens.folds)}
    return [FoldPredictions(f, ens.rows[mask], ens.oof[mask], ens.test) for f, mask in masks.items()]


def write_report(cfg: Config, metrics: dict, table: pd.DataFrame, labels: np.ndarray, ens: EnsemblePredictions) -> None:
    """Write `report.md` and the figures it shows that no other output draws (training curves, class spread)."""
    run, out, beta = Run(Path.cwd(), cfg), Path(cfg.evaluate.out_dir), cfg.thresholds.beta
    curves = {f"{m} fold {f}": run.training_curves(m, f) for m in cfg.train.models for f in cfg.train.folds}
    save_figure(training_curves_figure(curves, beta), out / TRAINING_PNG)
    thresholds, classes = table["threshold"].to_numpy(), list(table["class"])
    spread = per_class_fold_scores(labels, ensemble_folds(ens), thresholds, classes, beta)
    save_figure(class_spread_figure(spread, beta), out / SPREAD_PNG)
    chosen = run.thresholds_file()  # its `reason`: which method the submission uses, and why (auto's choice)
    sections = [
        metrics_section(metrics, beta),
        models_section(metrics, run.ensemble_weights(), run.fold_metrics(), beta),
        thresholds_section(run.threshold_reports(), cfg.thresholds.method, beta, chosen.get("reason", "")),
        classes_section(table),
        figures_section([
            ("Training curves", TRAINING_PNG),
            ("Score against one shared threshold", CURVE_PNG),
            ("Per-class score against its threshold", CLASS_CURVES_PNG),
            ("Per-class score across folds (ensemble OOF)", SPREAD_PNG),
            ("Precision-recall per class", PR_PNG),
        ]),
    ]  # fmt: skip
    write_text(out / REPORT_FILE, render_report(cfg, sections, metrics["oof_rows"]))
