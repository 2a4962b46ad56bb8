"""The on-disk layout of every stage output: the file names inside each output folder, and how each is saved and loaded.

The folders themselves come from params.yaml (`prepare.out_dir`, `train.out_dir`, ...); the names inside them are
spelled here and nowhere else, so stages, `mlic predict`, notebooks and the report read what the stages wrote
through the same functions. Writers are atomic: an output folder or file appears whole or not at all.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlic.config import Config, save_config, write_params
from mlic.errors import MlicError
from mlic.io import atomic_path, write_json, write_text

CONFIG_FILE = "config.yaml"  # in every output folder: the resolved config sections the stage read

# --- prepare: label matrix, ids, uint8 image caches, channel statistics ---------------------------------------
CLASSES_FILE = "classes.json"
TRAIN_INDEX = "train.csv"
TEST_INDEX = "test.csv"
LABELS_FILE = "labels.npz"
TRAIN_IMAGES = "train_images.npy"
TEST_IMAGES = "test_images.npy"
CROP_FILES = ("{split}_plain_views.npy", "{split}_crop_sources.npy", "{split}_crop_offsets.npy")  # crop_store: source
PREPARE_STATS = "stats.json"

# --- hog ------------------------------------------------------------------------------------------------------
TRAIN_HOG = "train_hog.npy"
TEST_HOG = "test_hog.npy"
HOG_STATS = "hog_stats.npz"

# proposals: (N, views, R, 5) boxes of the train and test views
TRAIN_BOXES = "train_boxes.npy"
TEST_BOXES = "test_boxes.npy"

# --- train: one model's fold folder, and its resume state while it trains -------------------------------------
CHECKPOINT = "model.pt"
OOF_FILE = "oof.npz"
TEST_FILE = "test.npy"
FOLD_METRICS_FILE = "metrics.json"
LIVE_DIR = "live"  # DVCLive's folder: per-epoch curves under plots/metrics/<name>.tsv
RESUME_FILE = "last.pt"

# --- ensemble, submit, evaluate ----------------------------------------------------------------------------------
WEIGHTS_FILE = "weights.json"
BLEND_FILE = "blend.json"  # the blend method used and why, candidates' nested scores, per-class weights
SUBMIT_PREDICTIONS = "test_predictions.npz"
METRICS_FILE = "metrics.json"
PER_CLASS_FILE = "per_class.csv"
CURVE_FILE = "threshold_curve.csv"
CURVE_PNG = "threshold_curve.png"
CLASS_CURVES_PNG = "class_threshold_curves.png"
PR_PNG = "pr_curves.png"
TRAINING_PNG = "training_curves.png"
SPREAD_PNG = "class_spread.png"
REPORT_FILE = "report.md"


def read_json(path: str | Path) -> Any:
    """A JSON output of the pipeline, or an error saying to run the pipeline first."""
    path = Path(path)
    if not path.is_file():
        raise MlicError("pipeline output not found", path=path, fix="run `dvc repro` in the project folder first")
    return json.loads(path.read_text())


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a table atomically, without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_labels(path: str | Path, labels: np.ndarray) -> None:
    """Store a binary matrix bit-packed (8 labels a byte): iMet's matrix takes 15 MB instead of 120 MB."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, bits=np.packbits(labels.astype(bool), axis=1), n_classes=labels.shape[1])


def load_labels(path: str | Path) -> np.ndarray:
    """Read a matrix written by `save_labels` as dense uint8."""
    with np.load(path) as data:
        return np.unpackbits(data["bits"], axis=1, count=int(data["n_classes"]))


@dataclass(frozen=True)
class Prepared:
    """Everything training needs from `prepare`, with the image caches memory-mapped (nothing is decoded)."""

    classes: list[str]
    train_ids: list[str]
    labels: np.ndarray
    train_images: np.ndarray | CropViews
    test_ids: list[str]
    test_images: np.ndarray | CropViews
    mean: list[float]
    std: list[float]


