"""Auxiliary models trained per fold for another stage: a distilled student's teacher, the CAM model of proposals.

Each is an ordinary `models` entry trained by `train_fold` on the fold's training rows only, written as a fold folder
(`mlic.layout.save_fold`: checkpoint, predictions, config, curves) into the folder its DVC stage owns. When the
configuration needs none, the stage still writes its folder, with only a marker file, so that dvc.yaml can list the
folder as a dependency of every matrix item (DVC has no per-item dependencies): `mlic.layout.save_marker`, which the
stages write without importing torch, so a marker costs a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from mlic.config import Config, ModelEntry
from mlic.layout import LIVE_DIR, save_fold
from mlic.train.distributed import init_distributed, shutdown
from mlic.train.fold import train_fold
from mlic.train.runtime import resolve_device


def train_auxiliary(cfg: Config, key: str, entry: ModelEntry, fold: int, out_dir: str | Path) -> None:
    """Train `entry` (named `key` in its checkpoint) on fold `fold`'s training rows, into `out_dir` (atomically).

    Its out-of-fold predictions cover the fold's validation rows, which it never trained on, so whatever a later
    stage derives from it for those rows (soft targets, boxes) carries no validation label.
    """
    aux = dataclasses.replace(cfg, models={**cfg.models, key: entry})
    ctx = init_distributed(resolve_device(cfg.train).type == "cuda")
    try:
        outputs = train_fold(aux, key, fold, resume=False, ctx=ctx)
        checkpoints = aux.checkpoint_dir(key, fold)
        if outputs is not None:
            save_fold(out_dir, outputs, checkpoints / LIVE_DIR)
            shutil.rmtree(checkpoints, ignore_errors=True)
    finally:
        shutdown(ctx)
