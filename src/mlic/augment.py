"""Training augmentations (albumentations presets) and test-time augmentation views, each a table keyed by name."""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import torch

from mlic.registry import Registry

AUGMENTATIONS: Registry[Callable[[int], A.BasicTransform | None]] = Registry("augmentation", "train.augment")
TTA_VIEWS: Registry[list[Callable[[torch.Tensor], torch.Tensor]]] = Registry("TTA preset", "train.tta")


@AUGMENTATIONS.register("none")
def no_augmentation(image_size: int) -> None:
    """Images as cached."""
    return None


@AUGMENTATIONS.register("satellite")
def satellite(image_size: int) -> A.BasicTransform:
    """The 8 flips and right-angle rotations (chips have no up or left), plus mild brightness and contrast."""
    return A.Compose([A.D4(p=1.0), A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5)])


@AUGMENTATIONS.register("photo")
def photo(image_size: int) -> A.BasicTransform:
    """Random resized crop back to the cached size, horizontal flip and colour jitter (photographs, e.g. iMet)."""
    return A.Compose(
        [
            A.RandomResizedCrop(size=(image_size, image_size), scale=(0.6, 1.0), p=1.0),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8),
        ]
    )


def create_augmentation(name: str, image_size: int, seed: int = 0) -> A.Compose | None:
    """The augmentation preset named `name` for square images of `image_size`, seeded (None: no augmentation).

    Albumentations keeps its own random state and ignores numpy's and torch's seeds, so the pipeline is
    seeded here; data-loader workers re-seed it from torch's per-worker seed (see `seed_worker`).
    """
    transform = AUGMENTATIONS.get(name)(image_size)
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
