"""Stage `evaluate`: out-of-fold metrics beside the all-prior baseline, a per-class table and threshold curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlic.config import Config
from mlic.explore import per_class_fold_scores
from mlic.io import atomic_path, write_json, write_text
from mlic.metrics import (
    fbeta_samples,
    fold_prior_probs,
    mean_average_precision,
    per_class_table,
    summary_metrics,
)
from mlic.plots import (
    class_spread_figure,
    plot_class_curves,
    plot_pr_curves,
    plot_threshold_curve,
    save_figure,
    training_curves_figure,
)
from mlic.predictions import EnsemblePredictions, FoldPredictions, assemble_oof, load_all_folds, load_ensemble
from mlic.prepared import load_prepared
from mlic.report import (
    classes_section,
    figures_section,
    metrics_section,
    models_section,
    render_report,
    thresholds_section,
)
from mlic.run import Run
from mlic.thresholds import best_global_threshold, binarize, fit_thresholds, load_thresholds, threshold_grid

METRICS_FILE, PER_CLASS_FILE, CURVE_FILE = "metrics.json", "per_class.csv", "threshold_curve.csv"
CURVE_PNG, CLASS_CURVES_PNG, PR_PNG = "threshold_curve.png", "class_threshold_curves.png", "pr_curves.png"
TRAINING_PNG, SPREAD_PNG, REPORT_FILE = "training_curves.png", "class_spread.png", "report.md"


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


def write_report(cfg: Config, metrics: dict, table: pd.DataFrame, labels: np.ndarray, ens_folds: list) -> None:
    """Write `report.md` and the figures it shows that no other output draws (training curves, class spread)."""
    run, out, beta = Run(Path.cwd(), cfg), Path(cfg.evaluate.out_dir), cfg.thresholds.beta
    curves = {f"{m} fold {f}": run.training_curves(m, f) for m in cfg.train.models for f in cfg.train.folds}
    save_figure(training_curves_figure(curves, beta), out / TRAINING_PNG)
    spread = per_class_fold_scores(labels, ens_folds, table["threshold"].to_numpy(), list(table["class"]), beta)
    save_figure(class_spread_figure(spread, beta), out / SPREAD_PNG)
    sections = [
        metrics_section(metrics, beta),
        models_section(metrics, run.ensemble_weights(), run.fold_metrics(), beta),
        thresholds_section(run.threshold_reports(), cfg.thresholds.method, beta),
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


def ensemble_folds(ens: EnsemblePredictions) -> list[FoldPredictions]:
    """The blended OOF probabilities split back into folds (row indices into the prepared label matrix)."""
    masks = {int(f): ens.folds == f for f in np.unique(ens.folds)}
    return [FoldPredictions(f, ens.rows[mask], ens.oof[mask], ens.test) for f, mask in masks.items()]


def main(cfg: Config) -> None:
    """Write `<evaluate.out_dir>/`: metrics.json, per_class.csv, threshold_curve.csv, the PNGs and report.md."""
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
    write_report(cfg, metrics, table, prep.labels, ensemble_folds(ens))
    key = f"f{t.beta:g}_samples"
    print(
        f"evaluate: OOF {key} {metrics['oof'][key]:.4f} vs all-prior baseline {metrics['all_prior_baseline'][key]:.4f}"
    )
