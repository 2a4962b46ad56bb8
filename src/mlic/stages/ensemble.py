"""Stage `ensemble`: average each model's folds, blend the models (`ensemble.method`), write OOF and test."""

from __future__ import annotations

import numpy as np

from mlic.config import Config
from mlic.layout import EnsemblePredictions, assemble_oof, average_test, load_all_folds, load_prepared, save_ensemble
from mlic.predict.ensemble import blend


def main(cfg: Config) -> None:
    """Write `<ensemble.out_dir>/`: oof.npz (rows, folds, probs), test.npy, weights.json and config.yaml."""
    prep = load_prepared(cfg.prepare.out_dir)
    per_model = load_all_folds(cfg)
    n_rows = len(prep.train_ids)
    assembled = [assemble_oof(folds, n_rows) for folds in per_model.values()]
    covered = np.logical_and.reduce([c for _, c in assembled])
    rows = np.flatnonzero(covered)
    fold_of_row = np.full(n_rows, -1)
    for f in next(iter(per_model.values())):
        fold_of_row[f.val_rows] = f.fold
    oofs, tests = [p[rows] for p, _ in assembled], [average_test(folds) for folds in per_model.values()]
    weights, oof, test = blend(cfg.ensemble.method, oofs, prep.labels[rows], tests)
    shares = {m: round(float(w), 6) for m, w in zip(per_model, weights, strict=True)}
    save_ensemble(cfg.ensemble.out_dir, EnsemblePredictions(rows, fold_of_row[rows], oof, test), shares, cfg)
    listed = ", ".join(f"{m} {w:.3f}" for m, w in zip(per_model, weights, strict=True))
    print(f"ensemble ({cfg.ensemble.method}): {len(rows)} OOF rows, {len(test)} test rows; weights {listed}")
