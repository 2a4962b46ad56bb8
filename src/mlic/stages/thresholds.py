"""Stage `thresholds`: fit per-class thresholds for F-beta on the ensemble's out-of-fold predictions.

Every method in `thresholds.method` and `thresholds.compare_methods` is scored in-sample and nested (fit on
k-1 folds, scored on the other, round-robin); the submission uses `thresholds.method` fitted on all rows.
"""

from __future__ import annotations

import numpy as np

from mlic.config import Config
from mlic.io import write_json
from mlic.layout import load_ensemble, load_prepared
from mlic.predict.threshold_fitting import create_study_storage, nested_evaluation


def main(cfg: Config) -> None:
    """Write `thresholds.out_file` (the chosen method's thresholds) and `thresholds.metrics_file` (all methods)."""
    prep = load_prepared(cfg.prepare.out_dir)
    ens = load_ensemble(cfg.ensemble.out_dir)
    labels, t = prep.labels[ens.rows], cfg.thresholds
    create_study_storage(t.optuna_storage)  # a DVC output, so it exists even when no method uses it
    reports = {
        m: nested_evaluation(ens.oof, labels, ens.folds, t, m) for m in dict.fromkeys([t.method, *t.compare_methods])
    }
    key = f"f{t.beta:g}_samples"
    write_json(
        t.metrics_file,
        {m: {"in_sample": r.in_sample, "nested": r.nested, "folds": r.per_fold, "fit_seconds": r.seconds}
         for m, r in reports.items()},
    )  # fmt: skip
    chosen = reports[t.method]
    write_json(
        t.out_file,
        {
            "method": t.method,
            "models": list(cfg.train.models),
            "ensemble": cfg.ensemble.method,
            "beta": t.beta,
            "min_labels": t.min_labels,
            "max_labels": t.max_labels,
            "oof_rows": len(ens.rows),
            "oof_fbeta": chosen.in_sample[key],
            "nested_fbeta": chosen.nested.get(key),
            "thresholds": {c: float(np.round(v, 6)) for c, v in zip(prep.classes, chosen.thresholds, strict=True)},
        },
    )
    for method, r in reports.items():
        nested = f"{r.nested[key]:.4f}" if r.nested else "n/a (one fold)"
        print(f"thresholds {method}: F{t.beta:g} in-sample {r.in_sample[key]:.4f}, nested {nested} "
              f"(fit {r.seconds:.2f} s)" + (" <- used" if method == t.method else ""))  # fmt: skip
