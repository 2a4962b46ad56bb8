"""Label matrices: tag lists <-> (N, C) binary arrays, rare-label dropping, and compact bit-packed storage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlic.io import atomic_path


def encode_labels(tag_lists: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """Binary label matrix (N, C) uint8 from per-row tag lists; every tag must be in `classes`.

    Vectorised over all (row, tag) pairs at once: iMet's 109k x 1,103 matrix builds in well under a second.
    """
    index = {c: j for j, c in enumerate(classes)}
    lengths = np.fromiter((len(t) for t in tag_lists), dtype=np.int64, count=len(tag_lists))
    cols = np.fromiter((index[t] for tags in tag_lists for t in tags), dtype=np.int64, count=int(lengths.sum()))
    matrix = np.zeros((len(tag_lists), len(classes)), dtype=np.uint8)
    matrix[np.repeat(np.arange(len(tag_lists)), lengths), cols] = 1
    return matrix


def decode_labels(matrix: np.ndarray, classes: Sequence[str]) -> list[list[str]]:
    """Per-row lists of class names from a binary (N, C) matrix, in class order."""
    names = np.asarray(classes, dtype=object)
    return [list(names[row.astype(bool)]) for row in matrix]


def drop_rare_labels(
    labels: np.ndarray, classes: Sequence[str], min_count: int
) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Remove the classes with fewer than `min_count` positives (too rare to learn or to fit a threshold).

    Returns:
        The reduced matrix, the kept classes, and {dropped class: its count}.
    """
    counts = labels.sum(axis=0)
    keep = counts >= min_count
    dropped = {c: int(n) for c, n, k in zip(classes, counts, keep, strict=True) if not k}
    return labels[:, keep], [c for c, k in zip(classes, keep, strict=True) if k], dropped


def save_labels(path: str | Path, labels: np.ndarray) -> None:
    """Store a binary matrix bit-packed (8 labels a byte): iMet's matrix takes 15 MB instead of 120 MB."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, bits=np.packbits(labels.astype(bool), axis=1), n_classes=labels.shape[1])


def load_labels(path: str | Path) -> np.ndarray:
    """Read a matrix written by `save_labels` as dense uint8."""
    with np.load(path) as data:
        return np.unpackbits(data["bits"], axis=1, count=int(data["n_classes"]))
