"""The training engine: optimiser, warmup + cosine schedule, accumulation, clipping, EMA, early stopping, resume.

`fit` trains one model for `train.epochs` epochs. Every epoch is a pure function of the state at its start and of
(train.seed, epoch): the batches, the augmentation and dropout draws are all re-seeded from those, so a run
resumed from the checkpoint written at the end of epoch k repeats epochs k+1.. exactly as an uninterrupted
run would. The checkpoint holds everything else that changes: weights, optimiser, scheduler, AMP scaler, EMA,
the early-stopping record and the history of logged metrics.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from timm.optim import param_groups_weight_decay
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import mlic
from mlic.config import TrainConfig
from mlic.distributed import SINGLE_PROCESS, DistContext, broadcast_flag
from mlic.io import atomic_path
from mlic.registry import Registry
from mlic.training import Runtime, supervised_loss

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer", "train.optimizer")
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("sgd")(lambda params, lr, weight_decay: torch.optim.SGD(params, lr, 0.9, weight_decay=weight_decay))

# A validation callback: model -> (the score early stopping maximises, metrics to log)
Validate = Callable[[nn.Module], tuple[float, dict[str, float]]]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier at optimiser step `step`: linear from 0 to 1 over the warmup, then cosine down to `min_ratio`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch on one process, independent of everything that ran before it."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def seed_epoch(loader: DataLoader, seed: int, epoch: int, rank: int = 0) -> None:
    """Re-seed batches, augmentation, dropout and data-loader workers for `epoch` (what makes resume exact)."""
    s = epoch_seed(seed, epoch, rank)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)  # dropout, and the base seed DataLoader draws for its workers (see seed_worker)
    if hasattr(loader.batch_sampler, "set_epoch"):
        loader.batch_sampler.set_epoch(epoch)
    transform = getattr(loader.dataset, "transform", None)
    if transform is not None:  # used in this process when num_workers == 0
        transform.set_random_seed(s)


@dataclass
class TrainState:
    """What the epoch loop knows besides tensors: progress, logged history and the early-stopping record."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -math.inf
    best_epoch: int = 0
    epochs_since_best: int = 0

    def record(self, metrics: dict[str, float], score: float | None) -> bool:
        """Log one finished epoch; True when its score is the best so far."""
        self.epoch += 1
        self.history.append(metrics)
        if score is None or score <= self.best_score:
            self.epochs_since_best += 1
            return False
        self.best_score, self.best_epoch, self.epochs_since_best = score, self.epoch, 0
        return True


