"""Training one model on one fold: its data, loaders, engine, validation, logging, and what it leaves behind.

`train_fold` is what the `train` stage runs: it resolves the models entry to its architecture and task, loads the
sources the task reads, trains through `mlic.train.engine` (resuming a compatible checkpoint when asked), predicts
the out-of-fold and test rows with test-time augmentation, and returns the fold's outputs for `mlic.layout`.
"""

from __future__ import annotations

import inspect
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch.utils.data import DataLoader

from mlic import deps
from mlic.config import Config, select_sections
from mlic.errors import ConfigError
from mlic.hashing import file_digests
from mlic.layout import (
    LIVE_DIR,
    RESUME_FILE,
    FoldOutputs,
    Prepared,
    check_probabilities,
    load_folds,
    load_prepared,
    save_fold,
)
from mlic.layout import load_checkpoint as load_fold_checkpoint  # train.engine's load_checkpoint is the resume state
from mlic.loop.batches import CachedSamples, expand_views
from mlic.loop.fold_model import load_fold_model
from mlic.loop.runtime import Runtime, loader_options, make_runtime, resolve_device
from mlic.loop.tta import predict_loader, tta_views
from mlic.metrics import mean_average_precision
from mlic.models.registry import ModelDims, ResolvedModel, resolve_model
from mlic.progress import shows_bar
from mlic.sources import SOURCES, SourceData, load_sources, stats_tensors
from mlic.tasks.base import FoldRun, Task, TrainedFold, check_phases, phase_at, rows_digest
from mlic.thresholds import best_global_threshold
from mlic.train.augment import create_augmentation
from mlic.train.distributed import DistContext, barrier, init_distributed, shutdown, wrap_model
from mlic.train.engine import Engine, Validate, fingerprint, fit, load_checkpoint, make_engine, save_checkpoint
from mlic.train.sampling import make_train_loader

# What a fold's training reads, and so what its checkpoint, its config.yaml and its resume fingerprint record
RUN_SECTIONS = ("data", "prepare", "hog", "folds", "models", "train", "thresholds.beta")


@dataclass(frozen=True)
class FoldData:
    """One fold's inputs: the prepared labels and ids, the sources the task reads, and train/validation rows."""

    prep: Prepared
    sources: dict[str, SourceData]
    train_rows: np.ndarray
    val_rows: np.ndarray

    @property
    def n_views(self) -> int:
        """Cached views per image (the resize, plus crops)."""
        return int(self.prep.train_images.shape[1])

    def arrays(self, split: str) -> dict[str, np.ndarray]:
        """Each source's arrays for the training rows ("train") or the test rows ("test")."""
        return {name: data.train if split == "train" else data.test for name, data in self.sources.items()}

    def dims(self) -> ModelDims:
        """The label count and each source's width, for the builder."""
        return ModelDims(len(self.prep.classes), {name: data.dim for name, data in self.sources.items()})


def load_fold_data(cfg: Config, fold: int, sources: tuple[str, ...]) -> FoldData:
    """Read the prepared data, the folds and the task's sources."""
    prep = load_prepared(cfg.prepare.out_dir)
    folds = load_folds(cfg.folds.out_file, prep.train_ids)
    data = load_sources(sources, cfg, prep)
    # a row of fold -1 is in no fold: neither trained on nor validated (a subset run, benchmarks/scale.py)
    return FoldData(prep, data, np.flatnonzero((folds != fold) & (folds >= 0)), np.flatnonzero(folds == fold))


