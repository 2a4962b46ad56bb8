"""Stage `hog`: HOG features of every cached view of every train and test image, as float16 arrays."""

from __future__ import annotations

from mlic.config import Config, save_config
from mlic.data.stats import feature_stats
from mlic.features.hog import hog_of_views
from mlic.io import atomic_path
from mlic.layout import CONFIG_FILE, hog_files, load_prepared, save_hog_stats


def main(cfg: Config) -> None:
    """Write `<hog.out_dir>/`: train and test HOG arrays, the training-set mean and std, the resolved config."""
    prep = load_prepared(cfg.prepare.out_dir)
    with atomic_path(cfg.hog.out_dir, is_dir=True) as out:
        train_file, test_file = hog_files(out)  # written as they are computed: memory bounded whatever N is
        train = hog_of_views(prep.train_images, cfg.hog, "hog train", train_file)
        hog_of_views(prep.test_images, cfg.hog, "hog test", test_file)
        save_hog_stats(out, *feature_stats(train))
        save_config(cfg, out / CONFIG_FILE, sections=("hog",))
    shape, size = train.shape, cfg.hog.image_size
    print(f"hog: {shape[-1]}-dim features of {shape[0]} x {shape[1]} train views at {size}px")
