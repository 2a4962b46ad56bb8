"""Stage `evaluate`: out-of-fold metrics beside the all-prior baseline, a per-class table, curves and the report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlic.config import Config
from mlic.io import write_json
from mlic.layout import (
    CLASS_CURVES_PNG,
    CURVE_FILE,
    CURVE_PNG,
    METRICS_FILE,
    PER_CLASS_FILE,
    PR_PNG,
    load_all_folds,
    load_ensemble,
    load_prepared,
    write_csv,
)
from mlic.metrics import per_class_table
from mlic.report.evaluation import all_prior_baseline, model_scores, oof_metrics, threshold_curve, write_report
from mlic.report.plots import plot_class_curves, plot_pr_curves, plot_threshold_curve
from mlic.thresholds import binarize, load_thresholds


def main(cfg: Config) -> None:
    """Write `<evaluate.out_dir>/`: metrics.json, per_class.csv, threshold_curve.csv, the PNGs and report.md."""
    prep = load_prepared(cfg.prepare.out_dir)
    ens = load_ensemble(cfg.ensemble.out_dir)
    labels, probs, classes = prep.labels[ens.rows], ens.oof, list(prep.classes)
    t, out = cfg.thresholds, Path(cfg.evaluate.out_dir)
    base = all_prior_baseline(prep.labels, ens)
    thresholds = load_thresholds(t.out_file, classes)
    pred = binarize(probs, thresholds, t.min_labels, t.max_labels)
    metrics = {
        **oof_metrics(labels, ens, pred, base, cfg),
        "models": model_scores(load_all_folds(cfg), prep.labels, cfg),
    }
    write_json(out / METRICS_FILE, metrics)
    table = pd.DataFrame(per_class_table(labels, pred, classes, t.beta)).assign(threshold=thresholds)
    write_csv(table, out / PER_CLASS_FILE)
    curve = threshold_curve(labels, probs, base, cfg)
    write_csv(curve, out / CURVE_FILE)
    plot_threshold_curve(curve, f"F{t.beta:g} (samples)", out / CURVE_PNG)
    plot_class_curves(labels, probs, thresholds, classes, t.beta, out / CLASS_CURVES_PNG)
    plot_pr_curves(labels, probs, classes, out / PR_PNG)
    write_report(cfg, metrics, table, prep.labels, ens)
    key = f"f{t.beta:g}_samples"
    print(
        f"evaluate: OOF {key} {metrics['oof'][key]:.4f} vs all-prior baseline {metrics['all_prior_baseline'][key]:.4f}"
    )
