"""The outputs of `prepare` (label matrix, image caches, ids, channel stats) and of `folds`, as one object."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlic.errors import MlicError
from mlic.labels import load_labels

# File names inside the prepare output directory (the directory itself comes from prepare.out_dir).
CLASSES_FILE = "classes.json"
TRAIN_INDEX = "train.csv"
TEST_INDEX = "test.csv"
LABELS_FILE = "labels.npz"
TRAIN_IMAGES = "train_images.npy"
TEST_IMAGES = "test_images.npy"
STATS_FILE = "stats.json"


@dataclass(frozen=True)
class Prepared:
    """Everything training needs, with the image caches memory-mapped (nothing is decoded)."""

    classes: list[str]
    train_ids: list[str]
    labels: np.ndarray
    train_images: np.ndarray
    test_ids: list[str]
    test_images: np.ndarray
    mean: list[float]
    std: list[float]


def load_prepared(out_dir: str | Path) -> Prepared:
    """Open the prepare stage's outputs (images as read-only memory maps)."""
    out = Path(out_dir)
    if not (out / STATS_FILE).is_file():
        raise MlicError("prepared data not found", path=out, fix="run `mlic prepare` (or `dvc repro prepare`) first")
    stats = json.loads((out / STATS_FILE).read_text())
    return Prepared(
        classes=json.loads((out / CLASSES_FILE).read_text()),
        train_ids=list(pd.read_csv(out / TRAIN_INDEX, dtype=str, keep_default_na=False)["id"]),
        labels=load_labels(out / LABELS_FILE),
        train_images=np.load(out / TRAIN_IMAGES, mmap_mode="r"),
        test_ids=list(pd.read_csv(out / TEST_INDEX, dtype=str, keep_default_na=False)["id"]),
        test_images=np.load(out / TEST_IMAGES, mmap_mode="r"),
        mean=stats["mean"],
        std=stats["std"],
    )


def load_folds(path: str | Path, train_ids: list[str]) -> np.ndarray:
    """Fold number of every training row, checked against the prepared ids (a stale folds file is an error)."""
    frame = pd.read_csv(path, dtype={"id": str, "fold": int}, keep_default_na=False)
    if list(frame["id"]) != list(train_ids):
        raise MlicError("folds file does not match the prepared training ids", path=path, fix="rerun `mlic folds`")
    return frame["fold"].to_numpy()
