"""Stage `prepare`: read and check the competition, build the label matrix and the resized uint8 image caches."""

from __future__ import annotations

from pathlib import Path

from mlic.config import Config, PrepareConfig, save_config
from mlic.data.competitions import RawData, Scan, get_competition
from mlic.data.images import build_crop_source_cache, build_image_cache, channel_stats
from mlic.data.labels import drop_rare_labels, encode_labels
from mlic.io import atomic_path
from mlic.layout import (
    CONFIG_FILE,
    crop_source_files,
    image_cache_files,
    open_views,
    save_prepare_stats,
    save_prepared_index,
)


def usable_data(scan: Scan, skip_bad_rows: bool) -> RawData:
    """The scanned data; refuses a dataset with problems unless bad training rows may be skipped (and says so)."""
    raw = scan.usable(skip_bad_rows)
    if scan.bad_train_rows:
        print(f"prepare: skipped {len(scan.bad_train_rows)} training row(s) with problems (prepare.skip_bad_rows):")
        print(scan.error())
    return raw


def build_caches(p: PrepareConfig, raw: RawData, out: Path) -> None:
    """The train and test image caches: every view, or (`crop_store: source`) plain views, crop sources, offsets."""
    views = {"crops": p.crop_views, "crop_scale": p.crop_scale, "seed": p.seed, "max_pixels": p.max_pixels}
    for split, paths in (("train", raw.train_paths), ("test", raw.test_paths)):
        if p.crop_store == "source" and p.crop_views:
            build_crop_source_cache(paths, p.image_size, crop_source_files(out, split), p.num_workers,
                                    f"cache {split}", **views)  # fmt: skip
        else:
            cache = image_cache_files(out)[split == "test"]
            build_image_cache(paths, p.image_size, cache, p.num_workers, f"cache {split}", **views)


def main(cfg: Config) -> None:
    """Read `data.root` with the `data.competition` reader and write everything training needs."""
    p = cfg.prepare
    scan = get_competition(cfg.data).scan(Path(cfg.data.root), False, p.num_workers, p.max_pixels)
    raw = usable_data(scan, p.skip_bad_rows)
    labels = encode_labels(raw.train_tags, raw.classes)
    labels, classes, dropped = drop_rare_labels(labels, raw.classes, cfg.data.min_label_count)
    if dropped:
        print(f"prepare: dropped {len(dropped)} label(s) seen < {cfg.data.min_label_count} times: {dropped}")
    with atomic_path(p.out_dir, is_dir=True) as out:
        save_prepared_index(out, raw.train_ids, raw.train_tags, raw.test_ids, labels, classes)
        build_caches(p, raw, out)
        mean, std = channel_stats(open_views(out, "train"))
        stats = {
            "n_train": len(raw.train_ids),
            "n_test": len(raw.test_ids),
            "image_size": p.image_size,
            "views": p.views,
            "mean": mean,
            "std": std,
            "skipped_train_rows": len(scan.bad_train_rows),
            "dropped_labels": dropped,
            "label_counts": {c: int(n) for c, n in zip(classes, labels.sum(axis=0), strict=True)},
        }
        save_prepare_stats(out, stats)
        save_config(cfg, out / CONFIG_FILE, sections=("data", "prepare"))
    print(f"prepare: {len(raw.train_ids)} train, {len(raw.test_ids)} test images cached at {p.image_size}px")
