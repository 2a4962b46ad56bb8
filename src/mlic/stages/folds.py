"""Stage `folds`: multilabel-stratified k-fold assignment of the training rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlic.config import Config
from mlic.folds import assign_folds, fold_label_counts
from mlic.io import atomic_path
from mlic.prepared import load_prepared


def main(cfg: Config) -> None:
    """Write `folds.out_file`: one row per training id with its fold."""
    prep = load_prepared(cfg.prepare.out_dir)
    folds = assign_folds(prep.labels, cfg.folds.n_splits, cfg.folds.seed)
    with atomic_path(cfg.folds.out_file) as tmp:
        pd.DataFrame({"id": prep.train_ids, "fold": folds}).to_csv(tmp, index=False)
    counts = fold_label_counts(prep.labels, folds, cfg.folds.n_splits)
    sizes = np.bincount(folds, minlength=cfg.folds.n_splits).tolist()
    print(f"folds: {cfg.folds.n_splits} folds of sizes {sizes}; rarest label per fold: {counts.min(axis=1).tolist()}")
