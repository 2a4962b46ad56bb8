"""The HOG path end to end, stage by stage in-process: crop-view cache, hog stage, HOG models, submission."""

import numpy as np
import pandas as pd
import pytest

from mlic.config import config_from_dict
from mlic.layout import load_hog, load_prepared
from mlic.stages import ensemble, folds, hog, prepare, submit, thresholds, train

pytestmark = pytest.mark.slow
MODELS = ("hog_linear", "resnet50_hog", "baseline")


@pytest.fixture(scope="module")
def project(sample_competition, tmp_path_factory):
    root = tmp_path_factory.mktemp("hogrun")
    params = {
        "data": {"root": str(sample_competition), "min_label_count": 1},
        "prepare": {"out_dir": str(root / "prepare"), "image_size": 32, "crop_views": 2, "crop_scale": 0.8},
        "hog": {"out_dir": str(root / "hog"), "image_size": 32, "pixels_per_cell": 8, "cells_per_block": 2},
        "folds": {"out_file": str(root / "folds.csv"), "n_splits": 2},
        "models": {
            "hog_linear": {"arch": "hog_linear"},
            "resnet50_hog": {"arch": "resnet50_hog", "backbone": "resnet10t", "hog_projection": 8},
            "baseline": {"arch": "baseline", "backbone": "resnet10t"},
        },
        "train": {
            "out_dir": str(root / "train"),
            "checkpoint_dir": str(root / "checkpoints"),
            "folds": [0, 1],
            "epochs": 1,
            "warmup_epochs": 0,
            "batch_size": 16,
        },
        "ensemble": {"out_dir": str(root / "ensemble")},
        "thresholds": {
            "out_file": str(root / "thresholds.json"),
            "metrics_file": str(root / "threshold_scores.json"),
            "optuna_storage": str(root / "optuna.db"),
            "compare_methods": ["global"],
            "grid_step": 0.1,
        },
        "submit": {"out_file": str(root / "subs" / "submission.csv"), "predictions_dir": str(root / "submit")},
    }
    cfg = config_from_dict(params)
    for stage in (prepare, hog, folds):
        stage.main(cfg)
    return root, params


def test_crop_views_and_hog_arrays_line_up(project):
    root, _ = project
    prep, features = load_prepared(root / "prepare"), load_hog(root / "hog")
    assert prep.train_images.shape == (40, 3, 32, 32, 3)
    assert features.train.shape == (40, 3, 324) and features.train.dtype == np.float16
    assert features.test.shape == (12, 3, 324)
    assert features.mean.shape == features.std.shape == (324,) and (features.std > 0).all()


@pytest.mark.parametrize("model", MODELS)
def test_models_train_and_submit_on_crop_views(project, model):
    root, params = project
    cfg = config_from_dict({**params, "train": {**params["train"], "models": [model]}})
    (root / "subs" / "submission.csv").unlink(missing_ok=True)  # the models share the path: each writes its own
    for fold in (0, 1):
        train.main(cfg, fold, model)
    ensemble.main(cfg)
    thresholds.main(cfg)
    submit.main(cfg)
    submission = pd.read_csv(root / "subs" / "submission.csv", keep_default_na=False)
    assert len(submission) == 12 and (submission["tags"] != "").all()
    n_classes = len(load_prepared(root / "prepare").classes)  # labels absent from 40 chips are dropped
    with np.load(root / "train" / model / "fold_0" / "oof.npz") as oof:
        assert oof["probs"].shape == (20, n_classes) and np.isfinite(oof["probs"]).all()
