"""Multilabel-stratified k-fold assignment (iterative stratification keeps every label's rate in every fold)."""

from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold


def assign_folds(labels: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Fold id (0..n_splits-1) of each row, stratified on the (N, C) binary label matrix; same seed, same folds."""
    folds = np.full(len(labels), -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (_, val_rows) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[val_rows] = fold
    return folds


def fold_label_counts(labels: np.ndarray, folds: np.ndarray, n_splits: int) -> np.ndarray:
    """(n_splits, C) positives per fold and label, to check the stratification."""
    return np.stack([labels[folds == f].sum(axis=0) for f in range(n_splits)])
