"""Region proposal timings per image: `windows` and CAM boxes (`mlic.features.proposals`), and selective search.

Each method runs on --images synthetic images (or activation maps) per size, after one untimed call; the figure is
the mean wall time per image and the mean box count. Selective search is OpenCV contrib's fast mode
(`cv2.ximgproc.segmentation`), timed only where the contrib build is installed; otherwise its row says why not.

Prints JSON to stdout.

Usage:
    .venv/bin/python benchmarks/proposals.py [--sizes 64 128 256] [--images 50] [--max-boxes 64]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from mlic.features.proposals import cam_boxes, windows

CAM_SIDE_RATIO = 32  # a ResNet's last map: one cell per 32 pixels
CAM_TAU = 0.5


def timed(call: Callable[[int], np.ndarray], count: int) -> dict:
    """Mean milliseconds and boxes per call of `call(i)` for i < count, after one untimed warm-up call."""
    call(0)
    boxes, start = 0, time.perf_counter()
    for i in range(count):
        boxes += len(call(i))
    seconds = time.perf_counter() - start
    return {"ms_per_image": round(1000 * seconds / count, 4), "boxes_per_image": round(boxes / count, 2)}


def synthetic_cams(size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """Smoothed random activation maps at a ResNet's last-map resolution, a few blobs each."""
    rng = np.random.default_rng(seed)
    side = max(2, size // CAM_SIDE_RATIO)
    return [cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (3, 3), 0) for _ in range(count)]


def selective_search_row(size: int, count: int, max_boxes: int) -> dict:
    """Timing of OpenCV's fast selective search, or why it cannot run here."""
    segmentation = getattr(getattr(cv2, "ximgproc", None), "segmentation", None)
    if segmentation is None:
        return {"method": "selective_search", "size": size, "skipped": "cv2.ximgproc missing: needs opencv-contrib"}
    rng = np.random.default_rng(0)
    images = [cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (5, 5), 0) for _ in range(count)]

    def run(i: int) -> np.ndarray:
        search = segmentation.createSelectiveSearchSegmentation()
        search.setBaseImage(images[i % count])
        search.switchToSelectiveSearchFast()
        return search.process()[:max_boxes]

    return {"method": "selective_search", "size": size} | timed(run, count)


def size_rows(size: int, count: int, max_boxes: int) -> list[dict]:
    """The three methods' rows at one image size."""
    cams = synthetic_cams(size, count)
    return [
        {"method": "windows", "size": size} | timed(lambda i: windows(size, size, max_boxes), count),
        {"method": "cam", "size": size, "cam_side": cams[0].shape[0], "tau": CAM_TAU}
        | timed(lambda i: cam_boxes(cams[i], size, size, CAM_TAU, max_boxes), count),
        selective_search_row(size, max(1, count // 10), max_boxes),
    ]


def main(argv: Sequence[str] | None = None) -> dict:
    """Time every method at every size; print and return the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="image sides in pixels")
    p.add_argument("--images", type=int, default=50, help="images per method and size")
    p.add_argument("--max-boxes", type=int, default=64, help="R, the cap on boxes per image")
    args = p.parse_args(argv)
    rows = [row for size in args.sizes for row in size_rows(size, args.images, args.max_boxes)]
    result = {"images": args.images, "max_boxes": args.max_boxes, "opencv": cv2.__version__, "rows": rows}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
