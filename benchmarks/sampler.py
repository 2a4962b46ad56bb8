"""Stratified mini-batches against plain shuffled ones: label-frequency deviation and build time per epoch.

On the real planet-32px labels (all rows, and the 2/3 training split of a 3-fold multilabel-stratified split),
at each batch size: the mean absolute deviation of per-batch label frequencies from the set's
(`mlic.train.sampling.batch_label_deviation`) for random batches and for `StratifiedBatchSampler`, averaged over
--epochs epochs, their ratio, the seconds per epoch to build the stratified batches, and the same deviation for
the sequential textbook algorithm (`reference_batches`, one sample at a time) to show the bulk dealing matches
it. Then iMet-scale timing on imet2019/train.csv: sampler set-up, seconds per epoch (plain and oversampled) and
the deviations. Prints JSON.
Usage: .venv/bin/python benchmarks/sampler.py [--data ../shared/data] [--epochs 5] [--batch-sizes 32 64 128]
       [--reference-epochs 2] [--skip-imet]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mlic.data.competitions.planet import PLANET_TAGS
from mlic.data.folds import assign_folds
from mlic.data.labels import encode_labels
from mlic.train.sampling import StratifiedBatchSampler, batch_label_deviation, random_batches, reference_batches

REPO = Path(__file__).resolve().parents[1]
IMET_CLASSES = 1103


def planet_labels(data: Path) -> np.ndarray:
    frame = pd.read_csv(data / "planet-32px" / "train_v2.csv")
    return encode_labels([tags.split() for tags in frame["tags"]], PLANET_TAGS)


def imet_labels(data: Path) -> np.ndarray:
    frame = pd.read_csv(data / "imet2019" / "train.csv")
    tag_lists = [ids.split() for ids in frame["attribute_ids"]]
    return encode_labels(tag_lists, [str(c) for c in range(IMET_CLASSES)])


def compare(labels: np.ndarray, batch_size: int, epochs: int, reference_epochs: int) -> dict:
    sampler = StratifiedBatchSampler(labels, batch_size, seed=0)
    seconds, stratified = [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        batches = sampler.epoch_batches(epoch)
        seconds.append(time.perf_counter() - start)
        stratified.append(batch_label_deviation(labels, batches))
    shuffled = [batch_label_deviation(labels, random_batches(len(labels), batch_size, seed=e)) for e in range(epochs)]
    start = time.perf_counter()
    reference = [
        batch_label_deviation(labels, reference_batches(labels, batch_size, e)) for e in range(reference_epochs)
    ]
    reference_seconds = (time.perf_counter() - start) / max(reference_epochs, 1)
    return {
        "batches": len(sampler),
        "random_mad": round(float(np.mean(shuffled)), 5),
        "stratified_mad": round(float(np.mean(stratified)), 5),
        "ratio": round(float(np.mean(stratified) / np.mean(shuffled)), 3),
        "seconds_per_epoch": round(float(np.median(seconds)), 4),
        "reference_mad": round(float(np.mean(reference)), 5) if reference else None,
        "reference_seconds_per_epoch": round(reference_seconds, 3) if reference else None,
    }


def imet_timing(labels: np.ndarray, batch_size: int, epochs: int) -> dict:
    out = {"rows": len(labels), "labels": labels.shape[1], "batch_size": batch_size}
    for name, power in (("plain", 0.0), ("oversample_0.5", 0.5)):
        start = time.perf_counter()
        sampler = StratifiedBatchSampler(labels, batch_size, seed=0, oversample_power=power)
        out[f"{name}_setup_seconds"] = round(time.perf_counter() - start, 3)
        seconds = []
        for epoch in range(epochs):
            start = time.perf_counter()
            batches = sampler.epoch_batches(epoch)
            seconds.append(time.perf_counter() - start)
        out[f"{name}_seconds_per_epoch"] = round(float(np.median(seconds)), 3)
        if power == 0:
            out["stratified_mad"] = round(batch_label_deviation(labels, batches), 6)
    out["random_mad"] = round(batch_label_deviation(labels, random_batches(len(labels), batch_size, 0)), 6)
    out["ratio"] = round(out["stratified_mad"] / out["random_mad"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--reference-epochs", type=int, default=2)
    parser.add_argument("--skip-imet", action="store_true")
    args = parser.parse_args()

    labels = planet_labels(args.data)
    train = labels[assign_folds(labels, 3, seed=0) != 0]
    result = {"planet-32px": {}}
    for name, subset in (("all", labels), ("train_2of3", train)):
        runs = {str(bs): compare(subset, bs, args.epochs, args.reference_epochs) for bs in args.batch_sizes}
        result["planet-32px"][name] = {"rows": len(subset), "by_batch_size": runs}
    if not args.skip_imet:
        result["imet2019"] = imet_timing(imet_labels(args.data), 64, epochs=3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
