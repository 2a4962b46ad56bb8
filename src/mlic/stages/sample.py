"""Stage `sample`: write the embedded synthetic Planet-like competition, in the exact Kaggle layout."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import pandas as pd
from tqdm import tqdm

from mlic.config import Config, SampleConfig
from mlic.data.synthetic import make_chip
from mlic.io import atomic_path


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
        tags = list(tqdm(chips, total=count, desc=f"sample {split}", unit="chip", mininterval=1.0))
    return ids, tags


def main(cfg: Config) -> None:
    """Generate train_v2.csv, train-jpg/, test-jpg/, sample_submission_v2.csv and solution.csv."""
    s = cfg.sample
    with atomic_path(s.out_dir, is_dir=True) as out:
        train_ids, train_tags = write_split(s, out, "train", 0, s.n_train)
        test_ids, test_tags = write_split(s, out, "test", s.n_train, s.n_test)
        pd.DataFrame({"image_name": train_ids, "tags": train_tags}).to_csv(out / "train_v2.csv", index=False)
        # As on Kaggle, the sample submission's tags are placeholders; solution.csv holds the true test tags.
        placeholder = ["primary clear"] * len(test_ids)
        pd.DataFrame({"image_name": test_ids, "tags": placeholder}).to_csv(
            out / "sample_submission_v2.csv", index=False
        )
        pd.DataFrame({"image_name": test_ids, "tags": test_tags}).to_csv(out / "solution.csv", index=False)
    print(f"sample: wrote {s.n_train} train and {s.n_test} test chips of {s.image_size}px to {s.out_dir}")
