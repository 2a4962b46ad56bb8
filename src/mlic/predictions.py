"""Prediction files: per fold (written by `train`), their assembly into OOF and test arrays, and the ensemble's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlic.config import Config
from mlic.errors import MlicError

# File names inside a fold directory (the directory comes from train.out_dir and the fold id).
CHECKPOINT = "model.pt"
OOF_FILE = "oof.npz"
TEST_FILE = "test.npy"
CONFIG_FILE = "config.yaml"
FOLD_METRICS_FILE = "metrics.json"  # a fold's summary (epochs, validation scores); `train` writes it
WEIGHTS_FILE = "weights.json"  # inside the ensemble directory: each model's weight in the blend


@dataclass(frozen=True)
class FoldPredictions:
    """One fold's validation rows with their out-of-fold probabilities, and its test probabilities."""

    fold: int
    val_rows: np.ndarray
    oof: np.ndarray
    test: np.ndarray


def load_fold_predictions(fold_dir: str | Path, fold: int, model: str = "baseline") -> FoldPredictions:
    """Read the prediction files of one trained fold."""
    fold_dir = Path(fold_dir)
    if not (fold_dir / OOF_FILE).is_file():
        raise MlicError(
            f"model {model} fold {fold} has no predictions",
            path=fold_dir,
            fix=f"run `dvc repro train@{model}-{fold}` (or `mlic train --model {model} --fold {fold}`) first",
        )
    with np.load(fold_dir / OOF_FILE) as oof:
        return FoldPredictions(fold, oof["rows"], oof["probs"], np.load(fold_dir / TEST_FILE))


def load_all_folds(cfg: Config, root: Path = Path(".")) -> dict[str, list[FoldPredictions]]:
    """The predictions of every model in `train.models`, for every fold in `train.folds` (paths under `root`)."""
    t = cfg.train
    return {m: [load_fold_predictions(root / cfg.fold_dir(m, f), f, m) for f in t.folds] for m in t.models}


def assemble_oof(folds: Sequence[FoldPredictions], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack out-of-fold probabilities into (N, C) by row; returns them and the mask of rows covered."""
    n_classes = folds[0].oof.shape[1]
    probs = np.zeros((n_rows, n_classes), dtype=np.float32)
    covered = np.zeros(n_rows, dtype=bool)
    for f in folds:
        if covered[f.val_rows].any():
            raise MlicError(f"fold {f.fold} overlaps another fold's validation rows", fix="rerun folds and train")
        probs[f.val_rows], covered[f.val_rows] = f.oof, True
    return probs, covered


def average_test(folds: Sequence[FoldPredictions]) -> np.ndarray:
    """Mean of the folds' test probabilities: the fold ensemble."""
    return np.mean([f.test for f in folds], axis=0).astype(np.float32)


@dataclass(frozen=True)
class EnsemblePredictions:
    """The `ensemble` stage's output: blended OOF probabilities of the covered rows (with their folds), and test."""

    rows: np.ndarray
    folds: np.ndarray
    oof: np.ndarray
    test: np.ndarray


def load_ensemble(out_dir: str | Path) -> EnsemblePredictions:
    """Read what the `ensemble` stage wrote."""
    out_dir = Path(out_dir)
    if not (out_dir / OOF_FILE).is_file():
        raise MlicError("no ensemble predictions", path=out_dir, fix="run `dvc repro ensemble` (or `mlic ensemble`)")
    with np.load(out_dir / OOF_FILE) as oof:
        return EnsemblePredictions(oof["rows"], oof["folds"], oof["probs"], np.load(out_dir / TEST_FILE))
