"""Stage `train`: fit one model on one fold, then write its checkpoint, out-of-fold and test predictions (TTA).

`mlic train --model M --fold K [--resume]`; under `torchrun --nproc_per_node N` it trains with DDP. While it runs,
the resume state lives in `<train.checkpoint_dir>/<model>/fold_<k>/` (updated every epoch, removed at the end);
the outputs appear in `<train.out_dir>/<model>/fold_<k>/` only once the fold has finished.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch.utils.data import DataLoader

from mlic import predictions as files
from mlic.augment import create_augmentation, tta_views
from mlic.config import Config, save_config
from mlic.distributed import DistContext, barrier, init_distributed, shutdown, wrap_model
from mlic.engine import Engine, Validate, fingerprint, fit, load_checkpoint, make_engine, save_checkpoint
from mlic.errors import ConfigError
from mlic.features import HogFeatures, load_hog
from mlic.io import atomic_path
from mlic.losses import create_loss
from mlic.metrics import mean_average_precision
from mlic.models import create_model, model_inputs
from mlic.prepared import Prepared, load_folds, load_prepared
from mlic.sampling import make_train_loader
from mlic.thresholds import best_global_threshold
from mlic.training import CachedSamples, Runtime, expand_views, make_runtime, predict, resolve_device, seed_worker

CHECKPOINT_FILE = "last.pt"


@dataclass(frozen=True)
class FoldData:
    """One fold's inputs: the prepared arrays, HOG (for models that read it), and train/validation rows."""

    prep: Prepared
    hog: HogFeatures | None
    train_rows: np.ndarray
    val_rows: np.ndarray
    inputs: tuple[str, ...]

    @property
    def n_views(self) -> int:
        """Cached views per image (the resize, plus crops)."""
        return int(self.prep.train_images.shape[1])


def load_fold_data(cfg: Config, model: str, fold: int) -> FoldData:
    """Read the prepared data, the folds and (when the model reads it) HOG."""
    prep = load_prepared(cfg.prepare.out_dir)
    folds = load_folds(cfg.folds.out_file, prep.train_ids)
    inputs = model_inputs(cfg.model(model).arch)
    hog = load_hog(cfg.hog.out_dir) if "hog" in inputs else None
    return FoldData(prep, hog, np.flatnonzero(folds != fold), np.flatnonzero(folds == fold), inputs)


def split_arrays(data: FoldData, split: str) -> dict:
    """The arrays a model reads for one split: the image cache and/or the HOG vectors."""
    arrays = {"image": data.prep.train_images if split == "train" else data.prep.test_images}
    if data.hog is not None:
        arrays["hog"] = data.hog.train if split == "train" else data.hog.test
    return {k: v for k, v in arrays.items() if k in data.inputs}