def save_prepared_index(out: Path, train_ids: Sequence[str], train_tags: Sequence[Sequence[str]],
                        test_ids: Sequence[str], labels: np.ndarray, classes: Sequence[str]) -> None:  # fmt: skip
    """Label matrix, class list and id tables (CSV, so notebooks can read them directly) into `out`."""
    save_labels(out / LABELS_FILE, labels)
    write_text(out / CLASSES_FILE, json.dumps(list(classes), indent=1) + "\n")
    tags = [" ".join(t) for t in train_tags]
    write_csv(pd.DataFrame({"id": list(train_ids), "tags": tags}), out / TRAIN_INDEX)
    write_csv(pd.DataFrame({"id": list(test_ids)}), out / TEST_INDEX)


def image_cache_files(out: Path) -> tuple[Path, Path]:
    """The train and test image caches inside `prepare`'s folder (filled in place by `build_image_cache`)."""
    return out / TRAIN_IMAGES, out / TEST_IMAGES


def crop_source_files(out: Path, split: str) -> tuple[Path, Path, Path]:
    """One split's plain views, crop sources and crop offsets in `prepare`'s folder (`prepare.crop_store: source`)."""
    return tuple(out / name.format(split=split) for name in CROP_FILES)


def save_prepare_stats(out: Path, stats: dict) -> None:
    """The counts, channel statistics and label counts `prepare` measured."""
    write_text(out / PREPARE_STATS, json.dumps(stats, indent=2) + "\n")


