"""Batched HOG features that reproduce `skimage.feature.hog` (L2-Hys, colour, flattened) many times faster.

`skimage.feature.hog(image, orientations, (ppc, ppc), (cpb, cpb), block_norm="L2-Hys", channel_axis=-1)` on a
uint8 RGB image is replicated here for a whole batch (N, H, W, 3) at once, bit for bit up to the final cast to
float32 (max abs difference <= HOG_TOLERANCE = 1e-6; measured ~3e-8 on real chips, the float32 rounding), and
about 11x faster per image than calling skimage image by image (see benchmarks/hog.py).

How it stays exact and fast:

* uint8 gradients are integers in [-255, 255], so every per-pixel quantity skimage derives from a gradient
  pair (the magnitude its channel argmax compares, the vote magnitude, the orientation bin) is read from a
  511 x 511 lookup table computed once with the very numpy calls skimage makes (np.hypot, np.rad2deg,
  np.arctan2, `% 180`, its bin bounds). This also reproduces rounding edge cases: equal sums of squares whose
  np.hypot differ by one ulp (this changes skimage's argmax), and angles exactly on a bin bound (45 and 90
  degrees with 12 bins) that fall into the upper bin.
* skimage's Cython `cell_hog` sums a cell's votes in a C `float` (float32) in row-major pixel order and
  divides by the cell area in float32; the batch replays that order, one pixel offset of all cells at a time.
* Block normalisation runs in float64 on all blocks at once, like skimage's per-block loop.

OpenCV's `cv2.HOGDescriptor` is not a substitute: it interpolates votes between bins and cells, and its
features correlate only 0.71-0.89 with skimage's.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from mlic.config import HogConfig
from mlic.progress import track

HOG_TOLERANCE = 1e-6
"""Max abs difference from skimage.feature.hog that the tests enforce (the float32 cast alone gives ~3e-8)."""

_MAX_GRADIENT = 255  # largest |central difference| of uint8 values
_N_GRADIENTS = 2 * _MAX_GRADIENT + 1
_CODE_BITS = 18  # gradient-pair codes are < 511**2 < 2**18
_CHANNEL_SHIFT = _CODE_BITS  # 2 bits of channel preference above the code ...
_RANK_SHIFT = _CODE_BITS + 2  # ... and the magnitude rank above both
_EPS = 1e-5  # skimage's `_hog_normalize_block` default
_CLIP = 0.2  # L2-Hys clipping
# Pixels per internal chunk. The scratch arrays (~105 B/pixel, so ~7 MB) are kept per thread and reused: fresh
# pages cost more than the arithmetic here (page faults doubled the run time), and a chunk must be big enough
# that the Python-level loop over the pixel offsets of a cell stays cheap (larger chunks measured no faster).
_CHUNK_PIXELS = 1 << 16
_local = threading.local()


@dataclass(frozen=True)
class HogParams:
    """HOG settings (square cells and blocks), as passed to skimage.feature.hog.

    Attributes:
        orientations: Number of orientation bins over [0, 180) degrees (1 to 254).
        pixels_per_cell: Side of a cell in pixels.
        cells_per_block: Side of a normalisation block in cells.
    """

    orientations: int = 9
    pixels_per_cell: int = 8
    cells_per_block: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.orientations <= 254 or self.pixels_per_cell < 1 or self.cells_per_block < 1:
            raise ValueError(f"invalid HOG parameters: {self}")


def _grid(size: int, p: HogParams) -> tuple[int, int]:
    """Cells and blocks along a side; skimage ignores the pixels beyond floor(size / pixels_per_cell) cells."""
    cells = size // p.pixels_per_cell
    return cells, cells - p.cells_per_block + 1


def _check_size(height: int, width: int, p: HogParams) -> None:
    """Raise, like skimage, when not even one block fits."""
    if min(_grid(height, p)[1], _grid(width, p)[1]) <= 0:
        side = p.pixels_per_cell * p.cells_per_block
        raise ValueError(
            f"image of {height}x{width} px is too small for HOG with pixels_per_cell={p.pixels_per_cell} and "
            f"cells_per_block={p.cells_per_block}: it needs at least {side}x{side} px"
        )


def _dim(height: int, width: int, p: HogParams) -> int:
    return _grid(height, p)[1] * _grid(width, p)[1] * p.cells_per_block**2 * p.orientations


def hog_dim(image_size: int, p: HogParams) -> int:
    """Length of the HOG feature vector of a square image_size x image_size image.

    Raises:
        ValueError: If the image is too small for one block.
    """
    _check_size(image_size, image_size, p)
    return _dim(image_size, image_size, p)


@lru_cache(maxsize=16)
def _lookup_tables(orientations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per gradient-pair tables, indexed by code = (g_row + 255) * 511 + (g_col + 255).

    Returns:
        (select_key, vote_magnitude, orientation_bin).
        select_key (int64) packs the rank of skimage's channel-selection magnitude np.hypot(g_row, g_col) above
        the code itself, so the strongest channel is a plain np.maximum and its code comes back by masking.
        vote_magnitude (float64) is the magnitude `_hoghistogram` votes with, np.hypot(g_col, g_row).
        orientation_bin (uint8) is the bin skimage counts the pixel in, `orientations` meaning "no bin"
        (skimage's float bin bounds need not cover [0, 180) exactly).
    """
    gradients = np.arange(-_MAX_GRADIENT, _MAX_GRADIENT + 1, dtype=np.float64)
    g_row, g_col = np.meshgrid(gradients, gradients, indexing="ij")
    # Ranks of the float64 magnitudes, not integer g_row**2 + g_col**2: np.hypot of two pairs with the same sum
    # of squares can differ by one ulp, and skimage's argmax then prefers the larger one.
    rank = np.unique(np.hypot(g_row, g_col).ravel(), return_inverse=True)[1].astype(np.int64)
    select_key = (rank << _RANK_SHIFT) | np.arange(rank.size, dtype=np.int64)
    vote_magnitude = np.hypot(g_col, g_row).ravel()
    orientation = (np.rad2deg(np.arctan2(g_row, g_col)) % 180).ravel()
    per_bin = 180.0 / orientations
    orientation_bin = np.full(orientation.shape, orientations, dtype=np.uint8)
    for i in range(orientations):
        # cell_hog skips a pixel if orientation >= start or < end, bounds computed exactly like this; so an
        # angle on a bound (45 degrees with 12 bins, 90 with an even count) goes to the upper bin.
        orientation_bin[(orientation >= per_bin * i) & (orientation < per_bin * (i + 1))] = i
    for table in (select_key, vote_magnitude, orientation_bin):
        table.flags.writeable = False  # shared between threads through the cache
    return select_key, vote_magnitude, orientation_bin