def loaders(cfg: Config, data: FoldData, ctx: DistContext) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Augmented training loader over every cached view (this process's share); ordered validation and test."""
    t, prep = cfg.train, data.prep
    common = {"num_workers": t.num_workers, "pin_memory": torch.cuda.is_available()}
    transform = create_augmentation(t.augment, cfg.prepare.image_size, t.seed)
    train_arrays, test_arrays = split_arrays(data, "train"), split_arrays(data, "test")
    train_set = CachedSamples(train_arrays, *expand_views(data.train_rows, data.n_views), prep.labels, transform)
    train = make_train_loader(
        train_set, prep.labels[train_set.rows], t, ctx.rank, ctx.world_size, worker_init_fn=seed_worker, **common
    )
    val_set = CachedSamples(train_arrays, *expand_views(data.val_rows, data.n_views), prep.labels)
    test_set = CachedSamples(test_arrays, *expand_views(np.arange(len(prep.test_ids)), data.n_views))
    return train, DataLoader(val_set, t.batch_size, **common), DataLoader(test_set, t.batch_size, **common)


def make_validate(cfg: Config, data: FoldData, val: DataLoader, rt: Runtime) -> Validate:
    """Validation after each epoch (no TTA): F-beta at the best shared threshold (early stopping's score), mAP.

    Rows are not topped up to `thresholds.min_labels` here, so that training does not depend on that knob.
    """
    labels, t = data.prep.labels[data.val_rows], cfg.thresholds

    def validate(model: torch.nn.Module) -> tuple[float, dict[str, float]]:
        probs = predict(model, val, rt, tta_views("none"), data.inputs, data.n_views)
        threshold, score = best_global_threshold(probs, labels, t.beta, min_labels=0, step=0.05)
        average_precision = mean_average_precision(labels, probs)
        return score, {f"val_f{t.beta:g}": score, "val_threshold": threshold, "val_map": average_precision}

    return validate


def run_config(cfg: Config, model: str, fold: int) -> dict:
    """The parts of the config one fold's training depends on (its resume fingerprint covers these)."""
    full = cfg.to_dict()
    train = {k: v for k, v in full["train"].items() if k not in ("models", "folds")}
    sections = {k: full[k] for k in ("data", "prepare", "hog", "folds")}
    return {**sections, "model": full["models"][model], "train": train, "beta": cfg.thresholds.beta, "fold": fold}


def build_engine(cfg: Config, model: str, data: FoldData, rt: Runtime, ctx: DistContext, steps: int) -> Engine:
    """The model (seeded init) on its device, wrapped for DDP and compiled as configured, with its optimiser."""
    t = cfg.train
    if ctx.world_size > t.batch_size:
        raise ConfigError(f"train.batch_size {t.batch_size} is smaller than the {ctx.world_size} DDP processes")
    torch.manual_seed(t.seed)
    net = create_model(cfg.model(model), len(data.prep.classes), data.hog.dim if data.hog else None).to(rt.device)
    if rt.channels_last:
        net = net.to(memory_format=torch.channels_last)
    wrapped = wrap_model(net, ctx, rt.device, t.sync_bn)
    if t.compile and rt.device.type == "cuda":
        wrapped = torch.compile(wrapped)
    return make_engine(net, wrapped, t, rt, steps)


def epoch_callback(live: Live | None, checkpoint: Path, run_hash: str):
    """After each epoch on rank 0: log the record to DVCLive and write the resume checkpoint."""

    def on_epoch(engine: Engine, record: dict[str, float]) -> None:
        if live is None:
            return
        log_record(live, record)
        save_checkpoint(engine, checkpoint, run_hash)
        print(" ".join(f"{k} {v:.4g}" for k, v in record.items()), flush=True)

    return on_epoch


def start_live(live_dir: Path, history: list[dict[str, float]]) -> Live:
    """A fresh DVCLive run; a resumed run first replays its history, so its curves start at epoch 1."""
    shutil.rmtree(live_dir, ignore_errors=True)
    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False)
    for record in history:
        log_record(live, record)
    return live


def log_record(live: Live, record: dict[str, float]) -> None:
    """One epoch's metrics as one DVCLive step."""
    for key, value in record.items():
        if key != "epoch":
            live.log_metric(key, value)
    live.next_step()


def checkpoint_state(cfg: Config, model: str, fold: int, data: FoldData, engine: Engine) -> dict:
    """Everything `mlic predict` and `mlic export-onnx` need from a fold, with no other file of the run.

    That is the weights used for prediction, the classes, the resolved config and the input normalisation.
    """
    hog = {"hog_mean": torch.from_numpy(data.hog.mean), "hog_std": torch.from_numpy(data.hog.std)} if data.hog else {}
    return {
        "state_dict": engine.eval_model.state_dict(),
        "model": model,
        "fold": fold,
        "classes": data.prep.classes,
        "config": cfg.to_dict(),
        "normalisation": {"mean": list(data.prep.mean), "std": list(data.prep.std), **hog},
    }


