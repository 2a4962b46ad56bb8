"""Fitting per-class decision thresholds for sample-averaged F-beta on out-of-fold predictions, and scoring the fits.

Methods are registered by name and chosen with `thresholds.method` in params.yaml:
- `global`: the best single threshold on a grid.
- `per_class_exact`: coordinate ascent over classes where each class's candidate cuts are all of its distinct
  probabilities. With the other classes fixed, moving class c's cut past one row changes only that row's
  F-beta term, so after one sort every cut's total score is a cumulative sum: O(N log N) per class and pass.
- `optuna`: per-class thresholds by TPE, seeded and warm-started from the exact search, in a SQLite study.
Every method's result then goes through `regularise` (shrinkage toward the global threshold by support).
`nested_evaluation` scores a method fitted on k-1 folds on the held-out one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mlic.config import ThresholdsConfig
from mlic.metrics import confusion_counts, fbeta_from_counts, fbeta_samples, summary_metrics
from mlic.predict.thresholds import best_global_threshold, binarize
from mlic.registry import Registry

ThresholdFitter = Callable[[np.ndarray, np.ndarray, ThresholdsConfig], np.ndarray]
THRESHOLD_METHODS: Registry[ThresholdFitter] = Registry("threshold method", "thresholds.method")


@THRESHOLD_METHODS.register("global")
def fit_global(probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig) -> np.ndarray:
    """One threshold shared by all classes: the grid value with the best sample F-beta (ties: the lowest)."""
    threshold, _ = best_global_threshold(probs, labels, cfg.beta, cfg.min_labels, cfg.grid_step)
    return np.full(probs.shape[1], threshold)


def _move_counts(counts: tuple[np.ndarray, ...], y: np.ndarray, old: np.ndarray, new: np.ndarray) -> tuple:
    """Per-row (tp, fp, fn) after one class's predictions change from `old` to `new`."""
    tp, fp, fn = counts
    d = new.astype(np.int64) - old
    return tp + d * y, fp + d * ~y, fn - d * y


def best_cut(
    p: np.ndarray, y: np.ndarray, on: np.ndarray, counts: tuple[np.ndarray, ...], order: np.ndarray, beta: float
) -> tuple[float, float]:
    """The best threshold for one class with every other class fixed, and its gain in summed F-beta over `on`.

    Args:
        p: (N,) this class's probabilities; `order` sorts them in decreasing order.
        y: (N,) bool truth of this class.
        on: (N,) bool current predictions of this class.
        counts: Per-row (tp, fp, fn) over all classes under the current predictions.
        order: Indices sorting `p` in decreasing order.
        beta: F-beta's beta.

    Returns:
        The threshold (the rows at or above it are predicted), and the rise in the sum of row scores it brings.
    """
    tp, fp, fn = (c - d for c, d in zip(counts, (on & y, on & ~y, ~on & y), strict=True))  # without this class
    gain = fbeta_from_counts(tp + y, fp + ~y, fn, beta) - fbeta_from_counts(tp, fp, fn + y, beta)
    total = np.concatenate([[0.0], np.cumsum(gain[order])])  # total[k]: rise from predicting the top k rows
    ps = p[order]
    cuttable = np.ones(len(total), dtype=bool)
    cuttable[1:-1] = ps[:-1] > ps[1:]  # a cut between equal probabilities is impossible
    k = int(np.argmax(np.where(cuttable, total, -np.inf)))
    rise = total[k] - total[int(on.sum())]
    if k == 0:
        return float(np.nextafter(ps[0], np.inf)), rise
    return (float(ps[-1]) if k == len(ps) else (float(ps[k - 1]) + float(ps[k])) / 2), rise


@THRESHOLD_METHODS.register("per_class_exact")
def fit_per_class_exact(probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig) -> np.ndarray:
    """Coordinate ascent from the best global threshold, each class taking its exactly best cut (`best_cut`).

    Passes repeat until one raises the summed row F-beta by no more than 1e-9 (or `cfg.max_passes`). The search
    scores plain thresholding; `min_labels` top-up applies afterwards, in `binarize`.
    """
    thresholds = fit_global(probs, labels, cfg).astype(np.float64)
    # Class-major copies: every step below reads one class's N values, which are then contiguous in memory
    probs_t, truth_t = np.ascontiguousarray(probs.T), np.ascontiguousarray(labels.T.astype(bool))
    orders = np.argsort(-probs_t, axis=1).astype(np.int32)  # sorted once, reused every pass; tie order is irrelevant
    pred_t = probs_t >= thresholds[:, None]
    counts = confusion_counts(truth_t, pred_t, axis=0)  # class-major: axis 0 sums over classes, per row
    for n in range(cfg.max_passes):
        rise = 0.0
        classes = tqdm(range(len(probs_t)), f"thresholds pass {n + 1}", leave=False, disable=len(probs_t) < 100)
        for c in classes:
            t, gain = best_cut(probs_t[c], truth_t[c], pred_t[c], counts, orders[c], cfg.beta)
            if gain > 1e-12:
                new = probs_t[c] >= t
                counts = _move_counts(counts, truth_t[c], pred_t[c], new)
                thresholds[c], pred_t[c], rise = t, new, rise + gain
        if rise <= 1e-9:
            break
    return thresholds


