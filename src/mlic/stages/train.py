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
from mlic.features import HogFeatures, load_hog
from mlic.io import atomic_path
from mlic.losses import create_loss
from mlic.metrics import fbeta_samples
from mlic.models import create_model, model_inputs
from mlic.prepared import Prepared, load_folds, load_prepared
from mlic.sampling import make_train_loader
from mlic.thresholds import binarize
from mlic.training import (
    CachedSamples,
    Runtime,
    expand_views,
    make_runtime,
    predict,
    seed_everything,
    seed_worker,
    train_model,
)


def split_arrays(prep: Prepared, hog: HogFeatures | None, inputs: tuple[str, ...], split: str) -> dict:
    """The arrays a model reads for one split: the image cache and/or the HOG vectors."""
    arrays = {"image": prep.train_images if split == "train" else prep.test_images}
    if hog is not None:
        arrays["hog"] = hog.train if split == "train" else hog.test
    return {k: v for k, v in arrays.items() if k in inputs}


def loaders(cfg: Config, prep: Prepared, hog: HogFeatures | None, rows: tuple[np.ndarray, np.ndarray]):
    """Shuffled, augmented training loader over every cached view; ordered validation and test loaders."""
    t, inputs, n_views = cfg.train, model_inputs(cfg.model.name), prep.train_images.shape[1]
    generator = seed_everything(t.seed)
    common = {"num_workers": t.num_workers, "pin_memory": torch.cuda.is_available()}
    transform = create_augmentation(t.augment, cfg.prepare.image_size, t.seed)
    train_arrays, test_arrays = split_arrays(prep, hog, inputs, "train"), split_arrays(prep, hog, inputs, "test")
    train_set = CachedSamples(train_arrays, *expand_views(rows[0], n_views), prep.labels, transform)
    train = make_train_loader(
        train_set, prep.labels[train_set.rows], t, generator, worker_init_fn=seed_worker, **common
    )
    val = DataLoader(CachedSamples(train_arrays, *expand_views(rows[1], n_views), prep.labels), t.batch_size, **common)
    test_rows = expand_views(np.arange(len(prep.test_ids)), n_views)
    return train, val, DataLoader(CachedSamples(test_arrays, *test_rows), t.batch_size, **common)


def epoch_logger(live: Live, model: torch.nn.Module, val: DataLoader, labels: np.ndarray, rt: Runtime, cfg: Config):
    """Callback logging train loss and validation F-beta (threshold 0.5, no flips) after each epoch."""
    inputs, beta = model_inputs(cfg.model.name), cfg.thresholds.beta
    n_views = len(val.dataset) // len(labels)

    def log(epoch: int, train_loss: float) -> None:
        probs = predict(model, val, rt, tta_views("none"), inputs, n_views)
        live.log_metric("train_loss", train_loss)
        live.log_metric(f"val_f{beta:g}_at_0.5", fbeta_samples(labels, binarize(probs, 0.5), beta))
        live.next_step()
        model.train()

    return log


def main(cfg: Config, fold: int) -> None:
    """Train fold `fold` (validation = that fold) and write `<train.out_dir>/fold_<fold>/`."""
    prep = load_prepared(cfg.prepare.out_dir)
    folds = load_folds(cfg.folds.out_file, prep.train_ids)
    rows = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    inputs, n_views = model_inputs(cfg.model.name), prep.train_images.shape[1]
    hog = load_hog(cfg.hog.out_dir) if "hog" in inputs else None
    train, val, test = loaders(cfg, prep, hog, rows)
    rt = make_runtime(cfg.train, prep.mean, prep.std, (hog.mean, hog.std) if hog else None)
    model = create_model(cfg.model, len(prep.classes), hog.dim if hog else None)
    print(f"train fold {fold}: {len(rows[0])} train / {len(rows[1])} val rows x {n_views} view(s) on {rt.device}, "
          f"model {cfg.model.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)")  # fmt: skip
    with atomic_path(cfg.fold_dir(fold), is_dir=True) as out:
        with Live(dir=str(out / "live"), save_dvc_exp=False, dvcyaml=False) as live:
            log = epoch_logger(live, model, val, prep.labels[rows[1]], rt, cfg)
            history = train_model(
                model,
                train,
                create_loss(cfg.train.loss, prep.labels[rows[0]].mean(axis=0), **cfg.train.loss_options),
                cfg.train,
                rt,
                inputs,
                on_epoch=log,
            )
        views = tta_views(cfg.train.tta)
        oof = predict(model, val, rt, views, inputs, n_views)
        test_probs = predict(model, test, rt, views, inputs, n_views)
        torch.save({"state_dict": model.state_dict(), "classes": prep.classes, "config": cfg.to_dict()},
                   out / files.CHECKPOINT)  # fmt: skip
        np.savez(out / files.OOF_FILE, rows=rows[1], probs=oof)
        np.save(out / files.TEST_FILE, test_probs)
        save_config(cfg, out / files.CONFIG_FILE)
        f = fbeta_samples(prep.labels[rows[1]], binarize(oof, 0.5), cfg.thresholds.beta)
        summary = {"fold": fold, "final_train_loss": round(history[-1], 6), "val_fbeta_at_0.5_tta": round(f, 6)}
        Path(out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"train fold {fold}: final loss {history[-1]:.4f}, val F{cfg.thresholds.beta:g}@0.5 with TTA {f:.4f}")