def write_fold(cfg: Config, model: str, fold: int, data: FoldData, outputs: dict, live_dir: Path) -> float:
    """Write the fold's directory atomically: checkpoint, OOF and test probabilities, config, curves, metrics."""
    engine, oof, test = outputs["engine"], outputs["oof"], outputs["test"]
    with atomic_path(cfg.fold_dir(model, fold), is_dir=True) as out:
        torch.save(checkpoint_state(cfg, model, fold, data, engine), out / files.CHECKPOINT)
        np.savez(out / files.OOF_FILE, rows=data.val_rows, probs=oof)
        np.save(out / files.TEST_FILE, test)
        save_config(cfg, out / files.CONFIG_FILE)
        shutil.copytree(live_dir, out / "live")
        labels, t = data.prep.labels[data.val_rows], cfg.thresholds
        threshold, score = best_global_threshold(oof, labels, t.beta, min_labels=0)
        summary = {
            "model": model,
            "fold": fold,
            "epochs_run": engine.state.epoch,
            "best_epoch": engine.state.best_epoch,
            "final_train_loss": round(engine.state.history[-1]["train_loss"], 6),
            f"val_f{t.beta:g}_tta": round(score, 6),
            "val_threshold": threshold,
            "val_map_tta": round(mean_average_precision(labels, oof), 6),
        }
        (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return score


def main(cfg: Config, fold: int, model: str | None = None, resume: bool = False) -> None:
    """Train `model` (default: the first of train.models) on fold `fold` and write its fold directory."""
    model = model or cfg.train.models[0]
    cfg.model(model)  # an unknown entry fails before anything loads
    device = resolve_device(cfg.train)
    ctx = init_distributed(device.type == "cuda")
    try:
        train_and_write(cfg, model, fold, resume, ctx)
    finally:
        shutdown(ctx)


def train_and_write(cfg: Config, model: str, fold: int, resume: bool, ctx: DistContext) -> None:
    """Train (resuming a compatible checkpoint when asked), predict with TTA on rank 0, and write the outputs."""
    data = load_fold_data(cfg, model, fold)
    train, val, test = loaders(cfg, data, ctx)
    stats = (data.hog.mean, data.hog.std) if data.hog else None
    rt = make_runtime(cfg.train, data.prep.mean, data.prep.std, stats, resolve_device(cfg.train, ctx.local_rank))
    engine = build_engine(cfg, model, data, rt, ctx, len(train))
    ckpt_dir, run_hash = cfg.checkpoint_dir(model, fold), fingerprint(run_config(cfg, model, fold))
    resumed = resume and load_checkpoint(engine, ckpt_dir / CHECKPOINT_FILE, run_hash)
    if ctx.is_main:
        n_params = sum(p.numel() for p in engine.model.parameters()) / 1e6
        print(f"train {model} fold {fold}: {len(data.train_rows)} train / {len(data.val_rows)} val rows x "
              f"{data.n_views} view(s) on {rt.device} x {ctx.world_size} process(es), {cfg.model(model).arch} "
              f"({n_params:.2f}M parameters)" + (f", resumed after epoch {engine.state.epoch}" if resumed else ""),
              flush=True)  # fmt: skip
    live = start_live(ckpt_dir / "live", engine.state.history) if ctx.is_main else None
    loss_fn = create_loss(cfg.train.loss, data.prep.labels[data.train_rows].mean(axis=0), **cfg.train.loss_options)
    on_epoch = epoch_callback(live, ckpt_dir / CHECKPOINT_FILE, run_hash)
    fit(engine, train, loss_fn, cfg.train, rt, data.inputs, make_validate(cfg, data, val, rt), on_epoch, ctx)
    if live is not None:
        live.end()
        views = tta_views(cfg.train.tta)
        oof = predict(engine.eval_model, val, rt, views, data.inputs, data.n_views)
        test_probs = predict(engine.eval_model, test, rt, views, data.inputs, data.n_views)
        outputs = {"engine": engine, "oof": oof, "test": test_probs}
        score = write_fold(cfg, model, fold, data, outputs, ckpt_dir / "live")
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        print(f"train {model} fold {fold}: best epoch {engine.state.best_epoch}/{engine.state.epoch}, "
              f"val F{cfg.thresholds.beta:g} with TTA {score:.4f} -> {cfg.fold_dir(model, fold)}")  # fmt: skip
    barrier(ctx)
