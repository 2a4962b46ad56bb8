"""Image decoding and the resized uint8 image cache that training reads instead of JPEGs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mlic.errors import MlicError
from mlic.io import atomic_path


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (H, W, 3).

    OpenCV converts 4-component (CMYK/YCCK) JPEGs such as the Planet chips to correct RGB.

    Raises:
        MlicError: If the file is missing or cannot be decoded.
    """
    path = Path(path)
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise MlicError("image file is missing", path=path, fix="re-download the competition images") from None
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if image is None:
        raise MlicError("image cannot be decoded (corrupt or not an image)", path=path, fix="re-download this file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_resized(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode an image and resize it to (size, size) with area interpolation (the right filter for shrinking)."""
    image = read_image(path)
    if image.shape[:2] != (size, size):
        shrink = image.shape[0] > size or image.shape[1] > size
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return image


def build_image_cache(
    paths: Sequence[Path], size: int, out_path: str | os.PathLike, workers: int = 2, desc: str = "images"
) -> None:
    """Decode and resize every image into one (N, size, size, 3) uint8 .npy file, readable with mmap.

    The array is filled in place on disk, so memory stays bounded whatever N is, and the file appears only
    once complete. Decoding runs in threads: OpenCV releases the GIL.

    Args:
        paths: Image files, in row order.
        size: Side of the square cached image.
        out_path: The .npy file to write.
        workers: Decoding threads.
        desc: Progress-bar label.
    """
    with atomic_path(out_path) as tmp:
        cache = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            images = pool.map(lambda p: load_resized(p, size), paths)
            for i, image in enumerate(tqdm(images, total=len(paths), desc=desc, unit="img", mininterval=1.0)):
                cache[i] = image
        cache.flush()
        del cache


def open_image_cache(path: str | os.PathLike) -> np.ndarray:
    """Open a cache written by `build_image_cache` as a read-only memory map."""
    return np.load(path, mmap_mode="r")


def channel_stats(cache: np.ndarray, chunk: int = 1024) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a uint8 image cache in [0, 1] units, computed in chunks to bound memory."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for start in range(0, len(cache), chunk):
        block = np.asarray(cache[start : start + chunk], dtype=np.float64) / 255.0
        total += block.sum(axis=(0, 1, 2))
        total_sq += (block**2).sum(axis=(0, 1, 2))
    count = max(1, cache.shape[0] * cache.shape[1] * cache.shape[2])
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]