def loaders(cfg: Config, data: FoldData, ctx: DistContext) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Augmented training loader over every cached view (this process's share); ordered validation and test."""
    t, prep = cfg.train, data.prep
    common = loader_options(t, ctx.world_size)
    transform = create_augmentation(t.augment, cfg.prepare.image_size, t.seed, boxes="boxes" in data.sources)
    train_arrays, test_arrays = data.arrays("train"), data.arrays("test")
    train_set = CachedSamples(train_arrays, *expand_views(data.train_rows, data.n_views), prep.labels, transform)
    train = make_train_loader(train_set, prep.labels[train_set.rows], t, ctx.rank, ctx.world_size, **common)
    val_set = CachedSamples(train_arrays, *expand_views(data.val_rows, data.n_views), prep.labels)
    test_set = CachedSamples(test_arrays, *expand_views(np.arange(len(prep.test_ids)), data.n_views))
    return train, DataLoader(val_set, t.batch_size, **common), DataLoader(test_set, t.batch_size, **common)


def make_validate(cfg: Config, data: FoldData, val: DataLoader, rt: Runtime, task: Task) -> Validate:
    """Validation after each epoch (no TTA): F-beta at the best shared threshold (early stopping's score), mAP.

    Rows are not topped up to `thresholds.min_labels` here, so that training does not depend on that knob.
    """
    labels, beta = data.prep.labels[data.val_rows], cfg.thresholds.beta

    def validate(model: torch.nn.Module) -> tuple[float, dict[str, float]]:
        # A bar on a terminal only: off it, the epoch's line is its log (no progress lines mid-epoch)
        probs = predict_loader(task, model, val, rt, tta_views("none"), data.n_views, progress=shows_bar())
        threshold, score = best_global_threshold(probs, labels, beta, min_labels=0, step=0.05)
        average_precision = mean_average_precision(labels, probs)
        return score, {f"val_f{beta:g}": score, "val_threshold": threshold, "val_map": average_precision}

    return validate


def run_config(cfg: Config, model: str, fold: int, sources: tuple[str, ...] = ()) -> dict:
    """The config one fold's training reads, narrowed to its model and fold: checkpoint, config.yaml, fingerprint.

    Beside `RUN_SECTIONS`, the params sections of the sources the task reads (the proposals of a region model).
    """
    extra = tuple(section for name in sources for section in SOURCES.get(name).params)
    return select_sections(cfg.narrowed(model, fold).to_dict(), RUN_SECTIONS + extra)


def teacher_for(
    cfg: Config, resolved: ResolvedModel, model: str, fold: int, device: torch.device
) -> TrainedFold | None:
    """The fold's teacher (stage `teacher`'s output) when the entry names one, for its task's `bind`; else None.

    Its checkpoint is read here; its network is built when the task asks (`TrainedFold.load`), after the task has
    checked what it was trained on. So the task, and the architecture module, import no training or prediction code.
    """
    if resolved.config.teacher_entry() is None:
        return None
    path = cfg.teacher_dir(model, fold)
    return TrainedFold(path, load_fold_checkpoint(path), lambda: load_fold_model(path, device).net)


def run_code(resolved: ResolvedModel) -> dict[str, str]:
    """The source files one fold's training runs (train stage and architecture), with their hashes."""
    root = deps.source_root()
    modules = deps.stage_modules("train", root)
    for arch in resolved.arch_names():  # its own and its nested entries' (a distilled student's)
        if deps.module_file(deps.arch_module(arch), root) is not None:
            modules += deps.arch_modules(arch, root)
    files = {m: deps.module_file(m, root) for m in modules}
    files[resolved.spec.build.__module__] = Path(inspect.getsourcefile(resolved.spec.build))  # a spec from elsewhere
    return file_digests(files)


def build_engine(cfg: Config, resolved: ResolvedModel, task: Task, data: FoldData, rt: Runtime, ctx: DistContext,
                 steps: int) -> Engine:  # fmt: skip
    """The network (seeded init) on its device, wrapped for DDP and compiled as configured, with its optimiser."""
    t = cfg.train
    if ctx.world_size > t.batch_size:
        raise ConfigError(f"train.batch_size {t.batch_size} is smaller than the {ctx.world_size} DDP processes")
    phases = check_phases(task.phases(t.epochs), t.epochs, resolved.spec.name)
    torch.manual_seed(t.seed)
    net = resolved.build(data.dims()).to(rt.device)
    if rt.channels_last:
        net = net.to(memory_format=torch.channels_last)
    wrapped = wrap_model(net, ctx, rt.device, t.sync_bn, find_unused=len(phases) > 1)
    if t.compile and rt.device.type == "cuda":
        wrapped = torch.compile(wrapped)
    return make_engine(net, wrapped, t, rt, steps, phases, task.lr_multiplier)


def start_live(live_dir: Path, history: list[dict[str, float]]) -> Live:
    """A fresh DVCLive run; a resumed run first replays its history, so its curves start at epoch 1."""
    shutil.rmtree(live_dir, ignore_errors=True)
    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False)
    for record in history:
        log_record(live, record)
    return live


