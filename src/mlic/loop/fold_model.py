"""A trained fold reloaded from its checkpoint alone: its network, task, runtime and statistics, ready to predict.

`mlic predict`, ONNX export, set decoding and the CAM proposals predict with it, and training loads a distilled
student's teacher with it (`mlic.train.fold.teacher_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mlic.config import Config, config_from_dict
from mlic.errors import MlicError
from mlic.layout import load_checkpoint
from mlic.loop.batches import CachedSamples, expand_views
from mlic.loop.runtime import Runtime, make_runtime
from mlic.loop.tta import predict_loader, tta_views
from mlic.models.registry import ModelDims, resolve_model
from mlic.sources import Stats
from mlic.tasks.base import Task


@dataclass(frozen=True)
class FoldModel:
    """One trained fold, ready to predict: the network in eval mode, its task, runtime, statistics and config."""

    model: str
    fold: int
    net: nn.Module
    task: Task
    runtime: Runtime
    stats: dict[str, Stats]
    cfg: Config
    classes: list[str]

    @property
    def sources(self) -> tuple[str, ...]:
        """The batch entries the network reads to predict."""
        return self.task.predict_sources

    def predict(self, arrays: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
        """(N, C) scores of (N, views, ...) source arrays, averaged over the cached views and the TTA views."""
        read = {k: v for k, v in arrays.items() if k in self.sources}
        n, n_views = next(iter(read.values())).shape[:2]
        loader = DataLoader(CachedSamples(read, *expand_views(np.arange(n), n_views)), batch_size * n_views)
        views = tta_views(self.cfg.train.tta)
        return predict_loader(self.task, self.net, loader, self.runtime, views, n_views, progress=False)


def load_fold_model(fold_dir: Path, device: torch.device) -> FoldModel:
    """Rebuild a fold's network and task from its checkpoint alone (weights, config, normalisation statistics).

    Raises:
        MlicError: If the checkpoint is missing or was written by an older mlic (before the task contract).
    """
    state = load_checkpoint(fold_dir)
    if "source_dims" not in state:
        raise MlicError(
            "checkpoint has no source statistics (an older mlic wrote it)",
            path=Path(fold_dir),
            fix="retrain it: `dvc repro` reruns the train stages after an mlic upgrade",
        )
    cfg = config_from_dict(state["config"])
    # the trained weights replace any pretrained ones, so none are downloaded or read
    resolved = resolve_model(cfg, state["model"]).without_pretrained()
    net = resolved.build(ModelDims(len(state["classes"]), state["source_dims"]))
    net.load_state_dict(state["state_dict"])
    runtime = make_runtime(cfg.train, state["normalisation"], device)
    net = net.to(device).eval()
    if runtime.channels_last:
        net = net.to(memory_format=torch.channels_last)
    task = resolved.task()
    return FoldModel(state["model"], state["fold"], net, task, runtime, state["normalisation"], cfg, state["classes"])
