"""The proposals of every cached view: exactly R boxes each, computed per image or from class activation maps.

The `proposals` stage writes `train_boxes.npy` and `test_boxes.npy`, float32 (N, views, R, 5) arrays of (x, y, w, h,
score) in pixels of the cached image, read back by the `boxes` batch source. Every view gets exactly R boxes, so
batches stack: a method's boxes come first, best first, topped up with sliding windows (`pad_boxes`) scored
`NO_OBJECTNESS`: a top-up is there to fill the batch, not because it holds an object or background, so a model that
learns from the scores (SCA's patch classifier and regressor) ignores it.

- `windows` and `selective_search` (`mlic.features.proposals.PROPOSALS`) see one image at a time (threads);
- `cam` reads class activation maps (`cam_proposals`): for each class the trained model scores at least
  `cam.min_score` (and always its top class), the map is cut at tau * its max and each connected component is a
  pseudo-object box scored by its peak on the map normalised to [0, 1]. Half of R at most go to those; the rest are
  sliding windows scored by the mean normalised map inside them (low for every predicted label: background), so
  the two-branch network sees both objects and background. Those windows are scored by the map, evidence either way;
  only boxes still missing after them (a grid with fewer than R distinct windows) are `NO_OBJECTNESS` top-ups.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlic.config import ProposalsConfig
from mlic.errors import MlicError
from mlic.features.proposals import NO_OBJECTNESS, PROPOSALS, cam_boxes, top_boxes, windows
from mlic.layout import TEST_BOXES, TRAIN_BOXES
from mlic.progress import track


@dataclass(frozen=True)
class StoredProposals:
    """The boxes of every cached view: (N, views, R, 5) float32 for the training and the test images."""

    train: np.ndarray
    test: np.ndarray


def pad_boxes(boxes: np.ndarray, count: int, height: int, width: int) -> np.ndarray:
    """Exactly `count` boxes: the first `count` of `boxes`, topped up with sliding windows not among them.

    The top-ups score `NO_OBJECTNESS`, whatever the method: a window's own score is its scale (1.0 to 0.25), which
    would make the coarse ones pseudo-objects of SCA (score >= object_score) although nothing found an object there.
    A tiny image can have fewer distinct windows than `count`; then the whole-image window repeats.
    """
    boxes = boxes[:count]
    if len(boxes) < count:
        grid = windows(height, width, max(count, 1))
        known = {tuple(b) for b in np.round(boxes[:, :4], 3)}
        extra = np.asarray([b for b in grid if tuple(np.round(b[:4], 3)) not in known], np.float32).reshape(-1, 5)
        extra[:, 4] = NO_OBJECTNESS
        boxes = np.concatenate([boxes, extra])[:count]
    if len(boxes) < count:
        whole = np.array([[0, 0, width, height, NO_OBJECTNESS]], dtype=np.float32)
        boxes = np.concatenate([boxes, np.repeat(whole, count - len(boxes), axis=0)])
    return boxes.astype(np.float32)


def proposals_of_views(views: np.ndarray, cfg: ProposalsConfig, desc: str | None = None) -> np.ndarray:
    """(N, views, R, 5) boxes of (N, views, S, S, 3) uint8 views by a per-image method (`windows`, ...).

    Raises:
        MlicError: For `cam`, which needs a trained model rather than the image alone.
    """
    if cfg.method == "cam":
        raise MlicError(
            "cam proposals need the class activation maps of a trained model, not just the images",
            fix="use proposals.method windows or selective_search for models that predict new images, or run the "
            "`proposals` stage",
        )
    method = PROPOSALS.get(cfg.method)
    n, n_views, height, width = views.shape[:4]

    def one(index: int) -> np.ndarray:
        image = views[index // n_views, index % n_views]
        return pad_boxes(method(np.ascontiguousarray(image), cfg.max_boxes), cfg.max_boxes, height, width)

    with ThreadPoolExecutor(cfg.num_workers) as pool:
        jobs = pool.map(one, range(n * n_views))
        boxes = list(track(jobs, desc, n * n_views, unit="view", disable=desc is None, mininterval=2.0))
    return (
        np.stack(boxes).reshape(n, n_views, cfg.max_boxes, 5)
        if boxes
        else np.zeros((0, n_views, cfg.max_boxes, 5), dtype=np.float32)
    )


def classes_to_map(scores: np.ndarray, min_score: float) -> np.ndarray:
    """The classes whose maps give boxes: those scored >= min_score, and always the top one."""
    chosen = np.flatnonzero(scores >= min_score)
    return chosen if len(chosen) else np.array([int(np.argmax(scores))])


def cam_proposals(maps: np.ndarray, scores: np.ndarray, size: int, tau: float, min_score: float,
                  count: int) -> np.ndarray:  # fmt: skip
    """Exactly `count` boxes of one S x S image from its (C, h, w) class activation maps and (C,) scores.

    Pseudo-objects (at most half of `count`) come first, then windows scored by how much of the chosen classes'
    map they hold (see the module docstring), then `NO_OBJECTNESS` top-ups where those are still fewer than `count`.
    """
    chosen = maps[classes_to_map(scores, min_score)]
    chosen = np.clip(chosen, 0, None)
    peaks = chosen.reshape(len(chosen), -1).max(axis=1)
    normalised = chosen / np.maximum(peaks, 1e-12)[:, None, None]
    objects = [cam_boxes(m, size, size, tau, count) for m in normalised]
    objects = top_boxes(np.concatenate(objects), max(count // 2, 1)) if objects else np.zeros((0, 5), np.float32)
    grid = windows(size, size, count)
    strength = normalised.max(axis=0)  # (h, w): how strongly some chosen class fires at each cell
    grid[:, 4] = [window_mean(strength, box, size) for box in grid]
    return pad_boxes(np.concatenate([objects, grid]).astype(np.float32), count, size, size)


def window_mean(grid_map: np.ndarray, box: np.ndarray, size: int) -> float:
    """Mean of an (h, w) map stretched over an S x S image inside one (x, y, w, h) box (at least one cell)."""
    h, w = grid_map.shape
    x1, y1 = int(box[0] * w / size), int(box[1] * h / size)
    x2 = max(int(np.ceil((box[0] + box[2]) * w / size)), x1 + 1)
    y2 = max(int(np.ceil((box[1] + box[3]) * h / size)), y1 + 1)
    return float(grid_map[y1:y2, x1:x2].mean())


def cam_proposals_of_views(views: np.ndarray, maps_and_scores: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                           cfg: ProposalsConfig, batch_size: int) -> np.ndarray:  # fmt: skip
    """(N, views, R, 5) cam boxes of (N, views, S, S, 3) views, `batch_size` views at a time.

    `maps_and_scores` maps a batch of (B, S, S, 3) views to its (B, C, h, w) class maps and (B, C) scores.
    """
    n, n_views, size = views.shape[0], views.shape[1], views.shape[2]
    flat = views.reshape(n * n_views, *views.shape[2:])
    out = np.zeros((n * n_views, cfg.max_boxes, 5), dtype=np.float32)
    for start in range(0, len(flat), batch_size):
        maps, scores = maps_and_scores(flat[start : start + batch_size])
        for offset, (m, s) in enumerate(zip(maps, scores, strict=True)):
            out[start + offset] = cam_proposals(m, s, size, cfg.cam.tau, cfg.cam.min_score, cfg.max_boxes)
    return out.reshape(n, n_views, cfg.max_boxes, 5)


def save_proposals(out_dir: Path, proposals: StoredProposals) -> None:
    """Write the two arrays into `out_dir` (an atomic stage directory)."""
    np.save(out_dir / TRAIN_BOXES, proposals.train)
    np.save(out_dir / TEST_BOXES, proposals.test)


def load_proposals(out_dir: str | Path, prep, max_boxes: int) -> StoredProposals:
    """The stored boxes, memory-mapped, checked against the prepared images and `proposals.max_boxes`.

    Raises:
        MlicError: If the files are missing or do not match (a stale proposals stage), naming the fix.
    """
    out_dir, fix = Path(out_dir), "run the proposals stage (`mlic proposals`, or `dvc repro proposals`)"
    if not (out_dir / TRAIN_BOXES).is_file() or not (out_dir / TEST_BOXES).is_file():
        raise MlicError("no proposals: the model reads boxes", path=out_dir, fix=fix)
    train = np.load(out_dir / TRAIN_BOXES, mmap_mode="r")
    test = np.load(out_dir / TEST_BOXES, mmap_mode="r")
    for name, boxes, images in (("train", train, prep.train_images), ("test", test, prep.test_images)):
        if boxes.shape != (*images.shape[:2], max_boxes, 5):
            raise MlicError(f"{name} proposals have shape {boxes.shape}, expected "
                            f"{(*images.shape[:2], max_boxes, 5)} (images x views x proposals.max_boxes x 5)",
                            path=out_dir, fix=fix)  # fmt: skip
    return StoredProposals(train, test)
