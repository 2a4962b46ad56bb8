"""Prepare-stage cost on real data: planet-32px (20k images) end to end, and the label matrix at iMet scale.

Prints JSON: wall seconds and peak resident memory of `mlic prepare` on ../shared/data/planet-32px, the cache
build rate on the real 256 px Planet chips (resized to 128), and the seconds to parse, encode and bit-pack the
real iMet train.csv (109,237 x 1,103).
Usage: .venv/bin/python benchmarks/prepare.py [--image-size 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def bench_prepare(image_size: int, workers: int) -> dict:
    """Run `mlic prepare` on planet-32px in a child process; its wall time and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="mlic-prepare-") as tmp:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["data"].update(competition="planet", root=str(SHARED / "planet-32px"))
        params["prepare"].update(out_dir=str(Path(tmp) / "prepare"), image_size=image_size, num_workers=workers)
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(params))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlic.cli", "prepare"], cwd=tmp, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        stats = json.loads((Path(tmp) / "prepare" / "stats.json").read_text())
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB
    images = stats["n_train"] + stats["n_test"]
    return {
        "images": images,
        "image_size": image_size,
        "workers": workers,
        "seconds": round(seconds, 2),
        "images_per_second": round(images / seconds, 1),
        "peak_rss_mib": round(peak_mib, 1),
    }


def bench_full_res_cache(image_size: int, workers: int, repeat: int = 40) -> dict:
    """Cache build throughput on the real 256 px CMYK Planet chips (repeated), projected to all of Planet."""
    from mlic.data.images import build_image_cache

    chips = sorted((SHARED / "planet" / "train-jpg").glob("*.jpg")) * repeat
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_image_cache(chips, image_size, Path(tmp) / "cache.npy", workers, desc="cache 256px chips")
        seconds = time.perf_counter() - start
    rate = len(chips) / seconds
    return {
        "images": len(chips),
        "source_px": 256,
        "image_size": image_size,
        "workers": workers,
        "images_per_second": round(rate, 1),
        "projected_full_planet_minutes": round(101670 / rate / 60, 1),
    }


def bench_imet_labels() -> dict:
    """Parse the real iMet train.csv, build the label matrix, drop rare labels and bit-pack it."""
    from mlic.config import DataConfig
    from mlic.data.competitions import get_competition
    from mlic.data.labels import drop_rare_labels, encode_labels
    from mlic.layout import load_labels, save_labels

    comp = get_competition(DataConfig(competition="imet2019"))
    root = SHARED / "imet2019"
    start = time.perf_counter()
    vocabulary = comp.vocabulary(root)
    from mlic.data.competitions.base import Scan

    ids, tags, _ = comp.read_train(root, Scan(root), vocabulary)
    parsed = time.perf_counter()
    labels = encode_labels(tags, vocabulary)
    kept, classes, dropped = drop_rare_labels(labels, vocabulary, 3)
    encoded = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        save_labels(Path(tmp) / "labels.npz", kept)
        size = (Path(tmp) / "labels.npz").stat().st_size
        assert (load_labels(Path(tmp) / "labels.npz") == kept).all()
    packed = time.perf_counter()
    return {
        "rows": len(ids),
        "labels": len(vocabulary),
        "kept_labels": len(classes),
        "dropped_labels": len(dropped),
        "parse_seconds": round(parsed - start, 3),
        "encode_and_drop_seconds": round(encoded - parsed, 3),
        "pack_roundtrip_seconds": round(packed - encoded, 3),
        "dense_mib": round(kept.nbytes / 2**20, 1),
        "packed_mib": round(size / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not (SHARED / "planet-32px").is_dir():
        sys.exit(f"real data not found under {SHARED} (see its README)")
    result = {
        "planet_32px_prepare": bench_prepare(args.image_size, args.workers),
        "planet_256px_cache": bench_full_res_cache(128, args.workers),
        "imet_labels": bench_imet_labels(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
