"""Batch sources: the named per-sample arrays a task can read, and how each is loaded, served and normalised.

A task lists the sources its network reads (`Task.sources`); training, validation, `mlic predict` and ONNX export
load and feed exactly those, through this registry, so no other module has a branch per source:
- `image`: the uint8 image cache of `prepare` (N, views, S, S, 3), served as CHW uint8 (augmented when training),
  normalised on the device by the training set's channel mean and std;
- `hog`: the HOG vectors of the `hog` stage (N, views, D), standardised by their training-set mean and std;
- `boxes`: the region proposals of the `proposals` stage (N, views, R, 5), (x, y, w, h, score) in pixels of the
  cached image, served as they are; they follow the image through training augmentation (`mlic.loop.batches`) and
  test-time views (`view_boxes`), so a flipped image gets its flipped boxes.

A source is registered with `SOURCES.register(name)(Source(...))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mlic.config import Config
from mlic.features.hog import hog_of_views
from mlic.layout import Prepared, load_hog
from mlic.registry import Registry

Stats = dict[str, torch.Tensor]  # a source's normalisation statistics, as saved in checkpoints


@dataclass(frozen=True)
class SourceData:
    """One source's arrays for the training and the test rows, (N, views, ...), with its normalisation statistics."""

    train: np.ndarray
    test: np.ndarray
    stats: dict[str, np.ndarray]

    @property
    def dim(self) -> int:
        """The length of one item's last axis (a vector source's width)."""
        return int(self.train.shape[-1])


@dataclass(frozen=True)
class Source:
    """How one batch entry is loaded, served per sample, normalised on the device and fed to an ONNX graph.

    Args:
        name: The batch key.
        load: Reads a project's stage outputs (paths from the config, under a root folder), given the `prepare`
            outputs the caller has already opened.
        sample: One cached item (a row's view) -> the tensor a batch stacks; gets the training augmentation or None.
        normaliser: Builds the module mapping a stacked batch (on the device) to the network's input, from stats.
        from_views: Computes this source for new images from their (N, views, S, S, 3) uint8 views (`mlic predict`).
        example: An example ONNX input (batch, config, stats) -> tensor, in the layout `to_batch` takes.
        to_batch: Maps an ONNX graph input to the layout `sample` serves (e.g. NHWC images to NCHW).
        spatial: Whether test-time views (flips, rotations) and channels_last apply to it.
        follow_view: For a source of coordinates on the image (boxes): (view, batch, image side) -> the batch moved
            as the view moves the image; None for the others.
        params: The params sections it is made from, recorded in the run config of a model reading it.
        stage: The DVC stage writing it, which the pipeline keeps only when a listed model reads it (None: always
            there, as `prepare`).
        output: That stage's output folder, from the config: the `code` stage records its digest for each model
            reading it, which is how a train stage depends on exactly the features its model reads.
    """

    name: str
    load: Callable[[Config, Path, Prepared], SourceData]
    sample: Callable[[np.ndarray, Any], torch.Tensor]
    normaliser: Callable[[Stats], nn.Module]
    from_views: Callable[[np.ndarray, Config], np.ndarray]
    example: Callable[[int, Config, Stats], torch.Tensor]
    to_batch: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
    spatial: bool = False
    follow_view: Callable[[Callable, torch.Tensor, int], torch.Tensor] | None = None
    params: tuple[str, ...] = ()
    stage: str | None = None
    output: Callable[[Config], str] | None = None


SOURCES: Registry[Source] = Registry("batch source", "a task's sources")


class Standardise(nn.Module):
    """(x - mean) / std in float32, with the statistics as buffers (so an ONNX graph carries them)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, scale: float = 1.0, shape: tuple[int, ...] = (1, -1)):
        super().__init__()
        self.scale = scale
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised float32 `x`, divided by `scale` first (255 turns uint8 pixels into [0, 1])."""
        x = x.float()
        if self.scale != 1.0:
            x = x / self.scale
        return (x - self.mean) / self.std


def _load_image(cfg: Config, root: Path, prep: Prepared) -> SourceData:
    stats = {"mean": np.asarray(prep.mean, dtype=np.float32), "std": np.asarray(prep.std, dtype=np.float32)}
    return SourceData(prep.train_images, prep.test_images, stats)


def _sample_image(item: np.ndarray, transform) -> torch.Tensor:
    image = np.asarray(item)
    if transform is not None:
        image = transform(image=image)["image"]
    # uint8 CHW: normalisation happens on the device, batch-wise, which is faster and moves a quarter of the bytes
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _example_image(batch: int, cfg: Config, stats: Stats) -> torch.Tensor:
    size = cfg.prepare.image_size
    return torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


