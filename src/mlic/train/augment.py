"""Training augmentations: albumentations presets, a table keyed by the name in `train.augment`."""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A

from mlic.registry import Registry

AUGMENTATIONS: Registry[Callable[[int], A.BasicTransform | None]] = Registry("augmentation", "train.augment")


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


def create_augmentation(name: str, image_size: int, seed: int = 0, boxes: bool = False) -> A.Compose | None:
    """The augmentation preset named `name` for square images of `image_size`, seeded (None: no augmentation).

    With `boxes`, the transform takes `bboxes` (COCO x, y, w, h) and `box_scores` beside the image and moves them
    with it. Albumentations keeps its own random state and ignores numpy's and torch's seeds, so the pipeline is
    seeded here; in training each item re-seeds it with its own seed (`mlic.loop.batches.CachedSamples`).
    """
    transform = AUGMENTATIONS.get(name)(image_size)
    if transform is None:
        return None
    if not boxes:
        return A.Compose([transform], seed=seed)
    # boxes (x, y, w, h) ride along: clipped to the image, none dropped for being small (a window is never tiny)
    params = A.BboxParams(format="coco", label_fields=["box_scores"], clip=True, min_area=0.0, min_visibility=0.0)
    return A.Compose([transform], seed=seed, bbox_params=params)
