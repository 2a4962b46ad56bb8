"""Auxiliary models trained per fold for another stage: a distilled student's teacher, the CAM model of proposals.

Each is an ordinary `models` entry trained by `train_fold` on the fold's training rows only, written as a fold folder
(`mlic.layout.save_fold`: checkpoint, predictions, config, curves) into the folder its DVC stage owns. dvc.yaml has
those stages only when the params need them (`mlic.pipeline`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mlic.config import Config, ModelEntry
from mlic.train.fold import train_fold_into


def train_auxiliary(cfg: Config, key: str, entry: ModelEntry, fold: int, out_dir: str | Path) -> None:
    """Train `entry` (named `key` in its checkpoint) on fold `fold`'s training rows, into `out_dir` (atomically).

    Its out-of-fold predictions cover the fold's validation rows, which it never trained on, so whatever a later
    stage derives from it for those rows (soft targets, boxes) carries no validation label.
    """
    train_fold_into(dataclasses.replace(cfg, models={**cfg.models, key: entry}), key, fold, False, out_dir)