def _study_name(probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig) -> str:
    """A study per input: the same predictions and settings resume their study, anything else starts a new one."""
    digest = hashlib.sha256(np.ascontiguousarray(probs).tobytes())
    digest.update(np.packbits(labels.astype(bool)).tobytes())
    digest.update(repr((cfg.beta, cfg.min_labels, cfg.max_labels, cfg.seed, cfg.grid_step)).encode())
    return f"thresholds-{digest.hexdigest()[:16]}"


def create_study_storage(path: str | Path):
    """Optuna's SQLite storage at `path` (created with its tables when absent); quiet unless something is wrong."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{Path(path).resolve()}")


@THRESHOLD_METHODS.register("optuna")
def fit_optuna(probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig) -> np.ndarray:
    """Per-class thresholds by Optuna's TPE, seeded and warm-started from `per_class_exact`.

    The study lives in `cfg.optuna_storage` (SQLite): an interrupted fit resumes, `cfg.optuna_trials` counts the
    trials already there, and `optuna-dashboard sqlite:///<file>` shows it. The objective is the sample F-beta
    with `min_labels` and `max_labels` applied, so the search sees the metric as it will be scored.
    """
    import optuna

    start = np.clip(fit_per_class_exact(probs, labels, cfg), 0.0, 1.0)
    study = optuna.create_study(
        study_name=_study_name(probs, labels, cfg),
        storage=create_study_storage(cfg.optuna_storage),
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        direction="maximize",
        load_if_exists=True,
    )
    names = [f"t{c:04d}" for c in range(probs.shape[1])]
    if not study.trials:
        study.enqueue_trial(dict(zip(names, start.tolist(), strict=True)))

    def objective(trial) -> float:
        thresholds = np.array([trial.suggest_float(n, 0.0, 1.0) for n in names])
        return fbeta_samples(labels, binarize(probs, thresholds, cfg.min_labels, cfg.max_labels), cfg.beta)

    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    study.optimize(objective, n_trials=max(0, cfg.optuna_trials - done), show_progress_bar=cfg.optuna_trials > 50)
    return np.array([study.best_params[n] for n in names])


def regularise(thresholds: np.ndarray, labels: np.ndarray, global_threshold: float, shrink: float) -> np.ndarray:
    """Shrink each class's threshold toward the global one by its support: (n_c t_c + shrink t) / (n_c + shrink).

    A class seen a handful of times keeps little of its own fitted cut, which on iMet's rare attributes mostly
    fits noise; a frequent class keeps nearly all of it. `shrink` is the pseudo-count (0: no shrinkage).
    """
    if shrink <= 0:
        return thresholds
    support = labels.sum(axis=0).astype(np.float64)
    return (support * thresholds + shrink * global_threshold) / (support + shrink)


def fit_thresholds(
    probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig, method: str | None = None
) -> np.ndarray:
    """Fit thresholds with `method` (default `cfg.method`), then shrink them toward the global one (`cfg.shrink`)."""
    thresholds = THRESHOLD_METHODS.get(method or cfg.method)(probs, labels, cfg)
    if cfg.shrink > 0:
        global_threshold, _ = best_global_threshold(probs, labels, cfg.beta, cfg.min_labels, cfg.grid_step)
        thresholds = regularise(thresholds, labels, global_threshold, cfg.shrink)
    return thresholds


@dataclass(frozen=True)
class MethodReport:
    """One threshold method fitted on all OOF rows (for the submission) and scored in-sample and nested."""

    thresholds: np.ndarray
    in_sample: dict[str, float]
    nested: dict[str, float]
    per_fold: dict[str, dict[str, float]]
    seconds: float


def nested_evaluation(
    probs: np.ndarray, labels: np.ndarray, folds: np.ndarray, cfg: ThresholdsConfig, method: str
) -> MethodReport:
    """Fit `method` on all rows and score it there (in-sample), then score it nested, fold by fold.

    Nested: fit on the OOF rows of k-1 folds, score on the remaining fold, round-robin. The gap between the
    in-sample and the nested score shows how much the thresholds overfit.

    Args:
        probs: (N, C) out-of-fold probabilities.
        labels: (N, C) truth.
        folds: (N,) fold of each row (the one whose model predicted it).
        cfg: The `thresholds` section.
        method: A registered threshold method.
    """
    start = time.perf_counter()
    thresholds = fit_thresholds(probs, labels, cfg, method)
    seconds = time.perf_counter() - start
    in_sample = summary_metrics(labels, probs, binarize(probs, thresholds, cfg.min_labels, cfg.max_labels), cfg.beta)
    held_out, per_fold = np.zeros_like(labels), {}
    if len(np.unique(folds)) < 2:  # a single trained fold leaves nothing to fit on: no nested score
        return MethodReport(thresholds, in_sample, {}, {}, round(seconds, 3))
    for fold in np.unique(folds):
        fit, score = folds != fold, folds == fold
        fold_thresholds = fit_thresholds(probs[fit], labels[fit], cfg, method)
        held_out[score] = binarize(probs[score], fold_thresholds, cfg.min_labels, cfg.max_labels)
        per_fold[str(int(fold))] = summary_metrics(labels[score], probs[score], held_out[score], cfg.beta)
    nested = summary_metrics(labels, probs, held_out, cfg.beta)
    return MethodReport(thresholds, in_sample, nested, per_fold, round(seconds, 3))
