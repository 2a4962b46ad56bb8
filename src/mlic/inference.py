"""Prediction on new image files with a finished run: its fold checkpoints, ensemble weights and thresholds.

New images take the pipeline's own path: the decode and cached views of `prepare`, the HOG of `hog`, the
normalisation and test-time views of `train`, the fold average and model blend of `ensemble`, the thresholds
and label limits of `thresholds`. So `mlic predict` on the competition's test images gives the pipeline's test
probabilities (tests/test_predict.py checks it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from mlic.augment import tta_views
from mlic.config import Config, HogConfig, PrepareConfig, config_from_dict
from mlic.ensemble import ENSEMBLES
from mlic.errors import DataProblems, MlicError
from mlic.hog import hog_of_views
from mlic.images import IMAGE_SUFFIXES, file_views, scan_images
from mlic.io import atomic_path
from mlic.labels import decode_labels
from mlic.models import create_model, model_inputs
from mlic.predictions import CHECKPOINT
from mlic.run import Run
from mlic.thresholds import binarize, load_thresholds
from mlic.training import CachedSamples, Runtime, expand_views, make_runtime, predict


@dataclass(frozen=True)
class FoldModel:
    """One trained fold, ready to predict: the network in eval mode, its inputs, runtime and training config."""

    model: str
    fold: int
    net: nn.Module
    inputs: tuple[str, ...]
    runtime: Runtime
    cfg: Config
    classes: list[str]

    def predict(self, arrays: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
        """(N, C) probabilities of (N, views, ...) arrays, averaged over the cached views and the TTA views."""
        n, n_views = next(iter(arrays.values())).shape[:2]
        read = {k: v for k, v in arrays.items() if k in self.inputs}
        samples = CachedSamples(read, *expand_views(np.arange(n), n_views))
        loader = DataLoader(samples, batch_size * n_views)
        views = tta_views(self.cfg.train.tta)
        return predict(self.net, loader, self.runtime, views, self.inputs, n_views, progress=False)


def load_fold_model(fold_dir: Path, device: torch.device) -> FoldModel:
    """Rebuild a fold's network from its checkpoint alone (weights, config, normalisation statistics).

    Raises:
        MlicError: If the checkpoint is missing or was written before checkpoints carried their statistics.
    """
    path = fold_dir / CHECKPOINT
    if not path.is_file():
        raise MlicError("fold checkpoint not found", path=path, fix="finish the run first: `dvc repro`")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "normalisation" not in state:
        raise MlicError(
            "checkpoint has no normalisation statistics (an older mlic wrote it)",
            path=path,
            fix="retrain it: `dvc repro` reruns the train stages after an mlic upgrade",
        )
    cfg = config_from_dict(state["config"])
    # the trained weights replace any pretrained ones, so none are downloaded or read
    model_cfg = dataclasses.replace(cfg.model(state["model"]), pretrained=False, pretrained_file=None)
    norm = state["normalisation"]
    hog = (norm["hog_mean"].numpy(), norm["hog_std"].numpy()) if "hog_mean" in norm else None
    net = create_model(model_cfg, len(state["classes"]), len(hog[0]) if hog else None)
    net.load_state_dict(state["state_dict"])
    runtime = make_runtime(cfg.train, norm["mean"], norm["std"], hog, device)
    net = net.to(device).eval()
    if runtime.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return FoldModel(state["model"], state["fold"], net, model_inputs(model_cfg.arch), runtime, cfg, state["classes"])


@dataclass(frozen=True)
class Predictor:
    """A finished run's whole prediction: every fold of every model, the blend, the thresholds."""

    members: dict[str, list[FoldModel]]
    weights: np.ndarray
    ensemble_method: str
    thresholds: np.ndarray
    min_labels: int
    max_labels: int

    @property
    def first(self) -> FoldModel:
        """Any fold model: they share classes and the prepare and hog settings (checked on loading)."""
        return next(iter(self.members.values()))[0]

    @property
    def classes(self) -> list[str]:
        """Class names, in probability-column order."""
        return self.first.classes

    @property
    def prepare(self) -> PrepareConfig:
        """The image cache settings the models were trained on."""
        return self.first.cfg.prepare

    @property
    def hog(self) -> HogConfig | None:
        """The HOG settings, when a model reads HOG."""
        needs = any("hog" in fm.inputs for folds in self.members.values() for fm in folds)
        return self.first.cfg.hog if needs else None

    def probabilities(self, views: np.ndarray, batch_size: int) -> np.ndarray:
        """(N, C) blended probabilities of (N, views, S, S, 3) uint8 image views."""
        arrays = {"image": views}
        if self.hog is not None:
            arrays["hog"] = hog_of_views(views, self.hog, desc="hog")
        per_model = [
            np.mean([fm.predict(arrays, batch_size) for fm in folds], axis=0).astype(np.float32)
            for folds in self.members.values()
        ]  # the fold average of `ensemble` (predictions.average_test)
        return ENSEMBLES.get(self.ensemble_method).combine(per_model, self.weights)

    def tags(self, probs: np.ndarray) -> list[list[str]]:
        """Each row's labels: thresholds, then the run's minimum and maximum labels per row."""
        return decode_labels(binarize(probs, self.thresholds, self.min_labels, self.max_labels), self.classes)