class _Workspace:
    """Flat scratch buffers for chunks of up to n images of one size; a chunk uses their first elements."""

    def __init__(self, n: int, height: int, width: int, p: HogParams) -> None:
        c, b = p.pixels_per_cell, p.cells_per_block
        (cells_row, blocks_row), (cells_col, blocks_col) = _grid(height, p), _grid(width, p)
        self.key = (n, height, width, p)
        self.rows, self.cols, self.cells = cells_row * c, cells_col * c, (cells_row, cells_col)
        pixels, cells = n * self.rows * self.cols, n * cells_row * cells_col
        self.g_row = np.empty(3 * pixels, dtype=np.intp)  # becomes the gradient codes
        self.g_col = np.empty(3 * pixels, dtype=np.intp)
        self.keys = np.empty(3 * pixels, dtype=np.int64)
        self.best = np.empty(pixels, dtype=np.intp)
        self.by_offset = np.empty(pixels, dtype=np.intp)
        self.bins = np.empty(pixels, dtype=np.uint8)
        self.index = np.empty(pixels, dtype=np.intp)
        self.votes = np.empty(pixels, dtype=np.float64)
        slots = p.orientations + 1  # one extra slot per cell takes the votes skimage counts in no bin
        self.base = np.arange(0, cells * slots, slots)
        self.total = np.empty(cells * slots, dtype=np.float32)
        self.gathered = np.empty(cells, dtype=np.float32)
        blocks = n * blocks_row * blocks_col
        self.blocks = np.empty(blocks * b * b * p.orientations, dtype=np.float64)
        self.norms = np.empty(blocks, dtype=np.float64)


