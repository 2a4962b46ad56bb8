"""The training engine: optimiser, warmup + cosine schedule, phases, accumulation, clipping, EMA, early stop, resume.

The engine only loops: the task (`mlic.tasks`) computes each step's loss and its parts, its phases say which
parameters train in each span of epochs, at which learning-rate scale and whether the schedule restarts there, and
its `lr_multiplier` puts each parameter in a group at its multiple of the rate (a head beside a backbone). `fit`
trains one model for `train.epochs` epochs. Every epoch is a pure function of the state at its start and of
(train.seed, epoch): the batches, the augmentation and dropout draws are all re-seeded from those, so a run resumed
from the checkpoint written at the end of epoch k repeats epochs k+1.. exactly as an uninterrupted run would. The
checkpoint holds everything else that changes: weights, optimiser, scheduler, AMP scaler, EMA, the early-stopping
record and the history of logged metrics.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader

from mlic.config import TrainConfig
from mlic.errors import MlicError
from mlic.io import atomic_path
from mlic.layout import load_tensors
from mlic.loop.runtime import Runtime
from mlic.progress import track
from mlic.registry import Registry
from mlic.tasks.base import Phase, Task, phase_at
from mlic.train.distributed import SINGLE_PROCESS, DistContext, broadcast_flag
from mlic.train.loss_sums import LossSums

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
    """Re-seed batches and dropout for `epoch` (what makes resume exact).

    The augmentation needs no epoch seed: each training item carries its own (`SeededBatchSampler`), drawn with the
    epoch's batches, so it is the same whatever the data-loader workers.
    """
    s = epoch_seed(seed, epoch, rank)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)  # dropout
    if hasattr(loader.batch_sampler, "set_epoch"):
        loader.batch_sampler.set_epoch(epoch)


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
    phases: list[Phase]
    state: TrainState = field(default_factory=TrainState)
    best_weights: dict[str, torch.Tensor] | None = None
    # Wall-clock seconds of the last epoch (training and validation), for the epoch's log line only: kept out of
    # the record and the state, so DVCLive, the checkpoint and every tracked output stay identical run to run
    epoch_seconds: float = 0.0

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


def param_groups(model: nn.Module, weight_decay: float, lr: float, multiplier: Callable[[str], float]) -> list[dict]:
    """The optimiser's parameter groups: per LR multiplier, no weight decay on biases and norms, then the rest.

    The base rate (multiplier 1) comes first, so `param_groups[0]` is the rate the log reports; with every multiplier
    1 the groups are timm's `param_groups_weight_decay`, in its order. Each group records its `lr_multiplier`.
    """
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            decays = parameter.ndim > 1 and not name.endswith(".bias")
            groups.setdefault((float(multiplier(name)), decays), []).append(parameter)
    order = sorted(groups, key=lambda key: (key[0] != 1.0, key[0], key[1]))
    return [{"params": groups[(m, decays)], "weight_decay": weight_decay if decays else 0.0, "lr": lr * m,
             "lr_multiplier": m} for m, decays in order]  # fmt: skip


def lr_schedule(phases: list[Phase], updates_per_epoch: int, cfg: TrainConfig) -> Callable[[int], float]:
    """The LR multiplier at each optimiser step: warmup + cosine per cycle, times the phase's `lr_scale`.

    A cycle is the first phase and the phases after it up to the next that `restart`s; each cycle warms up over its
    share of `train.warmup_epochs` (in proportion to its epochs) and decays to `min_lr_ratio` by its end. Without
    restarts this is one warmup + cosine over the whole run. A pure function of the step, so resume is exact.
    """
    spans: list[tuple[int, int, float]] = []  # per epoch: first epoch of its cycle, the cycle's epochs, phase scale
    start = 0
    for index, phase in enumerate(phases):
        if index and phase.restart:
            start = len(spans)
        spans += [(start, 0, phase.lr_scale)] * phase.epochs
    cycle_epochs = {first: sum(1 for s in spans if s[0] == first) for first, _, _ in spans}
    spans = [(first, cycle_epochs[first], scale) for first, _, scale in spans]

    def factor(step: int) -> float:
        first, epochs, scale = spans[min(step // updates_per_epoch, len(spans) - 1)]
        total = updates_per_epoch * epochs
        warmup = round(updates_per_epoch * cfg.warmup_epochs * epochs / len(spans))
        return warmup_cosine(step - first * updates_per_epoch, warmup, total, cfg.min_lr_ratio) * scale

    return factor


def make_engine(
    model: nn.Module,
    net: nn.Module,
    cfg: TrainConfig,
    rt: Runtime,
    steps_per_epoch: int,
    phases: list[Phase] | None = None,
    lr_multiplier: Callable[[str], float] | None = None,
) -> Engine:
    """Optimiser (parameter groups per LR multiplier), warmup + cosine schedule per phase cycle, AMP scaler, EMA.

    Args:
        model: The model, on its device (its weights are what gets saved); every parameter trainable.
        net: What the training loop calls: `model` itself, or its DDP / compiled wrapper.
        cfg: The `train` section.
        rt: The runtime (its AMP dtype decides whether a gradient scaler is needed: float16 only).
        steps_per_epoch: Batches per epoch on this process.
        phases: The task's training phases (default: one phase of `train.epochs`, every parameter).
        lr_multiplier: Parameter name -> its multiple of `train.lr` (the task's `lr_multiplier`; default 1 for all).
    """
    phases = phases or [Phase("train", cfg.epochs)]
    groups = param_groups(model, cfg.weight_decay, cfg.lr, lr_multiplier or (lambda name: 1.0))
    optimizer = OPTIMIZERS.get(cfg.optimizer)(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    updates = math.ceil(steps_per_epoch / cfg.accumulate_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(phases, updates, cfg))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
    return Engine(model, net, optimizer, scheduler, scaler, ema, list(phases))


def apply_phase(model: nn.Module, phase: Phase) -> None:
    """Freeze what `phase` does not train, after `model.train()`: no gradients, and eval mode for whole frozen modules.

    Frozen parameters get no gradient, so the optimiser leaves them (and their weight decay) alone; modules with
    every parameter frozen run in eval mode, so their batch-norm statistics and dropout stay as they are.
    """
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(phase.trains(name))
    if phase.trainable is None:
        return
    for module in model.modules():
        parameters = list(module.parameters())
        if parameters and not any(p.requires_grad for p in parameters):
            module.eval()


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


def run_epoch(engine: Engine, loader: DataLoader, task: Task, cfg: TrainConfig, rt: Runtime) -> dict[str, float]:
    """Train one epoch with gradient accumulation, in the phase the epoch belongs to.

    The losses stay on the device (`LossSums`) and are read every `train.log_every` steps and at the end, so no
    step waits for the device; a non-finite loss stops training at the next read, naming its step.

    Returns:
        `train_loss`, the mean training loss over this process's samples, `train_loss_<part>` for each named part
        of the task's loss, and `lr`, the learning rate of the epoch's last update.
    """
    index = phase_at(engine.phases, engine.state.epoch)
    phase = engine.phases[index]
    engine.net.train()
    apply_phase(engine.model, phase)
    task.begin_phase(phase)
    sums = LossSums(rt.device)
    n, lr = len(loader), float("nan")
    label = f" {phase.name}" if len(engine.phases) > 1 else ""
    # A bar on a terminal only: off it the per-epoch line (fit's on_epoch) is the whole log, so no periodic lines
    desc = f"epoch {engine.state.epoch + 1}/{cfg.epochs}{label}"
    bar = track(loader, desc, leave=False, mininterval=2.0, interval=None)
    for i, batch in enumerate(bar):
        start = i - i % cfg.accumulate_steps
        group = min(cfg.accumulate_steps, n - start)  # the last group of an epoch may be shorter
        update = i + 1 == start + group
        x = rt.inputs(batch)
        # DDP all-reduces gradients on every backward unless told not to: skip it until the group's last batch
        sync = contextlib.nullcontext() if update or not hasattr(engine.net, "no_sync") else engine.net.no_sync()
        with sync:
            with rt.autocast():
                step = task.training_step(engine.net, x)
            sums.add(i + 1, step.loss, step.parts, len(x["target"]))
            engine.scaler.scale(step.loss / group).backward()
        if update:
            lr = engine.optimizer.param_groups[0]["lr"]
            optimizer_step(engine, cfg.clip_grad_norm)
        if cfg.log_every and (i + 1) % cfg.log_every == 0 and i + 1 < n:
            means = read_losses(sums, engine.state.epoch + 1, n)
            bar.set_postfix(loss=f"{means['train_loss']:.4f}", lr=f"{engine.scheduler.get_last_lr()[0]:.2e}")
    return {**read_losses(sums, engine.state.epoch + 1, n), "lr": lr}


def read_losses(sums: LossSums, epoch: int, steps: int) -> dict[str, float]:
    """The epoch's mean losses so far, read from the device; a non-finite loss stops training.

    The message names the epoch and the first step whose loss was not finite. Nothing of the failing epoch is saved
    (the steps after the bad one, up to this read, go with it), so the resume checkpoint keeps the last good epoch.
    """
    means, first_bad_step = sums.read()
    if first_bad_step:
        raise MlicError(
            f"training loss is not finite at epoch {epoch}, step {first_bad_step} of {steps}; training stopped and "
            f"the resume checkpoint keeps the last good epoch ({epoch - 1})",
            fix="lower train.lr, set train.clip_grad_norm, or check the inputs for NaN; then rerun with --resume",
        )
    return means


def fit(
    engine: Engine,
    loader: DataLoader,
    task: Task,
    cfg: TrainConfig,
    rt: Runtime,
    validate: Validate | None = None,
    on_epoch: Callable[[Engine, dict[str, float]], None] | None = None,
    ctx: DistContext = SINGLE_PROCESS,
) -> list[dict[str, float]]:
    """Train from `engine.state.epoch` to `cfg.epochs` (or early stop); returns the per-epoch history.

    After each epoch, rank 0 validates `engine.eval_model`, and `on_epoch(engine, record)` runs (log, checkpoint);
    `engine.epoch_seconds` then holds the epoch's wall-clock time, training and validation.
    With `early_stopping_patience`, training stops after that many epochs without a better validation score, counted
    in the last phase only (earlier phases train parts of the model and are not judged), and the best epoch's
    weights are loaded into `engine.eval_model` at the end.
    """
    patience, last_phase = cfg.early_stopping_patience, len(engine.phases) - 1
    for epoch in range(engine.state.epoch, cfg.epochs):
        started = time.perf_counter()
        seed_epoch(loader, cfg.seed, epoch, ctx.rank)
        record = {"epoch": epoch + 1, **run_epoch(engine, loader, task, cfg, rt)}
        score = None
        if validate is not None and ctx.is_main:
            score, metrics = validate(engine.eval_model)
            record.update(metrics)
        engine.epoch_seconds = time.perf_counter() - started  # beside the record, never in it
        if engine.state.record(record, score) and patience:
            engine.best_weights = {k: v.detach().cpu().clone() for k, v in engine.eval_model.state_dict().items()}
        judged = phase_at(engine.phases, epoch) == last_phase
        stop = broadcast_flag(bool(patience) and judged and engine.state.epochs_since_best >= patience, ctx)
        if on_epoch is not None:
            on_epoch(engine, record)
        if stop:
            break
    if patience and engine.best_weights is not None:
        engine.eval_model.load_state_dict(engine.best_weights)
    return engine.state.history


def fingerprint(config: dict, code: dict[str, str]) -> str:
    """Hash of a run's config, of its code (file -> hash) and of torch's version: a checkpoint resumes only its run."""
    digest = hashlib.sha256(json.dumps({"config": config, "code": code}, sort_keys=True).encode())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()


def save_checkpoint(engine: Engine, path: Path, run_hash: str) -> None:
    """Write the resume state atomically (a kill mid-write leaves the previous checkpoint intact)."""
    with atomic_path(path) as tmp:
        torch.save({"fingerprint": run_hash, **engine.state_dict()}, tmp)


def load_checkpoint(engine: Engine, path: Path, run_hash: str) -> bool:
    """Restore `engine` from `path` if it holds a run with the same fingerprint; False (fresh start) otherwise."""
    if not path.is_file():
        return False
    state = load_tensors(path, fix=f"delete {path} to start the fold afresh; never resume from an untrusted file")
    if state.get("fingerprint") != run_hash:
        print(f"resume: {path} is from another config or code version; starting afresh")
        return False
    engine.load_state_dict(state)
    return True
