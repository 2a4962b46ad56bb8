"""Stage `submit`: apply the thresholds to the ensemble's test probabilities and write the Kaggle submission."""

from __future__ import annotations

from mlic.config import Config
from mlic.data.competitions import get_competition
from mlic.data.labels import decode_labels
from mlic.layout import load_ensemble_test, load_prepared, save_submit_predictions
from mlic.thresholds import binarize, load_thresholds


def main(cfg: Config) -> None:
    """Write `submit.out_file` and the ensembled test probabilities beside the config."""
    prep = load_prepared(cfg.prepare.out_dir)
    probs = load_ensemble_test(cfg.ensemble.out_dir)
    thresholds = load_thresholds(cfg.thresholds.out_file, prep.classes)
    pred = binarize(probs, thresholds, cfg.thresholds.min_labels, cfg.thresholds.max_labels)
    save_submit_predictions(cfg.submit.predictions_dir, prep.test_ids, prep.classes, probs, cfg)
    get_competition(cfg.data).write_submission(cfg.submit.out_file, prep.test_ids, decode_labels(pred, prep.classes))
    print(f"submit: {len(prep.test_ids)} rows, {pred.sum(1).mean():.2f} labels per row -> {cfg.submit.out_file}")
