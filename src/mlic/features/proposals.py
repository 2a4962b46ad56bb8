"""Region proposals for the region models (issue 16): boxes an image-level label never names, as (x, y, w, h, score).

Every generator returns a float32 (R, 5) array per image, boxes in pixels of the image it was given, clipped to it,
at most `max_boxes` of them, best score first:
- `windows`: a dense grid of sliding windows at fractions of the image's shorter side and several aspect ratios
  (w / h), each moved by half its own size; Planet chips show land cover rather than objects, which a grid covers.
- CAM boxes (`cam_boxes`): a class activation map thresholded at tau * its max, one box per connected component,
  scored by the map's peak inside it.
Boxes go to `torchvision.ops.roi_align` as (x1, y1, x2, y2) through `to_corners`. `enlarge` grows boxes about their
centre (the two-branch network's context patches) and clips them to the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from skimage.measure import label, regionprops

from mlic.registry import Registry

BOX_FIELDS = ("x", "y", "w", "h", "score")
WINDOW_SCALES = (1.0, 0.8, 0.6, 0.4, 0.25)  # fractions of the shorter side, largest first (kept first under a cap)
WINDOW_ASPECTS = (1.0, 0.5, 2.0)  # w / h

Generator = Callable[[int, int, int], np.ndarray]
PROPOSALS: Registry[Generator] = Registry("proposal method", "proposals.method")


def empty_boxes() -> np.ndarray:
    """No boxes: a (0, 5) float32 array."""
    return np.zeros((0, len(BOX_FIELDS)), dtype=np.float32)


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boxes cut to the image (x, y >= 0, x + w <= width, y + h <= height); those left without area are dropped."""
    x1 = np.clip(boxes[:, 0], 0, width)
    y1 = np.clip(boxes[:, 1], 0, height)
    x2 = np.clip(boxes[:, 0] + boxes[:, 2], 0, width)
    y2 = np.clip(boxes[:, 1] + boxes[:, 3], 0, height)
    out = np.stack([x1, y1, x2 - x1, y2 - y1, boxes[:, 4]], axis=1).astype(np.float32)
    return out[(out[:, 2] > 0) & (out[:, 3] > 0)]


def top_boxes(boxes: np.ndarray, max_boxes: int) -> np.ndarray:
    """At most `max_boxes` boxes, highest score first (ties keep their order), without exact duplicates."""
    _, first = np.unique(boxes[:, :4], axis=0, return_index=True)
    unique = boxes[np.sort(first)]
    order = np.argsort(-unique[:, 4], kind="stable")
    return unique[order[:max_boxes]]


def window_starts(length: float, window: float) -> np.ndarray:
    """Starts of windows of `window` pixels moved by half a window over `length`, the last one flush with the end."""
    if window >= length:
        return np.zeros(1)
    starts = np.arange(0.0, length - window, window / 2)
    return np.append(starts, length - window)


@PROPOSALS.register("windows")
def windows(
    height: int,
    width: int,
    max_boxes: int,
    scales: Sequence[float] = WINDOW_SCALES,
    aspects: Sequence[float] = WINDOW_ASPECTS,
) -> np.ndarray:
    """Sliding windows at `scales` of the shorter side and `aspects` (w / h), stride half a window, clipped.

    Scores fall with the scale (1.0 for the whole-image window), so a cap keeps the coarsest windows.
    """
    side = min(height, width)
    boxes = []
    for scale in scales:
        for aspect in aspects:
            w = min(width, scale * side * np.sqrt(aspect))
            h = min(height, scale * side / np.sqrt(aspect))
            xs, ys = np.meshgrid(window_starts(width, w), window_starts(height, h))
            grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
            boxes.append(np.column_stack([grid, np.full((len(grid), 2), (w, h)), np.full(len(grid), scale)]))
    return top_boxes(clip_boxes(np.concatenate(boxes).astype(np.float32), height, width), max_boxes)


def cam_boxes(cam: np.ndarray, height: int, width: int, tau: float, max_boxes: int) -> np.ndarray:
    """Boxes of a class activation map's strong regions, in pixels of a `height` x `width` image.

    Args:
        cam: (h, w) activation map of one class (any scale; its grid is stretched over the image).
        height: Image height in pixels.
        width: Image width in pixels.
        tau: Positions at or above tau * max(cam) are kept; each 8-connected component becomes a box.
        max_boxes: The cap on boxes.

    Returns:
        (R, 5) float32 boxes scored by the map's peak inside each (a map without a positive peak gives none).
    """
    peak = float(np.max(cam)) if cam.size else 0.0
    if peak <= 0:
        return empty_boxes()
    components = label(cam >= tau * peak, connectivity=2)
    sy, sx = height / cam.shape[0], width / cam.shape[1]
    boxes = []
    for region in regionprops(components, intensity_image=cam):
        y1, x1, y2, x2 = region.bbox
        boxes.append((x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy, region.intensity_max))
    return top_boxes(clip_boxes(np.asarray(boxes, dtype=np.float32), height, width), max_boxes)


def enlarge(boxes: np.ndarray, factor: float, height: int, width: int) -> np.ndarray:
    """Boxes grown `factor` times about their centres, clipped to the image (context patches; kappa about 1.8)."""
    cx, cy = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    w, h = boxes[:, 2] * factor, boxes[:, 3] * factor
    grown = np.stack([cx - w / 2, cy - h / 2, w, h, boxes[:, 4]], axis=1).astype(np.float32)
    return clip_boxes(grown, height, width)


def to_corners(boxes: np.ndarray) -> np.ndarray:
    """(x, y, w, h, score) -> (x1, y1, x2, y2), the layout `torchvision.ops.roi_align` takes."""
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of two sets of (x, y, w, h, ...) boxes."""
    ca, cb = to_corners(a), to_corners(b)
    x1 = np.maximum(ca[:, None, 0], cb[None, :, 0])
    y1 = np.maximum(ca[:, None, 1], cb[None, :, 1])
    x2 = np.minimum(ca[:, None, 2], cb[None, :, 2])
    y2 = np.minimum(ca[:, None, 3], cb[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return inter / np.maximum(union, 1e-12)
