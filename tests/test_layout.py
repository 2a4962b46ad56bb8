"""`mlic.layout` owns the on-disk layout: the only module that spells a stage output's file name, and round trips."""

import ast

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO

from mlic import layout
from mlic.config import config_from_dict
from mlic.errors import MlicError

# Kaggle's own raw layouts (iMet, folder datasets) also call their files so: those spellings are the readers' own
SHARED_WITH_RAW_LAYOUTS = {"train.csv", "test.csv"}


def test_no_other_module_spells_an_output_file_name():
    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)} - SHARED_WITH_RAW_LAYOUTS
    assert {"metrics.json", "model.pt", "oof.npz", "weights.json", "config.yaml"} <= names
    offenders = []
    for path in sorted((REPO / "src" / "mlic").rglob("*.py")):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert not offenders, "use the mlic.layout constants and functions:\n" + "\n".join(offenders)


def test_fold_outputs_round_trip(tmp_path):
    live = tmp_path / "live"
    (live / "plots" / "metrics").mkdir(parents=True)
    (live / "plots" / "metrics" / "train_loss.tsv").write_text("step\ttrain_loss\n1\t0.5\n2\t0.25\n")
    rows, oof, test = np.array([3, 1]), np.random.default_rng(0).random((2, 4), dtype=np.float32), np.ones((5, 4))
    checkpoint = {"state_dict": {"w": torch.ones(2)}, "classes": ["a", "b", "c", "d"], "source_dims": {"image": 3}}
    summary, config = {"model": "m", "fold": 1, "best_epoch": 2}, {"train": {"epochs": 2}}
    layout.save_fold(tmp_path / "fold_1", layout.FoldOutputs(checkpoint, rows, oof, test, summary, config), live)
    loaded = layout.load_fold_predictions(tmp_path / "fold_1", 1, "m")
    assert (
        np.array_equal(loaded.val_rows, rows) and np.array_equal(loaded.oof, oof) and np.array_equal(loaded.test, test)
    )
    assert torch.equal(layout.load_checkpoint(tmp_path / "fold_1")["state_dict"]["w"], torch.ones(2))
    assert layout.load_fold_metrics(tmp_path / "fold_1") == summary
    assert yaml.safe_load((tmp_path / "fold_1" / layout.CONFIG_FILE).read_text()) == config
    curves = layout.load_training_curves(tmp_path / "fold_1")
    assert list(curves["epoch"]) == [1, 2] and list(curves["train_loss"]) == [0.5, 0.25]


def test_ensemble_round_trips_and_missing_outputs_say_which_stage_to_run(tmp_path):
    cfg = config_from_dict({})
    ens = layout.EnsemblePredictions(np.arange(3), np.array([0, 1, 0]), np.full((3, 2), 0.5), np.zeros((4, 2)))
    layout.save_ensemble(tmp_path / "ens", ens, {"baseline": 1.0}, cfg)
    back = layout.load_ensemble(tmp_path / "ens")
    assert all(np.array_equal(getattr(back, f), getattr(ens, f)) for f in ("rows", "folds", "oof", "test"))
    assert layout.load_ensemble_weights(tmp_path / "ens") == {"baseline": 1.0}
    saved = yaml.safe_load((tmp_path / "ens" / layout.CONFIG_FILE).read_text())
    assert saved == {"train": {"models": ["baseline"], "folds": [0, 1, 2]}, "ensemble": cfg.to_dict()["ensemble"]}
    with pytest.raises(MlicError, match="dvc repro ensemble"):
        layout.load_ensemble(tmp_path / "nowhere")
    with pytest.raises(MlicError, match="train-m-2"):
        layout.load_fold_predictions(tmp_path / "nowhere", 2, "m")


def test_folds_file_must_match_the_prepared_ids(tmp_path):
    layout.save_folds(tmp_path / "folds.csv", ["a", "b", "c"], np.array([0, 1, 0]))
    assert layout.load_folds(tmp_path / "folds.csv", ["a", "b", "c"]).tolist() == [0, 1, 0]
    with pytest.raises(MlicError, match="does not match the prepared training ids"):
        layout.load_folds(tmp_path / "folds.csv", ["a", "c", "b"])


def test_unlisted_train_outputs_are_dropped_folds_and_models_but_not_dvcs_gitignore(tmp_path):
    cfg = config_from_dict({"train": {"models": ["baseline"], "folds": [0]}})
    out = tmp_path / cfg.train.out_dir
    for path in ("baseline/fold_0", "baseline/fold_1", "hourglass/fold_0"):
        (out / path).mkdir(parents=True)
    for gitignore in (out / ".gitignore", out / "baseline/.gitignore"):
        gitignore.write_text("/fold_0\n")
    assert layout.unlisted_train_outputs(cfg, tmp_path) == [out / "baseline/fold_1", out / "hourglass"]
