"""Stage `prepare`: read and check the competition, build the label matrix and the resized uint8 image caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mlic import prepared as files
from mlic.competitions import RawData, get_competition
from mlic.config import Config, save_config
from mlic.errors import MlicError
from mlic.images import build_image_cache, channel_stats, open_image_cache
from mlic.io import atomic_path
from mlic.labels import encode_labels


def check_images_exist(paths: list[Path], what: str) -> None:
    """Refuse to start a long cache build when images are missing; name the first few."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise MlicError(f"{len(missing)} {what} image(s) missing, e.g. {shown}", path=missing[0].parent,
                        fix="download or unpack all competition images under data.root")  # fmt: skip


def write_index(out: Path, raw: RawData, labels: np.ndarray) -> None:
    """Label matrix, class list and id tables (CSV so notebooks can read them directly)."""
    np.save(out / files.LABELS_FILE, labels)
    (out / files.CLASSES_FILE).write_text(json.dumps(list(raw.classes), indent=1) + "\n")
    tags = [" ".join(t) for t in raw.train_tags]
    pd.DataFrame({"id": raw.train_ids, "tags": tags}).to_csv(out / files.TRAIN_INDEX, index=False)
    pd.DataFrame({"id": raw.test_ids}).to_csv(out / files.TEST_INDEX, index=False)


def main(cfg: Config) -> None:
    """Read `data.root` with the `data.competition` reader and write everything training needs."""
    raw = get_competition(cfg.data.competition).read(Path(cfg.data.root))
    check_images_exist(raw.train_paths, "training")
    check_images_exist(raw.test_paths, "test")
    labels = encode_labels(raw.train_tags, raw.classes)
    size, workers = cfg.prepare.image_size, cfg.prepare.num_workers
    with atomic_path(cfg.prepare.out_dir, is_dir=True) as out:
        write_index(out, raw, labels)
        build_image_cache(raw.train_paths, size, out / files.TRAIN_IMAGES, workers, desc="cache train")
        build_image_cache(raw.test_paths, size, out / files.TEST_IMAGES, workers, desc="cache test")
        mean, std = channel_stats(open_image_cache(out / files.TRAIN_IMAGES))
        counts = {c: int(n) for c, n in zip(raw.classes, labels.sum(axis=0), strict=True)}
        stats = {"n_train": len(raw.train_ids), "n_test": len(raw.test_ids), "image_size": size,
                 "mean": mean, "std": std, "label_counts": counts}  # fmt: skip
        (out / files.STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
        save_config(cfg, out / "config.yaml")
    print(f"prepare: {len(raw.train_ids)} train, {len(raw.test_ids)} test images cached at {size}px")
