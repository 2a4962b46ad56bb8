"""Prediction on new image files with a finished run: its fold checkpoints, ensemble weights and thresholds.

New images take the pipeline's own path: the decode and cached views of `prepare`, each model's sources computed
from those views (`mlic.sources`: the image itself, HOG), the normalisation, task and test-time views of
`train`, the fold average and model blend of `ensemble`, the thresholds and label limits of `thresholds`. So
`mlic predict` on the competition's test images gives the pipeline's test probabilities (tests/test_predict.py
checks it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mlic.config import PrepareConfig, select_sections
from mlic.data.images import MAX_PIXELS, file_views, readable_images
from mlic.data.labels import decode_labels
from mlic.errors import DataProblems, MlicError
from mlic.io import atomic_path
from mlic.layout import check_probabilities, load_ensemble_blend
from mlic.loop.fold_model import FoldModel, load_fold_model
from mlic.predict.ensemble import ENSEMBLES, saved_blend
from mlic.progress import track
from mlic.run import Run
from mlic.sources import SOURCES
from mlic.thresholds import binarize, load_thresholds

UPSTREAM = ("data", "prepare", "hog", "folds")  # the sections that make a fold's inputs: all folds must agree


@dataclass(frozen=True)
class Predictor:
    """A finished run's whole prediction: every fold of every model, the blend, the thresholds."""

    members: dict[str, list[FoldModel]]
    weights: np.ndarray  # (models,), or per class (models, classes)
    ensemble_method: str
    thresholds: np.ndarray
    min_labels: int
    max_labels: int
    max_pixels: int = MAX_PIXELS  # the run's params.yaml prepare.max_pixels: larger new images are refused

    @property
    def first(self) -> FoldModel:
        """Any fold model: they share classes and upstream settings (checked on loading)."""
        return next(iter(self.members.values()))[0]

    @property
    def classes(self) -> list[str]:
        """Class names, in probability-column order."""
        return self.first.classes

    @property
    def prepare(self) -> PrepareConfig:
        """The image cache settings the models were trained on, with the run's current image size limit."""
        return replace(self.first.cfg.prepare, max_pixels=self.max_pixels)

    @property
    def sources(self) -> list[str]:
        """Every source some model reads, in first-use order."""
        return list(dict.fromkeys(s for folds in self.members.values() for fm in folds for s in fm.sources))

    def probabilities(self, views: np.ndarray, batch_size: int, names: Sequence[str] | None = None) -> np.ndarray:
        """(N, C) blended probabilities of (N, views, S, S, 3) uint8 image views.

        Raises:
            MlicError: If a fold predicts NaN or values outside [0, 1], naming the model, the fold and the images
                (`names`, default: their row numbers).
        """
        arrays = {name: SOURCES.get(name).from_views(views, self.first.cfg) for name in self.sources}
        per_model = [
            np.mean([self._fold_predictions(fm, arrays, batch_size, names) for fm in folds], axis=0).astype(np.float32)
            for folds in self.members.values()
        ]  # the fold average of `ensemble` (layout.average_test)
        return ENSEMBLES.get(self.ensemble_method).combine(per_model, self.weights)

    @staticmethod
    def _fold_predictions(
        fm: FoldModel, arrays: dict[str, np.ndarray], batch_size: int, names: Sequence[str] | None
    ) -> np.ndarray:
        probs = fm.predict(arrays, batch_size)
        first = names[0] if names else "the batch"
        fix = f"check those images; if they look right, retrain the fold (`dvc repro -f train-{fm.model}-{fm.fold}`)"
        return check_probabilities(probs, first, f"model {fm.model}, fold {fm.fold}", fix, names)

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
    classes = next(iter(members.values()))[0].classes
    blend = load_ensemble_blend(run.path(run.cfg.ensemble.out_dir))  # the method auto chose; per-class weights
    method, weights = saved_blend(blend, run.ensemble_weights(), list(members), classes, chosen["ensemble"])
    return Predictor(
        members,
        weights,
        method,
        load_thresholds(run.path(run.cfg.thresholds.out_file), classes),
        chosen["min_labels"],
        chosen["max_labels"],
        run.cfg.prepare.max_pixels,
    )


def _check_consistent(models: list[FoldModel], run: Run) -> None:
    first = models[0]
    upstream = select_sections(first.cfg.to_dict(), UPSTREAM)
    for fm in models[1:]:
        if fm.classes != first.classes or select_sections(fm.cfg.to_dict(), UPSTREAM) != upstream:
            raise MlicError(
                f"checkpoints of {first.model} fold {first.fold} and {fm.model} fold {fm.fold} differ in classes "
                f"or {'/'.join(UPSTREAM)} settings", path=run.root,
                fix="rerun `dvc repro` so that every fold is up to date",
            )  # fmt: skip


def decode_views(paths: Sequence[Path], prep: PrepareConfig, workers: int) -> list[np.ndarray | MlicError]:
    """Each file's (views, S, S, 3) cached views as `prepare` builds them, or the error decoding it raised.

    Crops are seeded by prepare.seed and the file name (`images.crop_rng`), as in `prepare`, whatever the order.
    """

    def views(path: Path) -> np.ndarray | MlicError:
        try:
            return file_views(path, prep.image_size, prep.crop_views, prep.crop_scale, prep.seed, prep.max_pixels)
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
    predictor: Predictor,
    paths: list[Path],
    batch_size: int = 64,
    skip_unreadable: bool = False,
    workers: int = 4,
    checked: list[MlicError] | None = None,
) -> PredictedImages:
    """Blended probabilities of image files, `batch_size` images at a time, the next batch decoding meanwhile.

    Args:
        predictor: The finished run's models, blend and thresholds.
        paths: Image files, in output order.
        batch_size: Images per batch.
        skip_unreadable: Leave unreadable images out (listed in the result) instead of failing.
        workers: Decoding threads.
        checked: When the caller already ran `readable_images` on `paths` (as `mlic predict` does before loading any
            model), the files it skipped; None checks `paths` here first.

    Raises:
        DataProblems: For unreadable images, unless `skip_unreadable` (then they are left out and listed).
    """
    if checked is None:
        paths, skipped = readable_images(paths, skip_unreadable, workers, predictor.max_pixels)
    else:
        skipped = list(checked)
    kept: list[Path] = []
    probs: list[np.ndarray] = []
    with track(total=len(paths), desc="predict", unit="img", mininterval=1.0) as bar:
        for batch_paths, decoded in _decoded_batches(paths, predictor.prepare, batch_size, workers):
            failed = [d for d in decoded if isinstance(d, MlicError)]
            if failed and not skip_unreadable:
                raise DataProblems(failed, f"{len(failed)} image(s) cannot be decoded; nothing was written")
            skipped += failed
            good = [(p, d) for p, d in zip(batch_paths, decoded, strict=True) if not isinstance(d, MlicError)]
            if good:
                kept += [p for p, _ in good]
                names = [str(p) for p, _ in good]
                probs.append(predictor.probabilities(np.stack([d for _, d in good]), batch_size, names))
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
