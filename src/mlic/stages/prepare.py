"""Stage `prepare`: read and check the competition, build the label matrix and the resized uint8 image caches."""

from __future__ import annotations

from pathlib import Path

from mlic.config import Config, save_config
from mlic.data.competitions import RawData, Scan, get_competition
from mlic.data.images import build_image_cache, channel_stats, open_image_cache
from mlic.data.labels import drop_rare_labels, encode_labels
from mlic.io import atomic_path
from mlic.layout import CONFIG_FILE, image_cache_files, save_prepare_stats, save_prepared_index


def usable_data(scan: Scan, skip_bad_rows: bool) -> RawData:
    """The scanned data; refuses a dataset with problems unless bad training rows may be skipped (and says so)."""
    raw = scan.usable(skip_bad_rows)
    if scan.bad_train_rows:
        print(f"prepare: skipped {len(scan.bad_train_rows)} training row(s) with problems (prepare.skip_bad_rows):")
        print(scan.error())
    return raw


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
        views = {"crops": p.crop_views, "crop_scale": p.crop_scale, "seed": p.seed, "max_pixels": p.max_pixels}
        train_cache, test_cache = image_cache_files(out)
        build_image_cache(raw.train_paths, p.image_size, train_cache, p.num_workers, "cache train", **views)
        build_image_cache(raw.test_paths, p.image_size, test_cache, p.num_workers, "cache test", **views)
        mean, std = channel_stats(open_image_cache(train_cache))
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