class CropViews:
    """The (N, 1 + crops, size, size, 3) uint8 views of a `prepare.crop_store: source` cache, crops cut when read.

    The cache keeps, per image, its plain view (view 0), the resize its crops come from (side size / crop_scale) and
    each crop's (top, left): a crop is that window of the source, the very pixels a `crop_store: views` cache holds.
    Read-only, and indexed like the array it stands for: `[rows]` or `[rows, views]`, each an int, a slice or an
    integer array; `reshape(-1, size, size, 3)` gives the flat (N * views) sequence the HOG stage reads.
    """

    def __init__(self, plain: np.ndarray, sources: np.ndarray, offsets: np.ndarray):
        self.plain, self.sources, self.offsets, self.size = plain, sources, offsets, plain.shape[1]
        self.shape = (len(plain), 1 + offsets.shape[1], *plain.shape[1:])
        self.dtype, self.ndim = np.dtype(np.uint8), 5

    def __len__(self) -> int:
        return self.shape[0]

    def view(self, row: int, view: int) -> np.ndarray:
        """One (size, size, 3) view."""
        if view == 0:
            return np.array(self.plain[row])
        top, left = (int(v) for v in self.offsets[row, view - 1])
        return np.array(self.sources[row, top : top + self.size, left : left + self.size])

    def __getitem__(self, key) -> np.ndarray:
        rows, views = key if isinstance(key, tuple) else (key, slice(None))
        row_ids, view_ids = np.arange(self.shape[0])[rows], np.arange(self.shape[1])[views]
        out = np.empty((np.size(row_ids), np.size(view_ids), *self.shape[2:]), dtype=np.uint8)
        for i, row in enumerate(np.ravel(row_ids)):
            for j, view in enumerate(np.ravel(view_ids)):
                out[i, j] = self.view(int(row), int(view))
        return out.reshape(*np.shape(row_ids), *np.shape(view_ids), *self.shape[2:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)

    def reshape(self, *shape: int) -> FlatViews:
        """Only `(-1, size, size, 3)`: every (row, view) in row-major order, as `FlatViews`."""
        if tuple(shape[1:]) != self.shape[2:] or shape[0] not in (-1, self.shape[0] * self.shape[1]):
            raise ValueError(f"CropViews reshapes to (-1, {', '.join(map(str, self.shape[2:]))}) only, not {shape}")
        return FlatViews(self)


class FlatViews:
    """The views of a `CropViews` as one (N * views, size, size, 3) sequence; `[i]`, `[start:stop]` or `[indices]`."""

    def __init__(self, views: CropViews):
        self.views = views
        self.shape = (views.shape[0] * views.shape[1], *views.shape[2:])
        self.dtype, self.ndim = views.dtype, 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        index = np.arange(self.shape[0])[key]
        rows, views = np.divmod(np.ravel(index), self.views.shape[1])
        out = np.stack([self.views.view(int(r), int(v)) for r, v in zip(rows, views, strict=True)]) if len(rows) else (
            np.empty((0, *self.shape[1:]), dtype=np.uint8))  # fmt: skip
        return out.reshape(*np.shape(index), *self.shape[1:])


def open_views(out: Path, split: str) -> np.ndarray | CropViews:
    """One split's cached views: the memory-mapped images file, or the `CropViews` of a crop-source cache."""
    images = out / (TRAIN_IMAGES if split == "train" else TEST_IMAGES)
    if images.is_file():
        return np.load(images, mmap_mode="r")
    return CropViews(*(np.load(path, mmap_mode="r") for path in crop_source_files(out, split)))


def load_prepared(out_dir: str | Path) -> Prepared:
    """Open the prepare stage's outputs (images as read-only memory maps)."""
    out = Path(out_dir)
    if not (out / PREPARE_STATS).is_file():
        raise MlicError("prepared data not found", path=out, fix="run `mlic prepare` (or `dvc repro prepare`) first")
    stats = json.loads((out / PREPARE_STATS).read_text())
    return Prepared(
        classes=json.loads((out / CLASSES_FILE).read_text()),
        train_ids=list(pd.read_csv(out / TRAIN_INDEX, dtype=str, keep_default_na=False)["id"]),
        labels=load_labels(out / LABELS_FILE),
        train_images=open_views(out, "train"),
        test_ids=list(pd.read_csv(out / TEST_INDEX, dtype=str, keep_default_na=False)["id"]),
        test_images=open_views(out, "test"),
        mean=stats["mean"],
        std=stats["std"],
    )


@dataclass(frozen=True)
class HogFeatures:
    """(N, views, D) float16 HOG arrays, memory-mapped, and the per-dimension mean and std of the training set."""

    train: np.ndarray
    test: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @property
    def dim(self) -> int:
        """Length of one HOG vector."""
        return int(self.train.shape[-1])


def hog_files(out: Path) -> tuple[Path, Path]:
    """The train and test HOG arrays inside the hog stage's folder (written in place by `hog_of_views`)."""
    return out / TRAIN_HOG, out / TEST_HOG


def save_hog_stats(out: Path, mean: np.ndarray, std: np.ndarray) -> None:
    """The HOG features' training-set statistics into `out` (a folder being written atomically)."""
    np.savez(out / HOG_STATS, mean=mean, std=std)


def load_hog(out_dir: str | Path) -> HogFeatures:
    """Open the hog stage's outputs."""
    out = Path(out_dir)
    if not (out / HOG_STATS).is_file():
        raise MlicError("HOG features not found", path=out, fix="run `mlic hog` (or `dvc repro hog`) first")
    with np.load(out / HOG_STATS) as stats:
        mean, std = stats["mean"], stats["std"]
    return HogFeatures(np.load(out / TRAIN_HOG, mmap_mode="r"), np.load(out / TEST_HOG, mmap_mode="r"), mean, std)


def save_folds(path: str | Path, train_ids: Sequence[str], folds: np.ndarray) -> None:
    """One row per training id with its fold."""
    write_csv(pd.DataFrame({"id": list(train_ids), "fold": folds}), path)


def load_folds(path: str | Path, train_ids: list[str]) -> np.ndarray:
    """Fold number of every training row, checked against the prepared ids (a stale folds file is an error)."""
    frame = pd.read_csv(path, dtype={"id": str, "fold": int}, keep_default_na=False)
    if list(frame["id"]) != list(train_ids):
        raise MlicError("folds file does not match the prepared training ids", path=path, fix="rerun `mlic folds`")
    return frame["fold"].to_numpy()


def check_probabilities(probs: np.ndarray, path: str | Path, what: str, fix: str,
                        row_names: Sequence[str] | None = None) -> np.ndarray:  # fmt: skip
    """`probs` if every value is a probability (finite, in [0, 1]); else one error naming the file and the bad rows.

    Every stage that reads predictions calls this, so a NaN or an out-of-range score can never reach thresholds, a
    report or a submission silently.

    Args:
        probs: (N, C) predictions.
        path: The file they came from (or the input, for `mlic predict`).
        what: Whose predictions, e.g. "model baseline, fold 1, out-of-fold".
        fix: What to do about it.
        row_names: How to name each row in the message (default: "row <i>", 0-based).
    """
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
    if not bad.any():
        return probs
    rows = np.flatnonzero(bad.any(axis=1))
    shown = []
    for r in rows[:5]:
        cols = np.flatnonzero(bad[r])
        name = row_names[r] if row_names is not None else f"row {r}"
        cells = ", ".join(f"class {c} = {probs[r, c]:g}" for c in cols[:3]) + (", ..." if len(cols) > 3 else "")
        shown.append(f"{name} ({cells})")
    raise MlicError(
        f"{what}: {len(rows)} of {len(probs)} rows hold NaN, infinite or out-of-[0, 1] predictions; "
        f"first bad rows: {'; '.join(shown)}",
        path=path,
        fix=fix,
    )


@dataclass(frozen=True)
class FoldPredictions:
    """One fold's validation rows with their out-of-fold probabilities, and its test probabilities."""

    fold: int
    val_rows: np.ndarray
    oof: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class FoldOutputs:
    """What `train` writes for one model and fold."""

    checkpoint: dict  # tensors and plain types only: it loads with `torch.load(..., weights_only=True)`
    val_rows: np.ndarray
    oof: np.ndarray
    test: np.ndarray
    summary: dict  # epochs, best epoch, validation scores with TTA
    config: dict  # the resolved config the fold trained with


def save_fold(fold_dir: str | Path, outputs: FoldOutputs, live_dir: Path) -> None:
    """Write one fold's folder atomically: checkpoint, OOF and test probabilities, config, curves, summary."""
    import torch  # only the train stage writes checkpoints; the other stages never import torch

    with atomic_path(fold_dir, is_dir=True) as out:
        torch.save(outputs.checkpoint, out / CHECKPOINT)
        np.savez(out / OOF_FILE, rows=outputs.val_rows, probs=outputs.oof)
        np.save(out / TEST_FILE, outputs.test)
        write_params(outputs.config, out / CONFIG_FILE)
        shutil.copytree(live_dir, out / LIVE_DIR)
        write_text(out / FOLD_METRICS_FILE, json.dumps(outputs.summary, indent=2) + "\n")


def load_tensors(path: str | Path, fix: str) -> dict:
    """A torch file holding only tensors and plain types, or an error: nothing else in it is ever unpickled.

    `torch.load(..., weights_only=True)` refuses any pickled object other than tensors and plain containers, so a
    tampered or foreign file cannot run code on load; the refusal becomes one message naming the file.

    Args:
        path: The checkpoint file.
        fix: What to do when the file is refused (how to rebuild it).
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MlicError(
            f"refused to load: the file holds objects other than tensors and plain types ({first}); "
            "mlic never unpickles those, since unpickling can run arbitrary code",
            path=path,
            fix=fix,
        ) from None


def load_checkpoint(fold_dir: str | Path) -> dict:
    """A fold's checkpoint (weights, classes, config, normalisation), loaded with `weights_only=True`."""
    path = Path(fold_dir) / CHECKPOINT
    if not path.is_file():
        raise MlicError("fold checkpoint not found", path=path, fix="finish the run first: `dvc repro`")
    return load_tensors(path, fix="delete the fold folder and retrain it (`dvc repro`); never load untrusted files")


def load_fold_predictions(fold_dir: str | Path, fold: int, model: str = "baseline") -> FoldPredictions:
    """Read the prediction files of one trained fold."""
    fold_dir = Path(fold_dir)
    if not (fold_dir / OOF_FILE).is_file():
        raise MlicError(
            f"model {model} fold {fold} has no predictions",
            path=fold_dir,
            fix=f"run `dvc repro train-{model}-{fold}` (or `mlic train --model {model} --fold {fold}`) first",
        )
    with np.load(fold_dir / OOF_FILE) as oof:
        rows, probs = oof["rows"], oof["probs"]
    fix = f"retrain it: `dvc repro -f train-{model}-{fold}` (if it recurs, lower train.lr or check the inputs)"
    what = f"model {model}, fold {fold}"
    check_probabilities(probs, fold_dir / OOF_FILE, f"{what}, out-of-fold", fix, [f"training row {r}" for r in rows])
    test = check_probabilities(np.load(fold_dir / TEST_FILE), fold_dir / TEST_FILE, f"{what}, test", fix)
    return FoldPredictions(fold, rows, probs, test)


def load_all_folds(cfg: Config, root: Path = Path(".")) -> dict[str, list[FoldPredictions]]:
    """The predictions of every model in `train.models`, for every fold in `train.folds` (paths under `root`)."""
    t = cfg.train
    return {m: [load_fold_predictions(root / cfg.fold_dir(m, f), f, m) for f in t.folds] for m in t.models}


def unlisted_train_outputs(cfg: Config, root: Path = Path(".")) -> list[Path]:
    """What lies in `train.out_dir` besides the fold folders of `train.models` x `train.folds`, sorted.

    These are outputs of train stages no longer in the pipeline (a model or fold dropped from the lists). DVC leaves
    them in place, but `ensemble` and `evaluate` depend on the whole folder, so they would be hashed into dvc.lock
    and a fresh clone would disagree with it.
    """
    out = root / cfg.train.out_dir
    listed = {root / cfg.fold_dir(m, f) for m in cfg.train.models for f in cfg.train.folds}
    models = {p.parent for p in listed}
    found = [p for p in out.iterdir() if p not in models] if out.is_dir() else []
    found += [p for m in models if m.is_dir() for p in m.iterdir() if p not in listed]
    # DVC's own .gitignore files (written where git does not already ignore the outputs) keep the folds out of git
    return sorted(p for p in found if p.name != ".gitignore")


def load_fold_metrics(fold_dir: str | Path) -> dict:
    """A fold's summary: epochs run, best epoch, validation scores with TTA."""
    return read_json(Path(fold_dir) / FOLD_METRICS_FILE)


def live_metrics_dir(live_dir: str | Path) -> Path:
    """Where DVCLive writes one TSV per logged metric."""
    return Path(live_dir) / "plots" / "metrics"


def load_training_curves(fold_dir: str | Path) -> pd.DataFrame:
    """One row per epoch of one fold's training: the DVCLive metrics (train loss and its parts, validation, LR)."""
    metrics_dir = live_metrics_dir(Path(fold_dir) / LIVE_DIR)
    frames = [pd.read_csv(tsv, sep="\t").set_index("step")[[tsv.stem]] for tsv in sorted(metrics_dir.rglob("*.tsv"))]
    if not frames:
        raise MlicError("no training curves", path=metrics_dir, fix="rerun that fold's train stage")
    curves = pd.concat(frames, axis=1).reset_index()
    return curves.rename(columns={"step": "epoch"})  # mlic.train.fold logs each epoch as DVCLive step = its number


def assemble_oof(folds: Sequence[FoldPredictions], n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack out-of-fold probabilities into (N, C) by row; returns them and the mask of rows covered."""
    n_classes = folds[0].oof.shape[1]
    probs = np.zeros((n_rows, n_classes), dtype=np.float32)
    covered = np.zeros(n_rows, dtype=bool)
    for f in folds:
        if covered[f.val_rows].any():
            raise MlicError(f"fold {f.fold} overlaps another fold's validation rows", fix="rerun folds and train")
        probs[f.val_rows], covered[f.val_rows] = f.oof, True
    return probs, covered


def average_test(folds: Sequence[FoldPredictions]) -> np.ndarray:
    """Mean of the folds' test probabilities: the fold ensemble."""
    return np.mean([f.test for f in folds], axis=0).astype(np.float32)


@dataclass(frozen=True)
class EnsemblePredictions:
    """The `ensemble` stage's output: blended OOF probabilities of the covered rows (with their folds), and test."""

    rows: np.ndarray
    folds: np.ndarray
    oof: np.ndarray
    test: np.ndarray


def save_ensemble(
    out_dir: str | Path, ens: EnsemblePredictions, weights: dict[str, float], cfg: Config, blend: dict | None = None
) -> None:
    """Write the ensemble folder atomically: OOF (rows, folds, probs), test, blend weights and config.

    `weights` maps each model to its weight (per-class weights: its mean share); `blend`, when given, is written as
    blend.json (`mlic.predict.ensemble.blend_record`: the method used, why, and any per-class weights).
    """
    with atomic_path(out_dir, is_dir=True) as out:
        np.savez(out / OOF_FILE, rows=ens.rows, folds=ens.folds, probs=ens.oof)
        np.save(out / TEST_FILE, ens.test)
        write_json(out / WEIGHTS_FILE, weights)
        if blend is not None:
            write_json(out / BLEND_FILE, blend)
        save_config(cfg, out / CONFIG_FILE, sections=("train.models", "train.folds", "ensemble"))


def load_ensemble(out_dir: str | Path) -> EnsemblePredictions:
    """Read what the `ensemble` stage wrote."""
    out_dir = Path(out_dir)
    if not (out_dir / OOF_FILE).is_file():
        raise MlicError("no ensemble predictions", path=out_dir, fix="run `dvc repro ensemble` (or `mlic ensemble`)")
    with np.load(out_dir / OOF_FILE) as oof:
        rows, folds, probs = oof["rows"], oof["folds"], oof["probs"]
    names = [f"training row {r} (fold {f})" for r, f in zip(rows, folds, strict=True)]
    check_probabilities(probs, out_dir / OOF_FILE, "model ensemble, out-of-fold", ENSEMBLE_FIX, names)
    return EnsemblePredictions(rows, folds, probs, load_ensemble_test(out_dir))


ENSEMBLE_FIX = "rerun the ensemble and what feeds it: `dvc repro -f ensemble` (its inputs are checked too)"


def load_ensemble_test(out_dir: str | Path) -> np.ndarray:
    """The `ensemble` stage's test probabilities alone, checked: what `submit` needs, without the (N, C) OOF."""
    path = Path(out_dir) / TEST_FILE
    if not path.is_file():
        raise MlicError("no ensemble predictions", path=path, fix="run `dvc repro ensemble` (or `mlic ensemble`)")
    test = np.load(path)
    check_probabilities(test, path, "model ensemble, test (all folds)", ENSEMBLE_FIX)
    return test


def load_ensemble_weights(out_dir: str | Path) -> dict[str, float]:
    """Each model's weight in the blend, as the `ensemble` stage chose them."""
    return read_json(Path(out_dir) / WEIGHTS_FILE)


def load_ensemble_blend(out_dir: str | Path) -> dict | None:
    """The `ensemble` stage's blend.json (method, reason, scores, per-class weights); None from a run before it."""
    path = Path(out_dir) / BLEND_FILE
    return read_json(path) if path.is_file() else None


def save_submit_predictions(out_dir: str | Path, ids: Sequence[str], classes: Sequence[str], probs: np.ndarray,
                            cfg: Config) -> None:  # fmt: skip
    """The blended test probabilities behind a submission, with their ids, classes and config."""
    with atomic_path(out_dir, is_dir=True) as out:
        np.savez(out / SUBMIT_PREDICTIONS, ids=np.array(ids), classes=np.array(classes), probs=probs)
        save_config(cfg, out / CONFIG_FILE, sections=("data", "thresholds", "submit"))


def load_submit_predictions(out_dir: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """The ids, classes and probabilities `submit` saved beside its CSV."""
    path = Path(out_dir) / SUBMIT_PREDICTIONS
    if not path.is_file():
        raise MlicError("no submitted predictions", path=path, fix="run `dvc repro submit` first")
    with np.load(path) as saved:
        ids, classes, probs = list(saved["ids"]), list(saved["classes"]), saved["probs"]
    names = [f"test id {i}" for i in ids]
    check_probabilities(probs, path, "model ensemble, test (all folds)", "rerun `dvc repro -f submit`", names)
    return ids, classes, probs
