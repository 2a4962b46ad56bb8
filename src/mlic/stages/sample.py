"""Stage `sample`: write an embedded synthetic competition in the exact Kaggle layout of `sample.competition`.

Generators are registered by competition name: `planet` (Planet-like JPEG chips, the default) and `imet2019`
(iMet-like PNG photos of varied sizes). Each writes into the stage's output folder and says what it wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import pandas as pd

from mlic.config import Config, SampleConfig
from mlic.data.synthetic.imet import ImetSpec, imet_image_id, imet_spec, make_imet_image
from mlic.data.synthetic.planet import make_chip
from mlic.io import atomic_path
from mlic.progress import track
from mlic.registry import Registry

# sample.competition -> writer(config, output folder) returning a one-line summary of what it wrote.
SAMPLES: Registry[Callable[[SampleConfig, Path], str]] = Registry("sample competition", "sample.competition")
PNG_COMPRESSION = 6  # fixed zlib level: the same pixels always give the same PNG bytes


def write_chip(job: tuple[int, Path], seed: int, size: int, quality: int) -> str:
    """Render global chip number `job[0]`, save it as the JPEG `job[1]`, and return its space-separated tags."""
    index, path = job
    tags, image = make_chip(seed, index, size)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    path.write_bytes(data.tobytes())
    return " ".join(tags)


def write_split(cfg: SampleConfig, out: Path, split: str, first: int, count: int) -> tuple[list[str], list[str]]:
    """Write one split's chips as `<split>-jpg/<split>_<i>.jpg`; returns their ids and tags.

    Chip i of the split is global chip `first + i`, so train and test never share a chip.
    """
    folder = out / f"{split}-jpg"
    folder.mkdir(parents=True)
    ids = [f"{split}_{i}" for i in range(count)]
    jobs = [(first + i, folder / f"{name}.jpg") for i, name in enumerate(ids)]
    work = partial(write_chip, seed=cfg.seed, size=cfg.image_size, quality=cfg.jpeg_quality)
    with ProcessPoolExecutor(max_workers=cfg.num_workers) as pool:
        chips = pool.map(work, jobs, chunksize=64)
        tags = list(track(chips, f"sample {split}", count, unit="chip", mininterval=1.0))
    return ids, tags


@SAMPLES.register("planet")
def write_planet(s: SampleConfig, out: Path) -> str:
    """Generate train_v2.csv, train-jpg/, test-jpg/, sample_submission_v2.csv and solution.csv."""
    train_ids, train_tags = write_split(s, out, "train", 0, s.n_train)
    test_ids, test_tags = write_split(s, out, "test", s.n_train, s.n_test)
    pd.DataFrame({"image_name": train_ids, "tags": train_tags}).to_csv(out / "train_v2.csv", index=False)
    # As on Kaggle, the sample submission's tags are placeholders; solution.csv holds the true test tags.
    placeholder = ["primary clear"] * len(test_ids)
    pd.DataFrame({"image_name": test_ids, "tags": placeholder}).to_csv(out / "sample_submission_v2.csv", index=False)
    pd.DataFrame({"image_name": test_ids, "tags": test_tags}).to_csv(out / "solution.csv", index=False)
    return f"{s.n_train} train and {s.n_test} test chips of {s.image_size}px"


def write_imet_image(job: tuple[int, Path], spec: ImetSpec, seed: int, min_side: int, max_side: int) -> str:
    """Render global image number `job[0]`, save it as the PNG `job[1]`, and return its space-separated ids."""
    index, path = job
    attributes, image = make_imet_image(spec, seed, index, min_side, max_side)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path.write_bytes(data.tobytes())
    return " ".join(str(a) for a in attributes)


def write_imet_split(
    s: SampleConfig, spec: ImetSpec, out: Path, split: str, first: int, count: int
) -> tuple[list[str], list[str]]:
    """Write one split's photos as `<split>/<id>.png`; returns their ids and attribute ids, sorted by id (as Kaggle).

    Image i of the split is global image `first + i`, so train and test never share an image.
    """
    folder = out / split
    folder.mkdir(parents=True)
    ids = [imet_image_id(s.seed, first + i) for i in range(count)]
    jobs = [(first + i, folder / f"{name}.png") for i, name in enumerate(ids)]
    work = partial(write_imet_image, spec=spec, seed=s.seed, min_side=s.imet.min_side, max_side=s.imet.max_side)
    with ProcessPoolExecutor(max_workers=s.num_workers) as pool:
        images = pool.map(work, jobs, chunksize=64)
        labels = list(track(images, f"sample {split}", count, unit="image", mininterval=1.0))
    rows = sorted(zip(ids, labels, strict=True))
    return [r[0] for r in rows], [r[1] for r in rows]


def _id_frame(ids: Sequence[str], labels: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(ids), "attribute_ids": list(labels)})


@SAMPLES.register("imet2019")
def write_imet(s: SampleConfig, out: Path) -> str:
    """Generate labels.csv, train.csv, train/, test/, sample_submission.csv and solution.csv."""
    spec = imet_spec(s.imet.cultures, s.imet.tags, s.imet.tail_ratio, s.seed)
    train_ids, train_labels = write_imet_split(s, spec, out, "train", 0, s.n_train)
    test_ids, test_labels = write_imet_split(s, spec, out, "test", s.n_train, s.n_test)
    names = pd.DataFrame({"attribute_id": range(len(spec.names)), "attribute_name": spec.names})
    names.to_csv(out / "labels.csv", index=False)
    _id_frame(train_ids, train_labels).to_csv(out / "train.csv", index=False)
    # As on Kaggle ("0 1 2"), the sample submission's ids are placeholders; solution.csv holds the true test ids.
    placeholder = " ".join(str(a) for a in range(min(3, len(spec.names))))
    _id_frame(test_ids, [placeholder] * len(test_ids)).to_csv(out / "sample_submission.csv", index=False)
    _id_frame(test_ids, test_labels).to_csv(out / "solution.csv", index=False)
    sides = f"{s.imet.min_side}-{s.imet.max_side}px"
    return f"{s.n_train} train and {s.n_test} test photos of {sides}, {spec.n_cultures} cultures, {s.imet.tags} tags"


def main(cfg: Config) -> None:
    """Write the synthetic competition named by `sample.competition` to `sample.out_dir`, replacing it whole."""
    s = cfg.sample
    write = SAMPLES.get(s.competition)  # an unknown name fails here, before the output folder is touched
    with atomic_path(s.out_dir, is_dir=True) as out:
        summary = write(s, out)
    print(f"sample: wrote {summary} to {s.out_dir}")
