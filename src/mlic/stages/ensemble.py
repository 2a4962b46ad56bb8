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
from mlic.predict.ensemble import BlendScoring, blend_parts, blend_record, choose_blend, model_shares


def main(cfg: Config) -> None:
    """Write `<ensemble.out_dir>/`: oof.npz (rows, folds, probs), test.npy, weights.json, blend.json, config.yaml.

    Fitted weights (weighted, per_class) blend each OOF row with weights fitted without its fold's rows (one
    trained fold: without its nested part, `blend_parts`), so the thresholds fitted next see honest OOF; the
    test uses the weights fitted on all rows.
    """
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
    labels, models = prep.labels[rows], list(per_model)
    parts = blend_parts(fold_of_row[rows], labels, cfg.thresholds)
    choice = choose_blend(oofs, labels, parts, tests, cfg.ensemble, BlendScoring.of(cfg.thresholds))
    shares = model_shares(choice.weights, models)
    save_ensemble(cfg.ensemble.out_dir, EnsemblePredictions(rows, fold_of_row[rows], choice.oof, choice.test),
                  shares, cfg, blend_record(choice, models, prep.classes))  # fmt: skip
    listed = ", ".join(f"{m} {w:.3f}" for m, w in shares.items())
    scores = ", ".join(f"{m} {v:.4f}" for m, v in choice.scores.items()) or "none (too few rows to nest)"
    per_class = " (mean over classes of per-class weights)" if choice.weights.ndim == 2 else ""
    print(f"ensemble ({choice.method}): {len(rows)} OOF rows, {len(choice.test)} test rows; "
          f"weights {listed}{per_class}; nested F{cfg.thresholds.beta:g} {scores}")  # fmt: skip
    print(choice.reason)


def remove_unlisted_train_outputs(cfg: Config) -> None:
    """Delete the outputs of train stages no longer listed, so dvc.lock hashes only the listed models' folds.

    Without this, dvc.lock would depend on what an old run left behind and a fresh clone would disagree with it.
    Nothing is lost: DVC cached those outputs, and listing the model again restores them from its run cache.
    """
    for path in unlisted_train_outputs(cfg):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"ensemble: removed {path}, the output of a train stage no longer in train.models x train.folds "
              "(DVC restores it from its cache if listed again)")  # fmt: skip
