"""Label matrices: tag lists <-> (N, C) binary arrays, and back to tag lists for submissions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def encode_labels(tag_lists: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """Binary label matrix (N, C) uint8 from per-row tag lists; every tag must be in `classes`."""
    index = {c: j for j, c in enumerate(classes)}
    matrix = np.zeros((len(tag_lists), len(classes)), dtype=np.uint8)
    for i, tags in enumerate(tag_lists):
        matrix[i, [index[t] for t in tags]] = 1
    return matrix


def decode_labels(matrix: np.ndarray, classes: Sequence[str]) -> list[list[str]]:
    """Per-row lists of class names from a binary (N, C) matrix, in class order."""
    names = np.asarray(classes, dtype=object)
    return [list(names[row.astype(bool)]) for row in matrix]
