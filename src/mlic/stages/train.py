"""Stage `train`: fit one model on one fold, then write its checkpoint, out-of-fold and test predictions (TTA)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch.utils.data import DataLoader

from mlic import predictions as files
from mlic.augment import create_augmentation, tta_views
from mlic.config import Config, save_config
from mlic.io import atomic_path
from mlic.losses import create_loss
from mlic.metrics import fbeta_samples
from mlic.models import create_model
from mlic.prepared import Prepared, load_folds, load_prepared
from mlic.thresholds import binarize
from mlic.training import CachedImages, Runtime, make_runtime, predict, seed_everything, seed_worker, train_model


def loaders(cfg: Config, prep: Prepared, train_rows: np.ndarray, val_rows: np.ndarray) -> tuple[DataLoader, ...]:
    """Shuffled, augmented training loader and ordered validation and test loaders."""
    t = cfg.train
    generator = seed_everything(t.seed)
    common = {"batch_size": t.batch_size, "num_workers": t.num_workers, "pin_memory": torch.cuda.is_available()}
    train_set = CachedImages(prep.train_images, train_rows, prep.labels, create_augmentation(t.augment, t.seed))
    drop_last = len(train_rows) > t.batch_size
    train = DataLoader(
        train_set, shuffle=True, drop_last=drop_last, generator=generator, worker_init_fn=seed_worker, **common
    )
    val = DataLoader(CachedImages(prep.train_images, val_rows, prep.labels), **common)
    test = DataLoader(CachedImages(prep.test_images, np.arange(len(prep.test_ids))), **common)
    return train, val, test


def epoch_logger(live: Live, model: torch.nn.Module, val: DataLoader, labels: np.ndarray, rt: Runtime, beta: float):
    """Callback logging train loss and validation F-beta (threshold 0.5, no TTA) after each epoch."""

    def log(epoch: int, train_loss: float) -> None:
        probs = predict(model, val, rt, tta_views("none"))
        live.log_metric("train_loss", train_loss)
        live.log_metric(f"val_f{beta:g}_at_0.5", fbeta_samples(labels, binarize(probs, 0.5), beta))
        live.next_step()
        model.train()

    return log


def main(cfg: Config, fold: int) -> None:
    """Train fold `fold` (validation = that fold) and write `<train.out_dir>/fold_<fold>/`."""
    prep = load_prepared(cfg.prepare.out_dir)
    folds = load_folds(cfg.folds.out_file, prep.train_ids)
    train_rows, val_rows = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    train, val, test = loaders(cfg, prep, train_rows, val_rows)
    rt = make_runtime(cfg.train, prep.mean, prep.std)
    model = create_model(cfg.model, len(prep.classes))
    print(
        f"train fold {fold}: {len(train_rows)} train / {len(val_rows)} val rows on {rt.device}, model {cfg.model.name}"
    )
    with atomic_path(cfg.fold_dir(fold), is_dir=True) as out:
        with Live(dir=str(out / "live"), save_dvc_exp=False, dvcyaml=False) as live:
            log = epoch_logger(live, model, val, prep.labels[val_rows], rt, cfg.thresholds.beta)
            history = train_model(model, train, create_loss(cfg.train.loss), cfg.train, rt, on_epoch=log)
        views = tta_views(cfg.train.tta)
        oof, test_probs = predict(model, val, rt, views), predict(model, test, rt, views)
        torch.save(
            {"state_dict": model.state_dict(), "classes": prep.classes, "config": cfg.to_dict()}, out / files.CHECKPOINT
        )
        np.savez(out / files.OOF_FILE, rows=val_rows, probs=oof)
        np.save(out / files.TEST_FILE, test_probs)
        save_config(cfg, out / files.CONFIG_FILE)
        f = fbeta_samples(prep.labels[val_rows], binarize(oof, 0.5), cfg.thresholds.beta)
        summary = {"fold": fold, "final_train_loss": round(history[-1], 6), "val_fbeta_at_0.5_tta": round(f, 6)}
        Path(out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"train fold {fold}: final loss {history[-1]:.4f}, val F{cfg.thresholds.beta:g}@0.5 with TTA {f:.4f}")
