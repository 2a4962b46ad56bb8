"""Stage `hog`: HOG features of every cached view of every train and test image, as float16 arrays."""

from __future__ import annotations

import numpy as np

from mlic import features as files
from mlic.config import Config, save_config
from mlic.features import feature_stats
from mlic.hog import hog_of_views
from mlic.io import atomic_path
from mlic.prepared import load_prepared


def main(cfg: Config) -> None:
    """Write `<hog.out_dir>/`: train and test HOG arrays, the training-set mean and std, the resolved config."""
    prep = load_prepared(cfg.prepare.out_dir)
    with atomic_path(cfg.hog.out_dir, is_dir=True) as out:
        train = hog_of_views(prep.train_images, cfg.hog, "hog train")
        np.save(out / files.TRAIN_HOG, train)
        np.save(out / files.TEST_HOG, hog_of_views(prep.test_images, cfg.hog, "hog test"))
        mean, std = feature_stats(train)
        np.savez(out / files.STATS_FILE, mean=mean, std=std)
        save_config(cfg, out / "config.yaml")
    shape, size = train.shape, cfg.hog.image_size
    print(f"hog: {shape[-1]}-dim features of {shape[0]} x {shape[1]} train views at {size}px")
