"""Prediction with test-time augmentation: the registered views, and the loops that average a task's scores.

Every prediction of a trained model goes through `predict_views`, which averages `Task.predict_step` over the views:
validation after each epoch, the OOF and test predictions of `train`, `mlic predict`, and the ONNX graph of
`mlic export-onnx` (which traces it), so the four agree by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mlic.loop.runtime import Runtime
from mlic.progress import track
from mlic.registry import Registry
from mlic.sources import SOURCES
from mlic.tasks.base import Task

View = Callable[[torch.Tensor], torch.Tensor]
TTA_VIEWS: Registry[list[View]] = Registry("TTA preset", "train.tta")


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _vflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2)


def _rotations(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))


TTA_VIEWS.register("none")([_identity])
TTA_VIEWS.register("flips")([_identity, _hflip, _vflip])
TTA_VIEWS.register("dihedral")(
    [lambda x, k=k, f=f: _rotations(x, k, f) for f in (False, True) for k in range(4)]  # type: ignore[misc]
)


def tta_views(name: str) -> list[View]:
    """The test-time views named `name`; predictions are averaged over them."""
    return TTA_VIEWS.get(name)


def task_views(task: Task, views: Sequence[View]) -> list[View]:
    """The views worth running for `task`: all of them when it reads a spatial source, else the identity alone."""
    return list(views) if any(SOURCES.get(s).spatial for s in task.sources) else list(views[:1])


def predict_views(task: Task, net: nn.Module, inputs: dict[str, torch.Tensor], views: Sequence[View]) -> torch.Tensor:
    """(N, C) scores of one batch of normalised sources: `task.predict_step` averaged over the views.

    A view transforms the spatial sources (images), moves the boxes on them, and leaves vectors as they are.
    """
    total = 0.0
    for view in views:
        total = total + task.predict_step(net, view_inputs(view, inputs))
    return total / len(views)


def view_inputs(view: View, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One test-time view of a batch: spatial sources transformed, coordinates on them (boxes) moved alike."""
    sources = {name: SOURCES.get(name) for name in inputs if name != "target"}
    side = next((inputs[name].shape[-1] for name, source in sources.items() if source.spatial), None)
    out = {}
    for name, source in sources.items():
        if source.spatial:
            out[name] = view(inputs[name])
        elif source.follow_view is not None and side is not None:
            out[name] = source.follow_view(view, inputs[name], side)
        else:
            out[name] = inputs[name]
    return out


@torch.no_grad()
def predict_loader(
    task: Task,
    net: nn.Module,
    loader: DataLoader,
    rt: Runtime,
    views: Sequence[View],
    cached_views: int = 1,
    progress: bool = True,
) -> np.ndarray:
    """(N, C) float32 scores of a loader's rows, averaged over test-time views and cached views.

    Two kinds of views are averaged: the flips and rotations in `views`, applied on the device, and the
    `cached_views` consecutive samples of each row (the cached resize and crops; see `expand_views`). The cached
    views are summed into one (rows, C) array as the batches come, in sample order, so memory holds the result
    and no more (not rows x views x C: 1.9 GB for an iMet fold); the bytes are those of stacking every sample's
    scores and taking `mean` over the views.
    """
    net.to(rt.device).eval()
    views = task_views(task, views)
    samples = len(loader.dataset)
    if samples % cached_views:
        raise ValueError(f"{samples} samples are not whole rows of {cached_views} cached views")
    total, seen = None, 0
    for batch in track(loader, "predict", leave=False, mininterval=2.0, disable=not progress):
        x = rt.inputs(batch)
        with rt.autocast():
            scores = predict_views(task, net, x, views).float().cpu().numpy()
        if total is None:
            total = np.zeros((samples // cached_views, scores.shape[1]), dtype=np.float32)
        np.add.at(total, (seen + np.arange(len(scores))) // cached_views, scores)  # in order: view 0 first
        seen += len(scores)
    if total is None or seen != samples:
        raise ValueError(f"the loader gave {seen} of its {samples} samples")
    return np.divide(total, cached_views, out=total)
