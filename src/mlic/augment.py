"""Training augmentations (albumentations presets) and test-time augmentation views, each a table keyed by name."""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import torch

from mlic.registry import Registry

AUGMENTATIONS: Registry[Callable[[], A.BasicTransform | None]] = Registry("augmentation", "train.augment")
TTA_VIEWS: Registry[list[Callable[[torch.Tensor], torch.Tensor]]] = Registry("TTA preset", "train.tta")


@AUGMENTATIONS.register("none")
def no_augmentation() -> None:
    """Images as cached."""
    return None


@AUGMENTATIONS.register("dihedral")
def dihedral() -> A.BasicTransform:
    """The 8 flips and right-angle rotations: satellite chips have no up or left."""
    return A.D4(p=1.0)


def create_augmentation(name: str, seed: int = 0) -> A.Compose | None:
    """The augmentation preset named `name`, seeded (None means no augmentation).

    Albumentations keeps its own random state and ignores numpy's and torch's seeds, so the pipeline is
    seeded here; data-loader workers re-seed it from torch's per-worker seed (see `seed_worker`).
    """
    transform = AUGMENTATIONS.get(name)()
    return None if transform is None else A.Compose([transform], seed=seed)


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


def tta_views(name: str) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The test-time views named `name`; predictions are averaged over them."""
    return TTA_VIEWS.get(name)