@dataclass
class Engine:
    """A model with everything that trains it. `net` is what the loop calls (DDP-wrapped and/or compiled)."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    ema: ModelEmaV3 | None
    state: TrainState = field(default_factory=TrainState)
    best_weights: dict[str, torch.Tensor] | None = None

    @property
    def eval_model(self) -> nn.Module:
        """The weights used to validate and predict: the EMA when enabled, else the model itself."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict:
        """Everything a resumed run needs (tensors and plain data)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "train_state": asdict(self.state),
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from `state_dict()`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.state = TrainState(**state["train_state"])
        self.best_weights = state["best_weights"]


def make_engine(model: nn.Module, net: nn.Module, cfg: TrainConfig, rt: Runtime, steps_per_epoch: int) -> Engine:
    """Optimiser (no weight decay on biases and norms), warmup + cosine schedule, AMP scaler and EMA.

    Args:
        model: The model, on its device (its weights are what gets saved).
        net: What the training loop calls: `model` itself, or its DDP / compiled wrapper.
        cfg: The `train` section.
        rt: The runtime (its AMP dtype decides whether a gradient scaler is needed: float16 only).
        steps_per_epoch: Batches per epoch on this process.
    """
    groups = param_groups_weight_decay(model, cfg.weight_decay)
    optimizer = OPTIMIZERS.get(cfg.optimizer)(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    updates = math.ceil(steps_per_epoch / cfg.accumulate_steps)
    total, warmup = updates * cfg.epochs, round(updates * cfg.warmup_epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total, cfg.min_lr_ratio)
    )
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
    return Engine(model, net, optimizer, scheduler, scaler, ema)


def optimizer_step(engine: Engine, clip_grad_norm: float) -> None:
    """One update from the accumulated gradients: unscale, clip, step, schedule, EMA."""
    if clip_grad_norm > 0:
        engine.scaler.unscale_(engine.optimizer)
        nn.utils.clip_grad_norm_(engine.model.parameters(), clip_grad_norm)
    engine.scaler.step(engine.optimizer)
    engine.scaler.update()
    engine.optimizer.zero_grad(set_to_none=True)
    engine.scheduler.step()
    if engine.ema is not None:
        engine.ema.update(engine.model)


def run_epoch(
    engine: Engine, loader: DataLoader, loss_fn: nn.Module, cfg: TrainConfig, rt: Runtime, inputs: Sequence[str]
) -> float:
    """Train one epoch with gradient accumulation; returns the mean training loss (this process's batches)."""
    engine.net.train()
    total, count, n = 0.0, 0, len(loader)
    bar = tqdm(loader, desc=f"epoch {engine.state.epoch + 1}/{cfg.epochs}", leave=False, mininterval=2.0)
    for i, batch in enumerate(bar):
        start = i - i % cfg.accumulate_steps
        group = min(cfg.accumulate_steps, n - start)  # the last group of an epoch may be shorter
        update = i + 1 == start + group
        target = batch["target"].to(rt.device, non_blocking=True)
        # DDP all-reduces gradients on every backward unless told not to: skip it until the group's last batch
        sync = contextlib.nullcontext() if update or not hasattr(engine.net, "no_sync") else engine.net.no_sync()
        with sync:
            with rt.autocast():
                loss = supervised_loss(engine.net, rt.inputs(batch), inputs, target, loss_fn)
            engine.scaler.scale(loss / group).backward()
        if update:
            optimizer_step(engine, cfg.clip_grad_norm)
        total, count = total + loss.item() * len(target), count + len(target)
        bar.set_postfix(loss=f"{total / count:.4f}", lr=f"{engine.scheduler.get_last_lr()[0]:.2e}", refresh=False)
    mean = total / max(count, 1)
    if not math.isfinite(mean):
        raise FloatingPointError(f"training loss became {mean} at epoch {engine.state.epoch + 1}; lower train.lr")
    return mean


def fit(
    engine: Engine,
    loader: DataLoader,
    loss_fn: nn.Module,
    cfg: TrainConfig,
    rt: Runtime,
    inputs: Sequence[str] = ("image",),
    validate: Validate | None = None,
    on_epoch: Callable[[Engine, dict[str, float]], None] | None = None,
    ctx: DistContext = SINGLE_PROCESS,
) -> list[dict[str, float]]:
    """Train from `engine.state.epoch` to `cfg.epochs` (or early stop); returns the per-epoch history.

    After each epoch, rank 0 validates `engine.eval_model`, and `on_epoch(engine, record)` runs (log, checkpoint).
    With `early_stopping_patience`, training stops after that many epochs without a better validation score,
    and the best epoch's weights are loaded into `engine.eval_model` at the end.
    """
    patience = cfg.early_stopping_patience
    for epoch in range(engine.state.epoch, cfg.epochs):
        seed_epoch(loader, cfg.seed, epoch, ctx.rank)
        record = {"epoch": epoch + 1, "train_loss": run_epoch(engine, loader, loss_fn, cfg, rt, inputs)}
        record["lr"] = engine.scheduler.get_last_lr()[0]
        score = None
        if validate is not None and ctx.is_main:
            score, metrics = validate(engine.eval_model)
            record.update(metrics)
        if engine.state.record(record, score) and patience:
            engine.best_weights = {k: v.detach().cpu().clone() for k, v in engine.eval_model.state_dict().items()}
        stop = broadcast_flag(bool(patience) and engine.state.epochs_since_best >= patience, ctx)
        if on_epoch is not None:
            on_epoch(engine, record)
        if stop:
            break
    if patience and engine.best_weights is not None:
        engine.eval_model.load_state_dict(engine.best_weights)
    return engine.state.history


def fingerprint(config: dict) -> str:
    """Hash of a run's config and of the mlic source: a checkpoint resumes only a run with the same hash."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    digest.update(torch.__version__.encode())
    for path in sorted(Path(mlic.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def save_checkpoint(engine: Engine, path: Path, run_hash: str) -> None:
    """Write the resume state atomically (a kill mid-write leaves the previous checkpoint intact)."""
    with atomic_path(path) as tmp:
        torch.save({"fingerprint": run_hash, **engine.state_dict()}, tmp)


def load_checkpoint(engine: Engine, path: Path, run_hash: str) -> bool:
    """Restore `engine` from `path` if it holds a run with the same fingerprint; False (fresh start) otherwise."""
    if not path.is_file():
        return False
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != run_hash:
        print(f"resume: {path} is from another config or code version; starting afresh")
        return False
    engine.load_state_dict(state)
    return True
