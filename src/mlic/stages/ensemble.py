"""Stage `ensemble`: average each model's folds, blend the models (`ensemble.method`), write OOF and test."""

from __future__ import annotations

import shutil

import numpy as np

from mlic.config import Config
from mlic.layout import (
    EnsemblePredictions,
    assemble_oof,
    average_test,
    load_all_folds,
    load_prepared,
    save_ensemble,
    unlisted_train_outputs,
)
from mlic.predict.ensemble import blend


def main(cfg: Config) -> None:
    """Write `<ensemble.out_dir>/`: oof.npz (rows, folds, probs), test.npy, weights.json and config.yaml."""
    prep = load_prepared(cfg.prepare.out_dir)
    per_model = load_all_folds(cfg)
    remove_unlisted_train_outputs(cfg)
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


def remove_unlisted_train_outputs(cfg: Config) -> None:
    """Delete the outputs of train stages no longer listed, so dvc.lock hashes only the listed models' folds.

    Without this, dvc.lock would depend on what an old run left behind and a fresh clone would disagree with it.
    Nothing is lost: DVC cached those outputs, and listing the model again restores them from its run cache.
    """
    for path in unlisted_train_outputs(cfg):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"ensemble: removed {path}, the output of a train stage no longer in train.models x train.folds "
              "(DVC restores it from its cache if listed again)")  # fmt: skip
