"""The task contract: what an architecture trains on, how it trains, and how it predicts.

A task owns these, and the engine, validation, `mlic predict` and `mlic export-onnx` call only them:
- `sources`: the batch entries it reads, names from the registry of sources (`mlic.sources`: the image cache,
  HOG, boxes, ...); training loads only those, and `target` (the label matrix row) comes with every training batch;
  `predict_sources` are those prediction needs (a distilled student reads boxes to train, the image alone to predict);
- `bind(run)`: the fold it trains on, before training (a distilled student gets its teacher for that fold here:
  the training side loads it, `FoldRun.teacher`, and the task checks it and builds it);
- `phases(epochs)`: the training schedule, each phase a number of epochs, the parameters that train, an LR scale and
  whether it restarts the warmup + cosine schedule (the engine calls `begin_phase(phase)` before each epoch, for a
  task whose loss changes with the phase);
- `lr_multiplier(parameter_name)`: each parameter's multiple of the scheduled rate (a head trained from scratch beside
  a backbone runs at the arch config's `head_lr_multiplier`), which the engine turns into parameter groups;
- `training_step(net, batch)`: the loss, with its named parts for logging;
- `predict_step(net, batch)`: (N, C) scores in [0, 1].

A new architecture brings its task (or uses `MultiLabelTask`, `mlic.tasks.multilabel`), so the engine needs no
branch for it: the task, not the loop, knows about auxiliary heads, teachers or frozen parts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlic.errors import ConfigError


@dataclass(frozen=True)
class Phase:
    """A span of epochs with its own trainable parameters and learning-rate scale.

    Args:
        name: Shown in the progress bar and the log.
        epochs: Epochs in this phase.
        trainable: Prefixes of the parameter names that train (`("head.",)`); None trains every parameter. Modules
            whose parameters are all frozen also stay in eval mode, so their batch-norm statistics do not move.
        lr_scale: Multiplies the scheduled learning rate during the phase.
        restart: The phase runs its own warmup + cosine schedule over its own epochs (SRN's stages, each trained to
            convergence); False continues the schedule of the phases before it.
    """

    name: str
    epochs: int
    trainable: tuple[str, ...] | None = None
    lr_scale: float = 1.0
    restart: bool = False

    def trains(self, parameter_name: str) -> bool:
        """Whether the parameter called `parameter_name` trains in this phase."""
        return self.trainable is None or parameter_name.startswith(self.trainable)


def rows_digest(rows: np.ndarray) -> str:
    """SHA-256 of a set of row numbers: what a checkpoint records of the rows it was trained on."""
    return hashlib.sha256(np.sort(np.asarray(rows, dtype=np.int64)).tobytes()).hexdigest()


@dataclass(frozen=True)
class TrainedFold:
    """A model another stage trained for this run's fold (a distilled student's teacher), as training hands it over.

    The training side reads it (`mlic.train.fold.teacher_for`), so that a task imports no training or prediction
    code; the task checks the checkpoint before it builds the network.

    Args:
        path: Its fold folder (for messages).
        checkpoint: Its checkpoint: weights and what they were trained on (`fold`, `train_rows_sha256`, ...).
        load: Builds its network from that folder, on the run's device, in eval mode.
    """

    path: Path
    checkpoint: dict
    load: Callable[[], nn.Module]


@dataclass(frozen=True)
class FoldRun:
    """The training run a task is bound to: the config, the models entry, the fold, its training rows, the device.

    `teacher` is the fold's teacher when the entry names one (`ArchConfig.teacher_entry`), else None.
    """

    cfg: object  # mlic.config.Config (not imported here: tasks stay free of the pipeline's config module)
    model: str
    fold: int
    train_rows: np.ndarray
    device: torch.device
    teacher: TrainedFold | None = None


@dataclass
class StepOutput:
    """One training step's loss (what is minimised) and its named parts (summing to it; logged per epoch)."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class Task:
    """Base class of the tasks: subclasses define the steps; the defaults give one phase over every parameter.

    Args:
        cfg: The architecture's config (its typed `models` entry).
    """

    sources: tuple[str, ...] = ("image",)
    backbone_prefixes: tuple[str, ...] = ("backbone.",)  # parameters at the base rate; the rest is the head
    phase: Phase | None = None  # the phase of the epoch being trained (`begin_phase`); None outside training

    def __init__(self, cfg):
        self.cfg = cfg

    @property
    def predict_sources(self) -> tuple[str, ...]:
        """The batch entries `predict_step` reads (what `mlic predict` computes and an ONNX graph takes)."""
        return self.sources

    def bind(self, run: FoldRun) -> None:
        """Called once before training with the run it belongs to; the default needs nothing from it."""

    def setup(self, train_labels: np.ndarray) -> None:
        """Called once before training with the (N, C) labels of the training rows (e.g. to weight the loss)."""

    def phases(self, epochs: int) -> list[Phase]:
        """The training schedule over `train.epochs` epochs."""
        return [Phase("train", epochs)]

    def lr_multiplier(self, parameter_name: str) -> float:
        """This parameter's multiple of the scheduled learning rate: 1 in the backbone, `head_lr_multiplier` elsewhere.

        The official CSRA code trains its classifier at 10 times the backbone's rate: new layers learn from scratch
        beside a backbone that is (in the papers) pretrained. Arch configs without the key train everything at 1.
        """
        if parameter_name.startswith(self.backbone_prefixes):
            return 1.0
        return float(getattr(self.cfg, "head_lr_multiplier", 1.0))  # BackboneConfig's key; absent elsewhere

    def begin_phase(self, phase: Phase) -> None:
        """Called by the engine before every training epoch with the phase it belongs to (resumed runs included).

        A task whose loss differs per phase (e.g. SRN trains each branch on its own output) keeps `phase` and
        reads it in `training_step`; the default only records it.
        """
        self.phase = phase

    def training_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """The loss of one batch of normalised sources and `target`, on the device."""
        raise NotImplementedError

    def predict_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, C) scores in [0, 1] of one batch of normalised sources (one test-time view)."""
        raise NotImplementedError

    def inputs(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The batch entries the network takes, in `sources` order."""
        return [batch[name] for name in self.sources]


def check_phases(phases: Sequence[Phase], epochs: int, arch: str) -> list[Phase]:
    """The phases, checked: at least one, each at least one epoch, together exactly `train.epochs`.

    Raises:
        ConfigError: Naming the arch and the phase lengths.
    """
    lengths = [p.epochs for p in phases]
    if not phases or min(lengths) < 1 or sum(lengths) != epochs:
        raise ConfigError(
            f"arch {arch!r}: training phases of {lengths} epochs do not add up to train.epochs = {epochs}",
            path="params.yaml",
            fix="change train.epochs or the phase lengths in the models entry (each phase needs >= 1 epoch)",
        )
    return list(phases)


def phase_at(phases: Sequence[Phase], epoch: int) -> int:
    """Index of the phase that epoch `epoch` (0-based) belongs to; the last phase for epochs past the schedule."""
    end = 0
    for index, phase in enumerate(phases):
        end += phase.epochs
        if epoch < end:
            return index
    return len(phases) - 1
