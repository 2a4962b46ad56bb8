"""Region proposals for the region models (issue 16): boxes an image-level label never names, as (x, y, w, h, score).

Every generator in `PROPOSALS` is called as `generator(image, max_boxes)` with an (H, W, 3) uint8 RGB image and
returns a float32 (R, 5) array, boxes in pixels of that image, clipped to it, at most `max_boxes` of them, best
score first:
- `windows`: a dense grid of sliding windows at fractions of the image's shorter side and several aspect ratios
  (w / h), each moved by half its own size; Planet chips show land cover rather than objects, which a grid covers.
  It needs only the image's shape; the plain function `windows(height, width, max_boxes)` is there for callers
  without an image.
- `selective_search`: OpenCV contrib's fast selective search (Uijlings et al. 2013) on the image's content,
  re-ranked largest box first so that the result is deterministic (see `selective_search`).
- CAM boxes (`cam_boxes`, not in the registry: it takes a class activation map): the map thresholded at tau * its
  max, one box per connected component, scored by the map's peak inside it.
A score is in [0, 1], or `NO_OBJECTNESS` for a box that says nothing about what it holds (a window topping up another
method's boxes). `windows` scores (a window's scale) only rank the grid: `METHODS_WITHOUT_OBJECTNESS` names the
methods whose scores are no evidence of an object, which a model reading them as such refuses.
Boxes go to `torchvision.ops.roi_align` as (x1, y1, x2, y2) through `to_corners`. `enlarge` grows boxes about their
centre (the two-branch network's context patches) and clips them to the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType

import cv2
import numpy as np
from skimage.measure import label, regionprops

from mlic.errors import ConfigError
from mlic.registry import Registry

BOX_FIELDS = ("x", "y", "w", "h", "score")
# The score of a box with no objectness (neither object nor background): below every score in [0, 1], so it sorts
# last and passes neither a >= object threshold nor, for readers that skip negative scores, a <= background one
NO_OBJECTNESS = -1.0
METHODS_WITHOUT_OBJECTNESS = frozenset({"windows"})  # their scores rank boxes (a window's scale), not how object-like
WINDOW_SCALES = (1.0, 0.8, 0.6, 0.4, 0.25)  # fractions of the shorter side, largest first (kept first under a cap)
WINDOW_ASPECTS = (1.0, 0.5, 2.0)  # w / h

# The wheel that provides cv2.ximgproc: the pin in requirements.in and requirements.lock (a test keeps them equal).
CONTRIB_WHEEL = "opencv-contrib-python-headless==4.12.0.88"

Generator = Callable[[np.ndarray, int], np.ndarray]  # (image (H, W, 3) uint8 RGB, max_boxes) -> (R, 5) float32
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


@PROPOSALS.register("windows")
def image_windows(image: np.ndarray, max_boxes: int) -> np.ndarray:
    """`windows` with the default scales and aspects over an image's shape (the registry's signature)."""
    return windows(image.shape[0], image.shape[1], max_boxes)


def selective_search_module() -> ModuleType:
    """`cv2.ximgproc.segmentation`, or a ConfigError naming the wheel when this OpenCV is not the contrib build."""
    segmentation = getattr(getattr(cv2, "ximgproc", None), "segmentation", None)
    if segmentation is None:
        raise ConfigError(
            f"proposal method 'selective_search' needs OpenCV's contrib build (cv2.ximgproc), and cv2 "
            f"{cv2.__version__} here lacks it",
            fix=f"pip install --no-deps --force-reinstall {CONTRIB_WHEEL} "
            "(`make install` does so when requirements.lock is newer than the venv)",
        )
    return segmentation


@PROPOSALS.register("selective_search")
def selective_search(
    image: np.ndarray, max_boxes: int, base_k: int = 150, inc_k: int = 150, sigma: float = 0.8
) -> np.ndarray:
    """OpenCV's fast selective search: boxes of the regions of a hierarchical grouping of graph segments.

    OpenCV sorts its boxes by rand() * hierarchy level (the C library's global rand(), never seeded), so their order
    changes from call to call although the set does not. They are therefore re-ranked here, largest area first
    (ties by y, x, h, w): a merged region's box contains its parts' boxes, so this is the hierarchy top down, as the
    paper orders it before its random shuffle, and a cap keeps the coarsest regions. Score = 1 - rank / n over all n
    boxes, in (0, 1]. Nothing here is random or order dependent, so the result is the same whatever the OpenCV
    thread count (left as it is: a global setting this function has no business changing).

    Small or flat images give few boxes: a flat image is one segment, the whole image, and at 32-64 px a Planet chip
    often gives only that too (graph segmentation with k = 150 merges its low-contrast regions; a lower base_k and
    inc_k give more). Should OpenCV ever return none, the whole-image box stands in, so every image has one box.

    Args:
        image: (H, W, 3) uint8 RGB image.
        max_boxes: The cap on boxes.
        base_k: Graph segmentation's k of the first of three segmentations (OpenCV's default).
        inc_k: The step of k between them.
        sigma: Gaussian smoothing before graph segmentation.

    Returns:
        (R, 5) float32 boxes, 1 <= R <= max_boxes (for max_boxes >= 1).

    Raises:
        ConfigError: If cv2 is not OpenCV's contrib build.
        ValueError: If image is not (H, W, 3) uint8.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"selective_search expects an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    search = selective_search_module().createSelectiveSearchSegmentation()
    search.setBaseImage(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # its colour spaces are converted from BGR
    search.switchToSelectiveSearchFast(base_k, inc_k, sigma)
    rects = np.asarray(search.process(), dtype=np.float32).reshape(-1, 4)
    height, width = image.shape[:2]
    if not len(rects):
        rects = np.array([[0, 0, width, height]], dtype=np.float32)
    order = np.lexsort((rects[:, 2], rects[:, 3], rects[:, 0], rects[:, 1], -rects[:, 2] * rects[:, 3]))
    scores = 1 - np.arange(len(rects), dtype=np.float32) / len(rects)
    boxes = np.column_stack([rects[order], scores])
    return top_boxes(clip_boxes(boxes, height, width), max_boxes)


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
