"""A pipeline run, opened from its project folder: its config, and each stage's outputs read by path from params.

Notebooks, `mlic predict` and `mlic export-onnx` open a run this way, from any working directory:

    run = open_run("..")                  # the folder where `dvc repro` ran
    prep, ens = run.prepared(), run.ensemble()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlic.config import DEFAULT_PARAMS, Config, load_config
from mlic.errors import MlicError
from mlic.layout import (
    METRICS_FILE,
    EnsemblePredictions,
    FoldPredictions,
    Prepared,
    load_all_folds,
    load_ensemble,
    load_ensemble_weights,
    load_fold_metrics,
    load_folds,
    load_prepared,
    load_training_curves,
    read_json,
)


@dataclass(frozen=True)
class Run:
    """A project folder and its params; every path in the params is relative to `root`."""

    root: Path
    cfg: Config

    def path(self, relative: str | Path) -> Path:
        """A path from params.yaml, resolved against the project folder (absolute paths stay as they are)."""
        return self.root / relative

    def fold_dir(self, model: str, fold: int) -> Path:
        """The `train` output folder of one model and fold."""
        return self.path(self.cfg.fold_dir(model, fold))

    def prepared(self) -> Prepared:
        """The `prepare` outputs (label matrix, ids, memory-mapped image caches, channel stats)."""
        return load_prepared(self.path(self.cfg.prepare.out_dir))

    def folds(self, prep: Prepared | None = None) -> np.ndarray:
        """The fold of every training row."""
        prep = prep or self.prepared()
        return load_folds(self.path(self.cfg.folds.out_file), prep.train_ids)

    def fold_predictions(self) -> dict[str, list[FoldPredictions]]:
        """Every trained model's per-fold OOF and test probabilities, as the `ensemble` stage reads them."""
        return load_all_folds(self.cfg, self.root)

    def ensemble(self) -> EnsemblePredictions:
        """The blended OOF and test probabilities."""
        return load_ensemble(self.path(self.cfg.ensemble.out_dir))

    def ensemble_weights(self) -> dict[str, float]:
        """The weight of each model in the blend, as the `ensemble` stage chose them."""
        return load_ensemble_weights(self.path(self.cfg.ensemble.out_dir))

    def thresholds_file(self) -> dict:
        """The `thresholds` stage's output: method, label limits and the per-class thresholds."""
        return read_json(self.path(self.cfg.thresholds.out_file))

    def threshold_reports(self) -> dict:
        """In-sample, nested and per-fold scores of every threshold method compared (`thresholds.metrics_file`).

        One mapping per method; the file's headline scalars (`method`, `oof_f2`, ...) are left out.
        """
        return method_reports(read_json(self.path(self.cfg.thresholds.metrics_file)))

    def metrics(self) -> dict:
        """The `evaluate` stage's metrics (`<evaluate.out_dir>/metrics.json`)."""
        return read_json(self.path(self.cfg.evaluate.out_dir) / METRICS_FILE)

    def fold_metrics(self) -> pd.DataFrame:
        """One row per trained (model, fold): epochs, best epoch, validation F-beta and mAP with TTA."""
        t = self.cfg.train
        return pd.DataFrame([load_fold_metrics(self.fold_dir(m, f)) for m in t.models for f in t.folds])

    def training_curves(self, model: str, fold: int) -> pd.DataFrame:
        """One row per epoch of one fold's training: the DVCLive metrics (train loss, validation F-beta, LR...)."""
        return load_training_curves(self.fold_dir(model, fold))


def method_reports(scores: dict) -> dict:
    """The per-method mappings of a `thresholds.metrics_file`, without its headline scalars (`dvc exp show`'s)."""
    return {name: report for name, report in scores.items() if isinstance(report, dict)}


def open_run(root: str | Path = ".", params: str = DEFAULT_PARAMS) -> Run:
    """Open the project folder `root`, where `dvc repro` ran, with its `params` file.

    Raises:
        MlicError: If the folder holds no params file.
    """
    root = Path(root).expanduser().resolve()
    if not (root / params).is_file():
        raise MlicError(
            f"no {params} here: not an mlic project folder",
            path=root,
            fix="pass the folder where `dvc repro` ran (it holds params.yaml and dvc.yaml)",
        )
    return Run(root, load_config(root / params))
