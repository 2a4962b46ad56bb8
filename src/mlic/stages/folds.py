"""Stage `folds`: multilabel-stratified k-fold assignment of the training rows."""

from __future__ import annotations

import numpy as np

from mlic.config import Config
from mlic.data.folds import assign_folds, fold_label_counts
from mlic.layout import load_prepared, save_folds


def main(cfg: Config) -> None:
    """Write `folds.out_file`: one row per training id with its fold."""
    prep = load_prepared(cfg.prepare.out_dir)
    folds = assign_folds(prep.labels, cfg.folds.n_splits, cfg.folds.seed)
    save_folds(cfg.folds.out_file, prep.train_ids, folds)
    counts = fold_label_counts(prep.labels, folds, cfg.folds.n_splits)
    sizes = np.bincount(folds, minlength=cfg.folds.n_splits).tolist()
    print(f"folds: {cfg.folds.n_splits} folds of sizes {sizes}; rarest label per fold: {counts.min(axis=1).tolist()}")
