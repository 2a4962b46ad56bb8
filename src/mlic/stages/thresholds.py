"""Stage `thresholds`: fit per-class thresholds for F-beta on the out-of-fold predictions (models averaged)."""

from __future__ import annotations

import numpy as np

from mlic.config import Config
from mlic.io import write_json
from mlic.metrics import fbeta_samples
from mlic.predictions import ensemble_oof, load_all_folds
from mlic.prepared import load_prepared
from mlic.thresholds import binarize, fit_thresholds


def main(cfg: Config) -> None:
    """Write `thresholds.out_file`: a threshold per class, and the out-of-fold score they reach."""
    prep = load_prepared(cfg.prepare.out_dir)
    probs, covered = ensemble_oof(load_all_folds(cfg), len(prep.train_ids))
    labels = prep.labels[covered]
    thresholds = fit_thresholds(probs[covered], labels, cfg.thresholds)
    t = cfg.thresholds
    score = fbeta_samples(labels, binarize(probs[covered], thresholds, t.min_labels), t.beta)
    write_json(
        t.out_file,
        {
            "method": t.method,
            "models": list(cfg.train.models),
            "beta": t.beta,
            "min_labels": t.min_labels,
            "oof_rows": int(covered.sum()),
            "oof_fbeta": round(score, 6),
            "thresholds": {c: float(np.round(v, 6)) for c, v in zip(prep.classes, thresholds, strict=True)},
        },
    )
    print(f"thresholds ({t.method}): out-of-fold F{t.beta:g} = {score:.4f} on {int(covered.sum())} rows")