def _workspace(n: int, height: int, width: int, p: HogParams) -> _Workspace:
    """This thread's workspace for the shape, replacing (and freeing) one for another shape."""
    space = getattr(_local, "space", None)
    if space is None or space.key != (n, height, width, p):
        _local.space = space = None  # drop the old arrays before allocating the new ones
        _local.space = space = _Workspace(n, height, width, p)
    return space


def _view(buffer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A C-contiguous array of the given shape on the start of a flat scratch buffer."""
    return buffer[: math.prod(shape)].reshape(shape)


def _gradient_codes(images: np.ndarray, ws: _Workspace, select_key: np.ndarray) -> np.ndarray:
    """Code of the gradient of the strongest channel at each pixel of the cell grid: (n, rows, cols) intp.

    skimage's `_hog_channel_gradient` takes central differences and zeroes the first and last row (column) of
    the whole image; pixels beyond the cell grid still feed the differences of the grid's last pixels. The
    channel of largest np.hypot magnitude wins, the first one on ties (np.argmax).
    """
    n, height, width, _ = images.shape
    rows, cols = ws.rows, ws.cols
    channels = np.moveaxis(images, -1, 0)  # (3, n, H, W) view; the subtractions cast uint8 to intp on the fly
    g_row, g_col, keys = (_view(a, (3, n, rows, cols)) for a in (ws.g_row, ws.g_col, ws.keys))
    last_row, last_col = min(rows, height - 1), min(cols, width - 1)
    g_row[:, :, 0], g_row[:, :, last_row:], g_col[..., 0], g_col[..., last_col:] = 0, 0, 0, 0
    rows_ahead, rows_behind = channels[:, :, 2 : last_row + 1, :cols], channels[:, :, : max(last_row - 1, 0), :cols]
    np.subtract(rows_ahead, rows_behind, out=g_row[:, :, 1:last_row], dtype=np.intp)
    cols_ahead, cols_behind = channels[:, :, :rows, 2 : last_col + 1], channels[:, :, :rows, : max(last_col - 1, 0)]
    np.subtract(cols_ahead, cols_behind, out=g_col[..., 1:last_col], dtype=np.intp)
    codes = g_row
    codes *= _N_GRADIENTS
    codes += g_col
    codes += _MAX_GRADIENT * _N_GRADIENTS + _MAX_GRADIENT
    np.take(select_key, codes, out=keys, mode="clip")  # codes are in range; "clip" skips np.take's buffering
    # On equal magnitudes the earlier channel must win, so it gets the higher preference bits.
    keys[0] |= 2 << _CHANNEL_SHIFT
    keys[1] |= 1 << _CHANNEL_SHIFT
    best = _view(ws.best, (n, rows, cols))
    np.maximum(keys[0], keys[1], out=best)
    np.maximum(best, keys[2], out=best)
    best &= (1 << _CODE_BITS) - 1
    return best


def _cell_histograms(codes: np.ndarray, ws: _Workspace, p: HogParams) -> np.ndarray:
    """Orientation histograms (n, cells_row, cells_col, orientations) float32, as skimage's `cell_hog` makes them.

    Each pixel votes its magnitude into the one bin of its orientation (hard binning, no interpolation). skimage
    sums a cell's votes in a C `float` (float32), in row-major pixel order, each vote added in double and rounded
    to float, then divides by the cell area in float32. That order is replayed here one pixel offset of all
    cells at a time; every cell gets exactly one vote per offset, so the scatter has no colliding indices.
    """
    _, vote_magnitude, orientation_bin = _lookup_tables(p.orientations)
    c, n, (cells_row, cells_col) = p.pixels_per_cell, len(codes), ws.cells
    offsets = (c, c, n, cells_row, cells_col)  # one contiguous slab per pixel offset within the cell
    by_offset, bins, index, votes = (_view(a, offsets) for a in (ws.by_offset, ws.bins, ws.index, ws.votes))
    np.copyto(by_offset, codes.reshape(n, cells_row, c, cells_col, c).transpose(2, 4, 0, 1, 3))
    np.take(orientation_bin, by_offset, out=bins, mode="clip")
    np.take(vote_magnitude, by_offset, out=votes, mode="clip")
    np.add(bins, _view(ws.base, (n, cells_row, cells_col)), out=index)
    total = _view(ws.total, (n, cells_row, cells_col, p.orientations + 1))
    total.fill(0)
    flat_total, gathered = total.reshape(-1), ws.gathered[: n * cells_row * cells_col]
    for where, vote in zip(index.reshape(c * c, -1), votes.reshape(c * c, -1), strict=True):
        np.take(flat_total, where, out=gathered, mode="clip")
        np.add(gathered, vote, out=gathered)  # float32 + float64 runs in float64 and rounds on store, like C
        flat_total[where] = gathered
    np.divide(total, np.float32(c * c), out=total)  # float32 division, as C's `total / (rows * cols)`
    return total[..., : p.orientations]


def _divide_by_l2_norm(blocks: np.ndarray, norms: np.ndarray) -> None:
    """Divide blocks in place by sqrt(sum(blocks**2) + eps**2) over the last axis; norms is (..., 1) scratch."""
    np.einsum("...i,...i->...", blocks, blocks, out=norms[..., 0])
    norms += _EPS**2
    np.sqrt(norms, out=norms)
    blocks /= norms


def _normalise_blocks(hist: np.ndarray, ws: _Workspace, p: HogParams, out: np.ndarray) -> None:
    """L2-Hys over every block of cells_per_block^2 cells, sliding one cell, into out (n, D) like skimage.

    Runs in float64 as skimage does. The ravel order is (blocks_row, blocks_col, cells_row, cells_col,
    orientations), and eps enters squared under the square root, as in skimage's `_hog_normalize_block`.
    """
    b, n = p.cells_per_block, len(hist)
    windows = np.lib.stride_tricks.sliding_window_view(hist, (b, b), axis=(1, 2))  # (n, Br, Bc, O, b, b)
    blocks = _view(ws.blocks, (*windows.shape[:3], b, b, p.orientations))
    np.copyto(blocks, windows.transpose(0, 1, 2, 4, 5, 3))
    blocks = blocks.reshape(*windows.shape[:3], -1)
    norms = _view(ws.norms, (*windows.shape[:3], 1))
    _divide_by_l2_norm(blocks, norms)
    np.minimum(blocks, _CLIP, out=blocks)
    _divide_by_l2_norm(blocks, norms)
    np.copyto(out, blocks.reshape(n, -1))


def hog_batch(images: np.ndarray, p: HogParams) -> np.ndarray:
    """HOG features of a batch of RGB images, equal to skimage.feature.hog image by image.

    Matches `skimage.feature.hog(image, p.orientations, (ppc, ppc), (cpb, cpb), block_norm="L2-Hys",
    transform_sqrt=False, feature_vector=True, channel_axis=-1)` within HOG_TOLERANCE (in fact up to the float32
    rounding of the output). Works through the batch in chunks of about _CHUNK_PIXELS pixels with scratch
    arrays kept per thread, so memory stays bounded whatever N is. Thread-safe.

    Args:
        images: (N, H, W, 3) uint8 array; read-only arrays and memmaps are fine.
        p: HOG settings.

    Returns:
        (N, D) float32 features.

    Raises:
        ValueError: If images is not (N, H, W, 3) uint8, or is too small for one block.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"hog_batch expects (N, H, W, 3) uint8 images, got shape {images.shape} {images.dtype}")
    n, height, width, _ = images.shape
    _check_size(height, width, p)
    out = np.empty((n, _dim(height, width, p)), dtype=np.float32)
    step = max(1, _CHUNK_PIXELS // (height * width))
    ws = _workspace(step, height, width, p)
    select_key = _lookup_tables(p.orientations)[0]
    for start in range(0, n, step):
        codes = _gradient_codes(np.asarray(images[start : start + step]), ws, select_key)
        _normalise_blocks(_cell_histograms(codes, ws, p), ws, p, out[start : start + step])
    return out


def _resized(images: np.ndarray, image_size: int) -> np.ndarray:
    """The images at image_size x image_size (area to shrink, bilinear to enlarge, as `mlic.data.images` does)."""
    if images.shape[1:3] == (image_size, image_size):
        return np.asarray(images)
    out = np.empty((len(images), image_size, image_size, 3), dtype=np.uint8)
    shrink = images.shape[1] > image_size or images.shape[2] > image_size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    for i, image in enumerate(images):
        out[i] = cv2.resize(np.asarray(image), (image_size, image_size), interpolation=interpolation)
    return out


def extract_hog(
    images: np.ndarray,
    p: HogParams,
    image_size: int,
    batch_size: int = 256,
    workers: int = 2,
    desc: str = "hog",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """HOG features of many images, resized to image_size, in parallel batches: (N, D) float16.

    Each thread reads a batch from images (so a memory map is read batch by batch), resizes it and runs
    `hog_batch`; numpy and OpenCV release the GIL in the heavy work. Memory beyond the result is bounded by
    about workers * batch_size images.

    Args:
        images: (N, S, S, 3) uint8 array, e.g. a read-only np.memmap of the image cache.
        p: HOG settings.
        image_size: Side the images are resized to before HOG (no resize when it is S).
        batch_size: Images per batch.
        workers: Parallel threads.
        desc: Progress-bar label.
        out: Where the features go, e.g. a memory-mapped .npy being written (None: a new array in memory).

    Returns:
        (N, hog_dim(image_size, p)) float16 features, the pipeline's storage dtype (`out` when given).

    Raises:
        ValueError: If images is not (N, H, W, 3) uint8, or image_size is too small for one block.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"extract_hog expects (N, S, S, 3) uint8 images, got shape {images.shape} {images.dtype}")
    shape = (len(images), hog_dim(image_size, p))
    features = np.empty(shape, dtype=np.float16) if out is None else out
    if features.shape != shape or features.dtype != np.float16:
        raise ValueError(f"extract_hog writes {shape} float16, `out` is {features.shape} {features.dtype}")

    def run(start: int) -> int:
        batch = _resized(images[start : start + batch_size], image_size)
        features[start : start + len(batch)] = hog_batch(batch, p)
        return len(batch)

    starts = range(0, len(images), max(1, batch_size))
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        track(total=len(images), desc=desc, unit="img", mininterval=1.0, disable=len(images) < 1000) as bar,
    ):
        for done in pool.map(run, starts):
            bar.update(done)
    return features


def hog_of_views(views: np.ndarray, cfg: HogConfig, desc: str = "hog", out_file: Path | None = None) -> np.ndarray:
    """HOG of image views as the `hog` stage computes them: (N, views, S, S, 3) uint8 -> (N, views, D) float16.

    The `hog` stage runs it on the image caches, `mlic predict` on new images, so both see the same features. With
    `out_file`, the features are written into that .npy as they come (memory stays bounded whatever N is; the same
    bytes as `np.save` of the array) and returned memory-mapped.
    """
    params = HogParams(cfg.orientations, cfg.pixels_per_cell, cfg.cells_per_block)
    flat = views.reshape(-1, *views.shape[2:])  # a view of a memory map: nothing is loaded here
    shape = (*views.shape[:2], hog_dim(cfg.image_size, params))
    out = None if out_file is None else np.lib.format.open_memmap(out_file, "w+", np.float16, shape)
    flat_out = None if out is None else out.reshape(-1, shape[-1])  # a view of the file's array
    vectors = extract_hog(flat, params, cfg.image_size, cfg.batch_size, cfg.num_workers, desc=desc, out=flat_out)
    if out is not None:
        out.flush()
        return out
    return vectors.reshape(shape)