def log_record(live: Live, record: dict[str, float]) -> None:
    """One epoch's metrics as one DVCLive step, numbered by the epoch (1, 2, ...: the curves' x, not DVCLive's 0)."""
    live.step = int(record["epoch"])
    for key, value in record.items():
        if key != "epoch":
            live.log_metric(key, value)
    live.next_step()


def epoch_callback(live: Live | None, checkpoint: Path, run_hash: str, epochs: int):
    """After each epoch on rank 0: log the record to DVCLive, write the resume checkpoint, print the epoch's line."""

    def on_epoch(engine: Engine, record: dict[str, float]) -> None:
        if live is None:
            return
        log_record(live, record)
        save_checkpoint(engine, checkpoint, run_hash)
        print_epoch(engine, record, epochs)

    return on_epoch


def print_epoch(engine: Engine, record: dict[str, float], epochs: int) -> None:
    """Print the epoch's one log line (`epoch_line`), naming its phase when the task has several."""
    phase = engine.phases[phase_at(engine.phases, int(record["epoch"]) - 1)].name if len(engine.phases) > 1 else None
    print(epoch_line(record, epochs, engine.epoch_seconds, phase), flush=True)


# Logged to DVCLive but left off the epoch line, which keeps to the loss and the scores
QUIET_KEYS = ("epoch", "val_threshold")


def epoch_line(record: dict[str, float], epochs: int, seconds: float, phase: str | None = None) -> str:
    """One epoch as one log line, e.g. `epoch 3/10 loss 0.2345 lr 1.20e-03 val_f2 0.8123 val_map 0.5012 12.3 s`.

    Args:
        record: The epoch's record: `epoch`, `train_loss`, `train_loss_<part>`, `lr`, then validation metrics.
        epochs: The run's total epochs (`train.epochs`).
        seconds: The epoch's wall-clock time, which is printed here and recorded nowhere.
        phase: The phase's name, for a task with several phases.

    Returns:
        The line: the loss parts in brackets after the loss, then `lr` and every validation metric in the record's
        order (but `val_threshold`), then the seconds.
    """
    head = f"epoch {int(record['epoch'])}/{epochs}" + (f" {phase}" if phase else "")
    parts = {k.removeprefix("train_loss_"): v for k, v in record.items() if k.startswith("train_loss_")}
    loss = f"loss {record.get('train_loss', float('nan')):.4f}"  # absent only after an epoch of no batches
    if parts:
        loss += " (" + " ".join(f"{name} {value:.4f}" for name, value in parts.items()) + ")"
    metrics = [
        f"{key} {value:.2e}" if key == "lr" else f"{key} {value:.4f}"
        for key, value in record.items()
        if key not in QUIET_KEYS and not key.startswith("train_loss")
    ]
    return " ".join([head, loss, *metrics, f"{seconds:.1f} s"])


def fold_summary(model: str, fold: int, engine: Engine, labels: np.ndarray, oof: np.ndarray, beta: float) -> dict:
    """The fold's metrics.json: epochs, best epoch, final loss, validation F-beta and mAP with TTA."""
    threshold, score = best_global_threshold(oof, labels, beta, min_labels=0)
    return {
        "model": model,
        "fold": fold,
        "epochs_run": engine.state.epoch,
        "best_epoch": engine.state.best_epoch,
        "final_train_loss": round(engine.state.history[-1]["train_loss"], 6),
        f"val_f{beta:g}_tta": round(score, 6),
        "val_threshold": threshold,
        "val_map_tta": round(mean_average_precision(labels, oof), 6),
    }


