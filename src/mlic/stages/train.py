"""Stage `train`: fit one model on one fold, then write its checkpoint, out-of-fold and test predictions (TTA).

`mlic train --model M --fold K [--resume]`; under `torchrun --nproc_per_node N` it trains with DDP. While it runs,
the resume state lives in `<train.checkpoint_dir>/<model>/fold_<k>/` (updated every epoch, removed at the end);
the outputs appear in `<train.out_dir>/<model>/fold_<k>/` only once the fold has finished.
"""

from __future__ import annotations

import shutil

from mlic.config import Config
from mlic.layout import LIVE_DIR, save_fold
from mlic.train.distributed import barrier, init_distributed, shutdown
from mlic.train.fold import train_fold
from mlic.train.runtime import resolve_device


def main(cfg: Config, fold: int, model: str | None = None, resume: bool = False) -> None:
    """Train `model` (default: the first of train.models) on fold `fold` and write its fold directory."""
    model = model or cfg.train.models[0]
    cfg.model(model)  # an unknown entry fails before anything loads
    ctx = init_distributed(resolve_device(cfg.train).type == "cuda")
    try:
        outputs = train_fold(cfg, model, fold, resume, ctx)
        if outputs is not None:  # rank 0
            checkpoints = cfg.checkpoint_dir(model, fold)
            save_fold(cfg.fold_dir(model, fold), outputs, checkpoints / LIVE_DIR)
            shutil.rmtree(checkpoints, ignore_errors=True)
            epochs, beta = outputs.summary["epochs_run"], cfg.thresholds.beta
            print(f"train {model} fold {fold}: best epoch {outputs.summary['best_epoch']}/{epochs}, val F{beta:g} "
                  f"with TTA {outputs.summary[f'val_f{beta:g}_tta']:.4f} -> {cfg.fold_dir(model, fold)}")  # fmt: skip
        barrier(ctx)
    finally:
        shutdown(ctx)
