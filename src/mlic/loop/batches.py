"""Samples and batches: (row, view) items of the cached sources, with labels, augmented on the fly."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mlic.features.proposal_store import pad_boxes
from mlic.sources import SOURCES


class CachedSamples(Dataset):
    """(row, view) samples of cached source arrays (`mlic.sources`), with their labels.

    Items are dicts with one tensor per source, as that source serves it (the image as uint8 CHW, augmented by
    `transform` for spatial sources; HOG as float32), and "target" as float32 labels when labels are given. Only the
    arrays given are read, so a HOG-only model never touches the image cache. An item asked for as `(index, seed)`
    (`mlic.train.sampling.SeededBatchSampler`) re-seeds the transform first, so its augmentation depends on the seed
    alone, not on which data-loader worker or process draws it.

    Args:
        arrays: Source name -> (N, views, ...) array (memory-mapped caches are read item by item).
        rows: Row of each sample.
        views: Cached view of each sample.
        labels: (N, C) label matrix, or None (test rows).
        transform: Training augmentation for the spatial sources, or None.
    """

    takes_seeds = True

    def __init__(self, arrays: dict[str, np.ndarray], rows: np.ndarray, views: np.ndarray, labels=None, transform=None):
        self.arrays, self.rows, self.views, self.labels, self.transform = arrays, rows, views, labels, transform
        self.sources = {name: SOURCES.get(name) for name in arrays}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        i, seed = key if isinstance(key, tuple) else (key, None)
        if seed is not None and self.transform is not None:
            self.transform.set_random_seed(seed)
        row, view = int(self.rows[i]), int(self.views[i])
        item = self._augment_with_boxes(row, view)
        for name, source in self.sources.items():
            if name not in item:
                item[name] = source.sample(self.arrays[name][row, view], self.transform if source.spatial else None)
        if self.labels is not None:
            item["target"] = torch.from_numpy(self.labels[row].astype(np.float32))
        return item

    def _augment_with_boxes(self, row: int, view: int) -> dict[str, torch.Tensor]:
        """The image and its boxes augmented together (one draw), so a flipped image gets flipped boxes.

        Empty unless the sample has both and is augmented; the transform then carries albumentations' bbox
        processing (`create_augmentation(..., boxes=True)`). Boxes a crop cuts away are replaced by windows.
        """
        if self.transform is None or "boxes" not in self.arrays or "image" not in self.arrays:
            return {}
        boxes = np.asarray(self.arrays["boxes"][row, view], dtype=np.float32)
        out = self.transform(image=np.asarray(self.arrays["image"][row, view]), bboxes=boxes[:, :4],
                             box_scores=boxes[:, 4])  # fmt: skip
        moved = np.column_stack([np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4), out["box_scores"]])
        height, width = out["image"].shape[:2]
        return {
            "image": SOURCES.get("image").sample(out["image"], None),
            "boxes": torch.from_numpy(pad_boxes(moved.astype(np.float32), len(boxes), height, width)),
        }


def expand_views(rows: np.ndarray, n_views: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, view) pair, row-major: the crop expansion turns N images into N * n_views samples."""
    return np.repeat(rows, n_views), np.tile(np.arange(n_views), len(rows))


def one_opencv_thread() -> None:
    """Stop OpenCV's thread pool in this process before it forks loader workers: one OpenCV thread from here on.

    A forked worker inherits the pool's state but not its threads; reconfiguring the pool there (as
    `cv2.setNumThreads` in a `worker_init_fn` did) waits forever on a condition variable of threads that do not
    exist. Set in the parent, the workers inherit one thread and no pool, so N workers use N cores, not N times all
    of them. The parent trains with torch's threads, not OpenCV's, so it loses nothing.
    """
    cv2.setNumThreads(1)
