"""Region proposal timings per image: the `PROPOSALS` generators and CAM boxes (`mlic.features.proposals`).

`windows` and `selective_search` run through the registry, as the region models call them, on real Planet chips:
the first --images (--search-images for selective search, the slow one) planet-32px training chips, enlarged
bilinearly to each size as `prepare` would (synthetic blurred noise, said so in the JSON, where
../shared/data is absent). CAM boxes run on synthetic activation maps at a ResNet's last-map resolution. Each
method has one untimed call first; the figures are the mean wall time per image and the mean, min and max box
count. Selective search is OpenCV contrib's fast mode; without the contrib build its row says why it was skipped.

Prints JSON to stdout.

Usage:
    .venv/bin/python benchmarks/proposals.py [--sizes 64 128 256] [--images 50] [--search-images 20]
        [--max-boxes 64]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from mlic.data.images import read_image, resize
from mlic.errors import ConfigError
from mlic.features.proposals import PROPOSALS, cam_boxes

CAM_SIDE_RATIO = 32  # a ResNet's last map: one cell per 32 pixels
CAM_TAU = 0.5
CHIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "planet-32px" / "train-jpg"


def timed(call: Callable[[int], np.ndarray], count: int) -> dict:
    """Mean milliseconds and boxes per call of `call(i)` for i < count, after one untimed warm-up call."""
    call(0)
    boxes, start = [], time.perf_counter()
    for i in range(count):
        boxes.append(len(call(i)))
    seconds = time.perf_counter() - start
    return {
        "ms_per_image": round(1000 * seconds / count, 4),
        "boxes_per_image": round(sum(boxes) / count, 2),
        "boxes_min": min(boxes),
        "boxes_max": max(boxes),
    }


def chips(count: int) -> tuple[list[np.ndarray], str]:
    """The first `count` real 32 px Planet chips (RGB), or blurred noise where the shared data is absent."""
    paths = sorted(CHIPS.glob("*.jpg"))[:count]
    if len(paths) == count:
        return [read_image(path) for path in paths], f"planet-32px train-jpg, first {count} sorted by name"
    rng = np.random.default_rng(0)
    noise = [cv2.GaussianBlur(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), (5, 5), 0) for _ in range(count)]
    return noise, f"synthetic blurred noise ({CHIPS} not found)"


def synthetic_cams(size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """Smoothed random activation maps at a ResNet's last-map resolution, a few blobs each."""
    rng = np.random.default_rng(seed)
    side = max(2, size // CAM_SIDE_RATIO)
    return [cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (3, 3), 0) for _ in range(count)]


def generator_row(method: str, images: list[np.ndarray], max_boxes: int) -> dict:
    """Timing of one registered generator on the images, or why it cannot run here (a missing OpenCV contrib)."""
    generate = PROPOSALS.get(method)
    row = {"method": method, "size": images[0].shape[0], "images": len(images)}
    try:
        return row | timed(lambda i: generate(images[i], max_boxes), len(images))
    except ConfigError as error:
        return row | {"skipped": error.message}


def size_rows(size: int, count: int, search_count: int, max_boxes: int, source: list[np.ndarray]) -> list[dict]:
    """The three methods' rows at one image size."""
    images = [resize(chip, size) for chip in source]  # bilinear when enlarging, as the image cache does
    cams = synthetic_cams(size, count)
    return [
        generator_row("windows", images[:count], max_boxes),
        {"method": "cam", "size": size, "images": count, "cam_side": cams[0].shape[0], "tau": CAM_TAU}
        | timed(lambda i: cam_boxes(cams[i], size, size, CAM_TAU, max_boxes), count),
        generator_row("selective_search", images[:search_count], max_boxes),
    ]


def main(argv: Sequence[str] | None = None) -> dict:
    """Time every method at every size; print and return the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="image sides in pixels")
    p.add_argument("--images", type=int, default=50, help="images per size for windows and CAM boxes")
    p.add_argument("--search-images", type=int, default=20, help="images per size for selective search")
    p.add_argument("--max-boxes", type=int, default=64, help="R, the cap on boxes per image")
    args = p.parse_args(argv)
    source, origin = chips(max(args.images, args.search_images))
    rows = [
        row for size in args.sizes for row in size_rows(size, args.images, args.search_images, args.max_boxes, source)
    ]
    result = {
        "images_from": origin,
        "max_boxes": args.max_boxes,
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "rows": rows,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
