"""Input-pipeline throughput without a model: can the loader feed a GPU?

For each image size (--sizes) and augmentation preset (--augments), over a memory-mapped uint8 cache laid out as
`prepare` writes it ((N, views, S, S, 3), made once under --cache from the real 256 px Planet chips, resized):
- `read_cold` / `read_warm`: items read from the memory-mapped cache in the training order, after the file's pages
  were dropped from the page cache (`posix_fadvise(DONTNEED)`) and again with them cached: the disk's share;
- `augment_one_core`: the augmentation alone, one OpenCV thread, in this process: the per-core ceiling;
- `loader_<k>`: `mlic train`'s loader (`CachedSamples`, the seeded batch sampler, `loader_options`) with k workers,
  batches collated and, on CUDA, pinned: what the training loop receives. At 0 workers every item is read,
  augmented and collated in the main process, between steps; `serialisation` compares that with one worker, which
  pays pickling batches across processes instead.
- `transfer` (CUDA only): pinned batches copied to the device.

`per_worker` is `loader_<k> / k` for each k >= 1, and `workers_for_target` how many workers would feed --target
images/s (3,000: ResNet50 at 256 px, bf16, on an H100) at the best per-worker rate measured, capped by nothing:
on a box with fewer free cores, that many are not there.

Prints JSON and writes it to benchmarks/results/loader.json (--out).

Usage:
    .venv/bin/python benchmarks/loader.py                                 # 256 and 384 px, 0 1 2 workers
    .venv/bin/python benchmarks/loader.py --sizes 64 --images 256 --batches 4 --workers 0 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from mlic.config import TrainConfig
from mlic.data.images import read_image
from mlic.loop.batches import CachedSamples
from mlic.loop.runtime import loader_options
from mlic.train.augment import create_augmentation
from mlic.train.sampling import make_train_loader

REPO = Path(__file__).resolve().parents[1]
CHIPS = REPO.parent / "shared" / "data" / "planet" / "train-jpg"
NUM_CLASSES = 17
OPENCV_THREADS = cv2.getNumThreads()  # what `mlic train` augments with at 0 workers, until a loader forks workers


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 384], help="cached image sides")
    p.add_argument("--augments", nargs="+", default=["satellite", "photo"], help="train.augment presets")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="train.num_workers values")
    p.add_argument("--images", type=int, default=2048, help="images in each cache")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=16, help="timed batches per loader measurement")
    p.add_argument("--target", type=float, default=3000.0, help="images/s the GPU consumes")
    p.add_argument("--cache", type=Path, default=Path("/tmp/mlic-loader"), help="where the caches are made once")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "loader.json")
    return p.parse_args()


def make_cache(folder: Path, size: int, n: int) -> Path:
    """The path of an (n, 1, size, size, 3) uint8 cache (.npy) of the real Planet chips, resized and repeated."""
    path = folder / f"images-{size}-{n}.npy"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        chips = [cv2.resize(read_image(p), (size, size), interpolation=cv2.INTER_AREA) for p in sorted(CHIPS.glob("*"))]
        if not chips:
            raise SystemExit(f"no chips under {CHIPS}: the real Planet chips are read from ../shared/data/planet")
        tmp = path.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, "w+", np.uint8, (n, 1, size, size, 3))
        for i in range(n):
            out[i, 0] = np.rot90(chips[i % len(chips)], i // len(chips) % 4)  # not 27 identical pages
        out.flush()
        del out
        tmp.rename(path)
    return path


def read_rates(path: Path) -> dict[str, float]:
    """Items per second copied out of the memory-mapped cache in a shuffled order: cold, then warm.

    Cold: the file's pages are written back and dropped from the page cache first (`posix_fadvise(DONTNEED)`, which
    spares pages some process maps, so no map of the file is alive here then), so the reads come from the disk.
    """
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    rates = {}
    for name in ("read_cold", "read_warm"):
        images = np.load(path, mmap_mode="r")
        order = np.random.default_rng(0).permutation(len(images))
        start = time.perf_counter()
        for i in order:
            np.array(images[i, 0])
        rates[name] = round(len(order) / (time.perf_counter() - start), 1)
        del images
    return rates


def augment_rate(images: np.ndarray, augment: str, size: int, count: int) -> float:
    """Items per second through the augmentation alone (each re-seeded, as in training), one OpenCV thread."""
    transform = create_augmentation(augment, size, 0)
    warm = [np.array(images[i % len(images), 0]) for i in range(count)]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        start = time.perf_counter()
        for seed, image in enumerate(warm):
            transform.set_random_seed(seed)
            transform(image=image)
        return count / (time.perf_counter() - start)
    finally:
        cv2.setNumThreads(threads)


def loader_rate(images: np.ndarray, augment: str, workers: int, args: argparse.Namespace) -> tuple[float, list]:
    """Images per second out of `mlic train`'s training loader with `workers` processes, and the batches' tensors."""
    n, size = len(images), images.shape[2]
    labels = (np.random.default_rng(0).random((n, NUM_CLASSES)) < 0.2).astype(np.uint8)
    cfg = TrainConfig(batch_size=args.batch_size, augment=augment, num_workers=workers)
    if not workers:  # a loader with workers left this process at one OpenCV thread (`loader_options`)
        cv2.setNumThreads(OPENCV_THREADS)
    dataset = CachedSamples({"image": images}, np.arange(n), np.zeros(n, dtype=int), labels,
                            create_augmentation(augment, size, cfg.seed))  # fmt: skip
    loader = make_train_loader(dataset, labels, cfg, **loader_options(cfg))
    batches, got = iter(loader), []
    for _ in range(min(2, len(loader) - args.batches)):  # workers started, their first batches in flight
        next(batches)
    start = time.perf_counter()
    for _ in range(args.batches):
        got.append(next(batches)["image"])
    rate = args.batches * args.batch_size / (time.perf_counter() - start)
    del batches, loader
    return rate, got


def transfer_rate(batches: list[torch.Tensor]) -> float | None:
    """Images per second of pinned batches copied to the GPU (None without CUDA)."""
    if not torch.cuda.is_available():
        return None
    pinned = [b.pin_memory() for b in batches]
    torch.cuda.synchronize()
    start = time.perf_counter()
    for b in pinned:
        b.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    return sum(len(b) for b in pinned) / (time.perf_counter() - start)


def measure(images: np.ndarray, augment: str, args: argparse.Namespace) -> dict:
    """The augmentation's and the loader's rates for one cache and one augmentation preset."""
    record = {"image_size": images.shape[2], "augment": augment,
              "augment_one_core": round(augment_rate(images, augment, images.shape[2], 512), 1)}  # fmt: skip
    batches = []
    for k in args.workers:
        record[f"loader_{k}"], batches = loader_rate(images, augment, k, args)
        record[f"loader_{k}"] = round(record[f"loader_{k}"], 1)
    per_worker = {k: round(record[f"loader_{k}"] / k, 1) for k in args.workers if k >= 1}
    best = max([*per_worker.values(), 0.0])
    record |= {"per_worker": per_worker, "workers_for_target": math.ceil(args.target / best) if best else None}
    if 0 in args.workers and 1 in args.workers:
        record["serialisation"] = round(record["loader_1"] / record["loader_0"], 3)  # > 1: a worker pays off
    record["transfer"] = transfer_rate(batches)
    return record


def main() -> None:
    args = parse_args()
    results = []
    for size in args.sizes:
        path = make_cache(args.cache, size, args.images)
        reads = read_rates(path)  # the disk's share, whatever the augmentation
        images = np.load(path, mmap_mode="r")
        results += [reads | measure(images, augment, args) for augment in args.augments]
    setup = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
             "usable_cores": len(os.sched_getaffinity(0)), "batch_size": args.batch_size, "images": args.images,
             "timed_batches": args.batches, "target_images_per_s": args.target,
             "pinned": torch.cuda.is_available(), "torch": torch.__version__}  # fmt: skip
    out = {"setup": setup, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
