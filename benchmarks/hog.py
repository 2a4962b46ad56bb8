"""HOG speed: skimage.feature.hog image by image against mlic.features.hog's batched extractor, side by side.

On the same images at each working size (the 27 real 256 px Planet chips repeated to --n-images, at 256 px and
resized to 64 px, and the first --n-32px planet-32px chips at 32 px), times in interleaved rounds:
  * skimage: skimage.feature.hog(image, ..., block_norm="L2-Hys", channel_axis=-1) in a loop, one image a call;
  * mlic_1_thread: one hog_batch call on all images;
  * mlic_threads: extract_hog(..., workers=--workers) (its parallel batches, tqdm, float16 result).
Prints JSON: median ms per image of each, the speed-ups over skimage, and the max abs difference of
hog_batch from skimage (float32 rounding) and of extract_hog's float16 result from it.
Usage: .venv/bin/python benchmarks/hog.py [--n-images 540] [--n-32px 2000] [--rounds 3] [--workers 2]
       [--orientations 9 --pixels-per-cell 8 --cells-per-block 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import skimage
from skimage.feature import hog as skimage_hog

from mlic.data.images import read_image
from mlic.features.hog import HogParams, extract_hog, hog_batch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench(images: np.ndarray, p: HogParams, rounds: int, workers: int) -> dict:
    """Interleaved rounds of the three extractors on the same images; median ms per image."""
    ppc, cpb = (p.pixels_per_cell,) * 2, (p.cells_per_block,) * 2

    def by_skimage() -> np.ndarray:
        features = [skimage_hog(im, p.orientations, ppc, cpb, block_norm="L2-Hys", channel_axis=-1) for im in images]
        return np.stack(features)

    methods = {
        "skimage": by_skimage,
        "mlic_1_thread": lambda: hog_batch(images, p),
        "mlic_threads": lambda: extract_hog(images, p, images.shape[1], workers=workers),
    }
    hog_batch(images[:8], p)  # warm the lookup tables and this thread's scratch arrays
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    results = {}
    for _ in range(rounds):
        for name, fn in methods.items():
            elapsed, results[name] = timed(fn)
            seconds[name].append(elapsed)
    ms = {name: statistics.median(s) / len(images) * 1e3 for name, s in seconds.items()}
    return {
        "images": len(images),
        "image_size": images.shape[1],
        "ms_per_image": {name: round(v, 4) for name, v in ms.items()},
        "speedup_1_thread": round(ms["skimage"] / ms["mlic_1_thread"], 1),
        "speedup_threads": round(ms["skimage"] / ms["mlic_threads"], 1),
        "max_abs_diff_hog_batch": float(np.abs(results["mlic_1_thread"] - results["skimage"]).max()),
        "max_abs_diff_extract_hog_float16": float(np.abs(results["mlic_threads"] - results["skimage"]).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=540, help="256 px chips, the 27 real ones repeated")
    parser.add_argument("--n-32px", type=int, default=2000, help="planet-32px chips")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--orientations", type=int, default=9)
    parser.add_argument("--pixels-per-cell", type=int, default=8)
    parser.add_argument("--cells-per-block", type=int, default=2)
    args = parser.parse_args()
    p = HogParams(args.orientations, args.pixels_per_cell, args.cells_per_block)

    chips = np.stack([read_image(path) for path in sorted((SHARED / "planet" / "train-jpg").glob("*.jpg"))])
    chips = np.resize(chips, (args.n_images, *chips.shape[1:]))  # repeats the real chips
    small = np.stack([cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA) for im in chips[:27]])
    small = np.resize(small, (args.n_images, *small.shape[1:]))
    paths_32 = sorted((SHARED / "planet-32px" / "train-jpg").glob("*.jpg"))[: args.n_32px]
    tiny = np.stack([read_image(path) for path in paths_32])

    report = {
        "params": vars(p),
        "cpu_cores": os.cpu_count(),
        "numpy": np.__version__,
        "skimage": skimage.__version__,
        "timing": f"median of {args.rounds} interleaved rounds; all three run on the same in-memory uint8 images",
        "planet_256px": bench(chips, p, args.rounds, args.workers),
        "planet_256px_resized_64px": bench(small, p, args.rounds, args.workers),
        "planet_32px": bench(tiny, p, args.rounds, args.workers),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
