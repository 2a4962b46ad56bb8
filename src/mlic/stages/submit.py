"""Stage `submit`: apply the thresholds to the ensemble's test probabilities and write the Kaggle submission."""

from __future__ import annotations

import numpy as np

from mlic.competitions import get_competition
from mlic.config import Config, save_config
from mlic.io import atomic_path
from mlic.labels import decode_labels
from mlic.predictions import load_ensemble
from mlic.prepared import load_prepared
from mlic.thresholds import binarize, load_thresholds

PREDICTIONS_FILE = "test_predictions.npz"


def main(cfg: Config) -> None:
    """Write `submit.out_file` and the ensembled test probabilities beside the config."""
    prep = load_prepared(cfg.prepare.out_dir)
    probs = load_ensemble(cfg.ensemble.out_dir).test
    thresholds = load_thresholds(cfg.thresholds.out_file, prep.classes)
    pred = binarize(probs, thresholds, cfg.thresholds.min_labels, cfg.thresholds.max_labels)
    with atomic_path(cfg.submit.predictions_dir, is_dir=True) as out:
        np.savez(out / PREDICTIONS_FILE, ids=np.array(prep.test_ids), classes=np.array(prep.classes), probs=probs)
        save_config(cfg, out / "config.yaml")
    get_competition(cfg.data).write_submission(cfg.submit.out_file, prep.test_ids, decode_labels(pred, prep.classes))
    print(f"submit: {len(prep.test_ids)} rows, {pred.sum(1).mean():.2f} labels per row -> {cfg.submit.out_file}")