SOURCES.register("image")(
    Source(
        name="image",
        load=_load_image,
        sample=_sample_image,
        normaliser=lambda stats: Standardise(stats["mean"], stats["std"], 255.0, (1, 3, 1, 1)),
        from_views=lambda views, cfg: views,
        example=_example_image,
        to_batch=lambda x: x.permute(0, 3, 1, 2),  # the graph takes what an image loader gives: NHWC
        spatial=True,
    )
)


def _load_hog(cfg: Config, root: Path, prep: Prepared) -> SourceData:
    hog = load_hog(root / cfg.hog.out_dir)
    return SourceData(hog.train, hog.test, {"mean": hog.mean, "std": hog.std})


SOURCES.register("hog")(
    Source(
        name="hog",
        load=_load_hog,
        sample=lambda item, transform: torch.from_numpy(np.asarray(item, dtype=np.float32)),
        normaliser=lambda stats: Standardise(stats["mean"], stats["std"]),
        from_views=lambda views, cfg: hog_of_views(views, cfg.hog, desc="hog"),
        example=lambda batch, cfg, stats: torch.randn(
            batch, stats["mean"].numel(), generator=torch.Generator().manual_seed(0)
        ),
        stage="hog",
        output=lambda cfg: cfg.hog.out_dir,
    )
)


def _load_boxes(cfg: Config, root: Path, prep: Prepared) -> SourceData:
    from mlic.features.proposal_store import load_proposals  # numpy and skimage only; keeps this module light

    boxes = load_proposals(root / cfg.proposals.out_dir, prep, cfg.proposals.max_boxes)
    return SourceData(boxes.train, boxes.test, {})


def _boxes_of_views(views: np.ndarray, cfg: Config) -> np.ndarray:
    from mlic.features.proposal_store import proposals_of_views

    return proposals_of_views(views, cfg.proposals)


def _example_boxes(batch: int, cfg: Config, stats: Stats) -> torch.Tensor:
    from mlic.features.proposal_store import pad_boxes
    from mlic.features.proposals import windows

    size, count = cfg.prepare.image_size, cfg.proposals.max_boxes
    boxes = torch.from_numpy(pad_boxes(windows(size, size, count), count, size, size))
    return boxes.unsqueeze(0).repeat(batch, 1, 1)


def view_boxes(view: Callable[[torch.Tensor], torch.Tensor], boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(..., 5) boxes on an S x S image, moved as `view` (a flip or right-angle rotation) moves the image.

    The view is read off by applying it to maps of the pixels' own x and y: it sends new pixel p to old pixel
    A p + t with A a signed permutation, so old pixel q goes to A^T (q - t). Box corners are continuous
    coordinates, pixel i spanning [i, i + 1), hence the half-pixel shifts.
    """
    grid = torch.arange(size, dtype=torch.float32, device=boxes.device)
    old_x, old_y = view(grid.view(1, size).expand(size, size)), view(grid.view(size, 1).expand(size, size))
    t = torch.stack([old_x[0, 0], old_y[0, 0]])
    a = torch.stack([torch.stack([old_x[0, 1], old_y[0, 1]]) - t, torch.stack([old_x[1, 0], old_y[1, 0]]) - t], 1)
    corners = torch.stack([boxes[..., :2], boxes[..., :2] + boxes[..., 2:4]], dim=-2)  # (..., 2, 2)
    moved = (corners - 0.5 - t) @ a + 0.5  # row vectors: (q - t)^T A = (A^T (q - t))^T
    low, high = moved.min(dim=-2).values, moved.max(dim=-2).values
    return torch.cat([low, high - low, boxes[..., 4:]], dim=-1)


SOURCES.register("boxes")(
    Source(
        name="boxes",
        load=_load_boxes,
        sample=lambda item, transform: torch.from_numpy(np.array(item, dtype=np.float32)),  # a copy: memmaps are r/o
        normaliser=lambda stats: nn.Identity(),
        from_views=_boxes_of_views,
        example=_example_boxes,
        follow_view=view_boxes,
        params=("proposals",),
        stage="proposals",
        output=lambda cfg: cfg.proposals.out_dir,
    )
)


def load_sources(names: tuple[str, ...], cfg: Config, prep: Prepared, root: Path = Path(".")) -> dict[str, SourceData]:
    """The named sources of a project's outputs (`prep`: its `prepare` outputs, already open)."""
    return {name: SOURCES.get(name).load(cfg, root, prep) for name in names}


def stats_tensors(data: dict[str, SourceData]) -> dict[str, Stats]:
    """Each source's statistics as float32 tensors: what checkpoints carry and normalisers are built from."""
    return {name: {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in d.stats.items()}
            for name, d in data.items()}  # fmt: skip


def normalisers(stats: dict[str, Stats]) -> nn.ModuleDict:
    """The normalising module of each source, from its statistics."""
    return nn.ModuleDict({name: SOURCES.get(name).normaliser(s) for name, s in stats.items()})