def load_predictor(run: Run, device: torch.device) -> Predictor:
    """Load every fold checkpoint of the run's models, with the blend and thresholds the run chose.

    Raises:
        MlicError: If an output is missing, or the checkpoints disagree on classes or preprocessing.
    """
    chosen = run.thresholds_file()  # the models, blend and label limits behind the run's submission
    members = {m: [load_fold_model(run.fold_dir(m, f), device) for f in run.cfg.train.folds] for m in chosen["models"]}
    _check_consistent([fm for folds in members.values() for fm in folds], run)
    weights = run.ensemble_weights()
    classes = next(iter(members.values()))[0].classes
    return Predictor(
        members,
        np.array([weights[m] for m in members]),
        chosen["ensemble"],
        load_thresholds(run.path(run.cfg.thresholds.out_file), classes),
        chosen["min_labels"],
        chosen["max_labels"],
    )


def _check_consistent(models: list[FoldModel], run: Run) -> None:
    first = models[0]
    for fm in models[1:]:
        same = fm.classes == first.classes and fm.cfg.prepare == first.cfg.prepare and fm.cfg.hog == first.cfg.hog
        if not same:
            raise MlicError(
                f"checkpoints of {first.model} fold {first.fold} and {fm.model} fold {fm.fold} differ in classes "
                "or prepare/hog settings", path=run.root, fix="rerun `dvc repro` so that every fold is up to date",
            )  # fmt: skip


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named on the command line: files as given, folders as their image files (sorted, not recursive).

    Raises:
        MlicError: If a path does not exist, or nothing is left to predict.
    """
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.exists():
            paths.append(item)
        else:
            raise MlicError("no such file or folder", path=item, fix="pass image files or folders of images")
    if not paths:
        raise MlicError("no image files to predict", path=", ".join(map(str, inputs)),
                        fix=f"folders are searched for {', '.join(sorted(IMAGE_SUFFIXES))} files")  # fmt: skip
    return paths


def readable_images(paths: list[Path], skip: bool, workers: int = 4) -> tuple[list[Path], list[MlicError]]:
    """Split off the files that cannot be images (missing, empty, truncated, wrong signature), cheaply, up front.

    Raises:
        DataProblems: Listing every such file, unless `skip`.
    """
    problems = scan_images(paths, decode=False, workers=workers, desc="check images")
    fix = None if skip else "replace the file, or pass --skip-unreadable"
    bad = [MlicError(msg, path=paths[i], fix=fix) for i, msg in problems.items()]
    if bad and not skip:
        raise DataProblems(bad, f"{len(bad)} of {len(paths)} image(s) cannot be read; nothing was written")
    return [p for i, p in enumerate(paths) if i not in problems], bad


def decode_views(paths: Sequence[Path], prep: PrepareConfig, workers: int) -> list[np.ndarray | MlicError]:
    """Each file's (views, S, S, 3) cached views as `prepare` builds them, or the error decoding it raised.

    Crops are seeded by prepare.seed and the file name (`images.crop_rng`), as in `prepare`, whatever the order.
    """

    def views(path: Path) -> np.ndarray | MlicError:
        try:
            return file_views(path, prep.image_size, prep.crop_views, prep.crop_scale, prep.seed)
        except MlicError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(views, paths))


@dataclass(frozen=True)
class PredictedImages:
    """The images predicted (in input order), their probabilities, and the files skipped as unreadable."""

    paths: list[Path]
    probs: np.ndarray
    skipped: list[MlicError]


def predict_files(
    predictor: Predictor, paths: list[Path], batch_size: int = 64, skip_unreadable: bool = False, workers: int = 4
) -> PredictedImages:
    """Blended probabilities of image files, `batch_size` images at a time, the next batch decoding meanwhile.

    Raises:
        DataProblems: For unreadable images, unless `skip_unreadable` (then they are left out and listed).
    """
    paths, skipped = readable_images(paths, skip_unreadable, workers)
    kept: list[Path] = []
    probs: list[np.ndarray] = []
    with tqdm(total=len(paths), desc="predict", unit="img", mininterval=1.0) as bar:
        for batch_paths, decoded in _decoded_batches(paths, predictor.prepare, batch_size, workers):
            failed = [d for d in decoded if isinstance(d, MlicError)]
            if failed and not skip_unreadable:
                raise DataProblems(failed, f"{len(failed)} image(s) cannot be decoded; nothing was written")
            skipped += failed
            good = [(p, d) for p, d in zip(batch_paths, decoded, strict=True) if not isinstance(d, MlicError)]
            if good:
                kept += [p for p, _ in good]
                probs.append(predictor.probabilities(np.stack([d for _, d in good]), batch_size))
            bar.update(len(batch_paths))
    if not kept:
        raise DataProblems(skipped, f"none of the {len(skipped)} image(s) can be read; nothing was written")
    return PredictedImages(kept, np.concatenate(probs), skipped)


def _decoded_batches(
    paths: list[Path], prep: PrepareConfig, batch_size: int, workers: int
) -> Iterator[tuple[list[Path], list[np.ndarray | MlicError]]]:
    """Batches of paths with their decoded views; the next batch decodes in a thread while this one predicts."""
    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(max_workers=1) as prefetch:
        pending = None
        for start in starts:
            current = pending or prefetch.submit(decode_views, paths[start : start + batch_size], prep, workers)
            following = start + batch_size
            pending = (
                prefetch.submit(decode_views, paths[following : following + batch_size], prep, workers)
                if following < len(paths)
                else None
            )
            yield paths[start : start + batch_size], current.result()


def predictions_frame(result: PredictedImages, predictor: Predictor) -> pd.DataFrame:
    """One row per image: its path, its space-separated tags, and one probability column per class."""
    tags = [" ".join(t) for t in predictor.tags(result.probs)]
    frame = pd.DataFrame({"image": [str(p) for p in result.paths], "tags": tags})
    probs = pd.DataFrame(result.probs.round(6), columns=predictor.classes)
    return pd.concat([frame, probs], axis=1)


def write_predictions(frame: pd.DataFrame, path: str | Path) -> None:
    """Write the predictions CSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