def train_fold(cfg: Config, model: str, fold: int, resume: bool, ctx: DistContext) -> FoldOutputs | None:
    """Train (resuming a compatible checkpoint when asked) and predict with TTA; the outputs on rank 0, else None."""
    resolved = resolve_model(cfg, model)
    task = resolved.task()
    data = load_fold_data(cfg, fold, task.sources)
    train, val, test = loaders(cfg, data, ctx)
    stats = stats_tensors(data.sources)
    rt = make_runtime(cfg.train, stats, resolve_device(cfg.train, ctx.local_rank))
    engine = build_engine(cfg, resolved, task, data, rt, ctx, len(train))
    config = run_config(cfg, model, fold, task.sources)
    ckpt_dir, run_hash = cfg.checkpoint_dir(model, fold), fingerprint(config, run_code(resolved))
    resumed = resume and load_checkpoint(engine, ckpt_dir / RESUME_FILE, run_hash)
    if ctx.is_main:
        n_params = sum(p.numel() for p in engine.model.parameters()) / 1e6
        print(f"train {model} fold {fold}: {len(data.train_rows)} train / {len(data.val_rows)} val rows x "
              f"{data.n_views} view(s) on {rt.device} x {ctx.world_size} process(es), {resolved.spec.name} "
              f"({n_params:.2f}M parameters)" + (f", resumed after epoch {engine.state.epoch}" if resumed else ""),
              flush=True)  # fmt: skip
    live = start_live(ckpt_dir / LIVE_DIR, engine.state.history) if ctx.is_main else None
    teacher = teacher_for(cfg, resolved, model, fold, rt.device)  # a distilled student's, checked by its task
    task.bind(FoldRun(cfg, model, fold, data.train_rows, rt.device, teacher))
    task.setup(data.prep.labels[data.train_rows])
    on_epoch = epoch_callback(live, ckpt_dir / RESUME_FILE, run_hash, cfg.train.epochs)
    fit(engine, train, task, cfg.train, rt, make_validate(cfg, data, val, rt, task), on_epoch, ctx)
    if live is None:
        return None
    live.end()
    views = tta_views(cfg.train.tta)
    oof = predict_loader(task, engine.eval_model, val, rt, views, data.n_views)
    test_probs = predict_loader(task, engine.eval_model, test, rt, views, data.n_views)
    fix, where = "lower train.lr or set train.clip_grad_norm, then retrain", cfg.fold_dir(model, fold)
    check_probabilities(oof, where, f"model {model}, fold {fold}, out-of-fold (not written)", fix)
    check_probabilities(test_probs, where, f"model {model}, fold {fold}, test (not written)", fix)
    checkpoint = {
        "state_dict": engine.eval_model.state_dict(),
        "model": model,
        "fold": fold,
        "classes": data.prep.classes,
        "config": config,
        "normalisation": stats,
        "source_dims": dict(data.dims().source_dims),
        "train_rows_sha256": rows_digest(data.train_rows),  # what a distilled student checks its teacher against
    }
    summary = fold_summary(model, fold, engine, data.prep.labels[data.val_rows], oof, cfg.thresholds.beta)
    return FoldOutputs(checkpoint, data.val_rows, oof, test_probs, summary, config)


def train_fold_into(cfg: Config, model: str, fold: int, resume: bool, out_dir: str | Path) -> dict | None:
    """Train one fold under the process group (`train_fold`) and write its fold folder into `out_dir` on rank 0.

    The per-epoch resume state goes once the folder is written. Returns the fold's summary on rank 0, else None.
    """
    ctx = init_distributed(resolve_device(cfg.train).type == "cuda")
    try:
        outputs = train_fold(cfg, model, fold, resume, ctx)
        if outputs is not None:  # rank 0
            checkpoints = cfg.checkpoint_dir(model, fold)
            save_fold(out_dir, outputs, checkpoints / LIVE_DIR)
            shutil.rmtree(checkpoints, ignore_errors=True)
        barrier(ctx)
        return None if outputs is None else outputs.summary
    finally:
        shutdown(ctx)
