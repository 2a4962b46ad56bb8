"""Fitting per-class decision thresholds for sample-averaged F-beta on out-of-fold predictions, and scoring the fits.

Methods are registered by name and chosen with `thresholds.method` in params.yaml:
- `global`: the best single threshold on a grid.
- `per_class_exact`: coordinate ascent over classes where each class's candidate cuts are all of its distinct
  probabilities. With the other classes fixed, moving class c's cut past one row changes only that row's
  F-beta term, so after one sort every cut's total score is a cumulative sum: O(N log N) per class and pass.
- `optuna`: per-class thresholds by TPE, seeded and warm-started from the exact search, in a SQLite study.
Every method's result then goes through `regularise` (shrinkage toward the global threshold by support).
`nested_evaluation` scores a method fitted on k-1 folds on the held-out one (one fold: on parts of its rows).
`auto` (`fit_and_compare`) is no fitter but a choice: the compared method and shrink with the best nested score,
kept at global unless a per-class method beats it by more than `thresholds.auto_margin_se` standard errors, and
unless auto as a procedure beats it by as much out of sample. The best of several nested scores is biased upward
(it won partly by luck on the rows it is scored on), so `score_procedure` reruns the whole choice (candidate fits,
nested selection, refit) without each outer part and scores that part's rows. Fits are cached by their rows
(`FitCache`): the check adds one fit per method and pair of parts (three or more parts), and runs only when the
nested selection picks per-class cuts, as it can only overrule such a pick.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mlic.config import ThresholdsConfig
from mlic.data.folds import assign_folds
from mlic.errors import MlicError, invalid
from mlic.metrics import (
    confusion_counts,
    fbeta_from_counts,
    fbeta_per_row,
    fbeta_samples,
    ranking_metrics,
    summary_metrics,
)
from mlic.progress import track
from mlic.registry import Registry
from mlic.studies import create_study_storage
from mlic.thresholds import best_global_threshold, binarize

ThresholdFitter = Callable[[np.ndarray, np.ndarray, ThresholdsConfig], np.ndarray]
THRESHOLD_METHODS: Registry[ThresholdFitter] = Registry("threshold method", "thresholds.method")
AUTO = "auto"  # thresholds.method: the compared method and shrink with the best nested score (`choose_auto`)
BASELINE = "global"  # what auto keeps unless a per-class method clearly beats it


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
        classes = track(range(len(probs_t)), f"thresholds pass {n + 1}", leave=False, disable=len(probs_t) < 100)
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
    """A study per input and every setting its trials depend on (objective, seed, warm start): the same resume it."""
    digest = hashlib.sha256(np.ascontiguousarray(probs).tobytes())
    digest.update(np.packbits(labels.astype(bool)).tobytes())
    digest.update(repr((cfg.beta, cfg.min_labels, cfg.max_labels, cfg.seed, cfg.grid_step, cfg.max_passes)).encode())
    return f"thresholds-{digest.hexdigest()[:16]}"


@THRESHOLD_METHODS.register("optuna")
def fit_optuna(probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig) -> np.ndarray:
    """Per-class thresholds by Optuna's TPE, seeded and warm-started from `per_class_exact`.

    The study lives in `cfg.optuna_storage` (SQLite): an interrupted fit resumes, `cfg.optuna_trials` counts the
    trials already there, and `optuna-dashboard sqlite:///<file>` shows it. The result does not depend on the
    storage's history, so the storage is a resume aid and no pipeline output: the k-th complete trial's sampler is
    seeded with `cfg.seed + k`, which makes each trial a function of the trials before it alone, and the answer is
    the best of the first `cfg.optuna_trials` complete trials. A fresh, a resumed and a longer study agree. The
    objective is the sample F-beta with `min_labels` and `max_labels` applied, as the submission is scored.
    """
    import optuna

    study = optuna.create_study(
        study_name=_study_name(probs, labels, cfg),
        storage=create_study_storage(cfg.optuna_storage),
        direction="maximize",
        load_if_exists=True,
    )
    names = [f"t{c:04d}" for c in range(probs.shape[1])]
    done = _complete_trials(study)
    if not done and not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        start = np.clip(fit_per_class_exact(probs, labels, cfg), 0.0, 1.0)
        study.enqueue_trial(dict(zip(names, start.tolist(), strict=True)))

    def objective(trial) -> float:
        thresholds = np.array([trial.suggest_float(n, 0.0, 1.0) for n in names])
        return fbeta_samples(labels, binarize(probs, thresholds, cfg.min_labels, cfg.max_labels), cfg.beta)

    remaining = range(len(done), cfg.optuna_trials)
    for k in track(remaining, "optuna trials", leave=False, disable=len(remaining) <= 50):
        study.sampler = optuna.samplers.TPESampler(seed=cfg.seed + k)  # trial k: the same, resumed or not
        study.optimize(objective, n_trials=1)
    best = max(_complete_trials(study)[: cfg.optuna_trials], key=lambda trial: trial.value)  # ties: the earliest
    return np.array([best.params[n] for n in names])


def _complete_trials(study) -> list:
    """The study's complete trials in the order they ran (an interrupted trial stays RUNNING, and is skipped)."""
    import optuna

    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sorted(trials, key=lambda trial: trial.number)


def regularise(thresholds: np.ndarray, labels: np.ndarray, global_threshold: float, shrink: float) -> np.ndarray:
    """Shrink each class's threshold toward the global one by its support: (n_c t_c + shrink t) / (n_c + shrink).

    A class seen a handful of times keeps little of its own fitted cut, which on iMet's rare attributes mostly
    fits noise; a frequent class keeps nearly all of it. `shrink` is the pseudo-count (0: no shrinkage).
    """
    if shrink <= 0:
        return thresholds
    support = labels.sum(axis=0).astype(np.float64)
    return (support * thresholds + shrink * global_threshold) / (support + shrink)


def fitter(method: str) -> ThresholdFitter:
    """The registered fitting method `method`; `auto` is a choice among them by nested scores, and fits nothing."""
    if method == AUTO:
        raise MlicError(
            "threshold method auto chooses among fitted methods by their nested scores, and needs each row's fold",
            fix="run the thresholds stage (fit_and_compare), or pass a fitting method: "
            + ", ".join(THRESHOLD_METHODS.names()),
        )
    return THRESHOLD_METHODS.get(method)


def check_methods(cfg: ThresholdsConfig) -> None:
    """Fail before any fit, naming the key, on a method that is neither registered nor (`thresholds.method`) auto."""
    known = THRESHOLD_METHODS.names()
    allowed = {"thresholds.method": [AUTO, *known], "thresholds.compare_methods": known}
    for key, names in (("thresholds.method", [cfg.method]), ("thresholds.compare_methods", cfg.compare_methods)):
        for name in names:
            if name not in allowed[key]:
                invalid(key, f"unknown threshold method {name!r}", fix=f"use one of: {', '.join(allowed[key])}")


def shrink_toward_global(
    thresholds: np.ndarray, probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig, shrinks: Sequence[float]
) -> dict[float, np.ndarray]:
    """`thresholds` pulled toward the best global threshold of (probs, labels) by each of `shrinks` (`regularise`)."""
    if max(shrinks) <= 0:
        return dict.fromkeys(shrinks, thresholds)
    global_threshold, _ = best_global_threshold(probs, labels, cfg.beta, cfg.min_labels, cfg.grid_step)
    return {s: regularise(thresholds, labels, global_threshold, s) for s in shrinks}


def fit_thresholds(
    probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig, method: str | None = None, shrink: float | None = None
) -> np.ndarray:
    """Fit thresholds with `method` (default `cfg.method`), then shrink them toward the global one (`cfg.shrink`)."""
    shrink = cfg.shrink if shrink is None else shrink
    raw = fitter(method or cfg.method)(probs, labels, cfg)
    return shrink_toward_global(raw, probs, labels, cfg, [shrink])[shrink]


def nested_parts(folds: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig) -> np.ndarray | None:
    """Each OOF row's part for nested scoring: its fold, or, when all rows come from one fold, a split of them.

    One trained fold (`train.folds: [0]`) leaves no other fold to fit on, so its rows are split into
    `cfg.nested_splits` multilabel-stratified parts, seeded by `cfg.seed`. None: too few rows to split.
    """
    if len(np.unique(folds)) > 1:
        return folds
    n_splits = min(cfg.nested_splits, len(folds))
    return assign_folds(labels, n_splits, cfg.seed) if n_splits >= 2 else None


@dataclass(frozen=True)
class FitCache:
    """Each method's raw fit (before shrinkage) on each set of OOF rows, fitted once and shared by every caller.

    A fit is keyed by its method and by its rows' indices in the full OOF matrix, so views of some rows (`subset`)
    share one store: auto's out-of-sample check fits on all rows but two parts, which serves the inner selections
    of both parts, and on all rows but one, which the nested scores have fitted already.
    """

    probs: np.ndarray
    labels: np.ndarray
    cfg: ThresholdsConfig
    index: np.ndarray  # (N,) each row's index in the full OOF matrix
    raw: dict[tuple[str, bytes], np.ndarray]  # (method, indices of the rows fitted on) -> thresholds, shared

    @classmethod
    def of(cls, probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig) -> FitCache:
        """An empty cache over all of (probs, labels)."""
        return cls(probs, labels, cfg, np.arange(len(probs)), {})

    def subset(self, rows: np.ndarray) -> FitCache:
        """A view of the selected rows (a bool mask) that shares this cache's fits."""
        return FitCache(self.probs[rows], self.labels[rows], self.cfg, self.index[rows], self.raw)

    def fit(self, method: str, rows: np.ndarray, shrinks: Sequence[float]) -> dict[float, np.ndarray]:
        """`method` fitted on the selected rows (once), then pulled toward their global cut by each of `shrinks`."""
        key = (method, self.index[rows].tobytes())
        if key not in self.raw:
            self.raw[key] = fitter(method)(self.probs[rows], self.labels[rows], self.cfg)
        return shrink_toward_global(self.raw[key], self.probs[rows], self.labels[rows], self.cfg, shrinks)


@dataclass(frozen=True)
class NestedFit:
    """One method's thresholds at several shrinks: fitted on all rows, and on all rows but each nested part.

    `seconds` (the all-rows fit's wall-clock time) goes to the stage's log only: a DVC output holding it would
    change at every run, and with it dvc.lock.
    """

    fitted: dict[float, np.ndarray]  # shrink -> thresholds fitted on all rows (the submission's, if chosen)
    held_out: dict[float, dict[int, np.ndarray]]  # shrink -> part -> thresholds fitted without that part's rows
    parts: np.ndarray | None  # (N,) nested part of each row; None: no nested score
    seconds: float


def fit_nested(cache: FitCache, parts: np.ndarray | None, method: str, shrinks: Sequence[float]) -> NestedFit:
    """Fit `method` on all of the cache's rows and on all but each part, once each; every shrink applies to each fit.

    Shrinking is a cheap pull toward the global cut after the fit, so a grid of shrinks costs no extra fits.
    """
    start = time.perf_counter()
    fitted = cache.fit(method, np.ones(len(cache.probs), dtype=bool), shrinks)
    seconds = time.perf_counter() - start
    held_out: dict[float, dict[int, np.ndarray]] = {s: {} for s in shrinks}
    for part in [] if parts is None else np.unique(parts):
        for s, thresholds in cache.fit(method, parts != part, shrinks).items():
            held_out[s][int(part)] = thresholds
    return NestedFit(fitted, held_out, parts, seconds)


def held_out_predictions(nested: NestedFit, probs: np.ndarray, cfg: ThresholdsConfig, shrink: float) -> np.ndarray:
    """(N, C) predictions of every row by the thresholds fitted without its part, at `shrink`."""
    pred = np.zeros(probs.shape, dtype=np.uint8)
    for part, thresholds in nested.held_out[shrink].items():
        rows = nested.parts == part
        pred[rows] = binarize(probs[rows], thresholds, cfg.min_labels, cfg.max_labels)
    return pred


@dataclass(frozen=True)
class MethodReport:
    """One threshold method fitted on all OOF rows (for the submission) and scored in-sample and nested."""

    thresholds: np.ndarray
    in_sample: dict[str, float]
    nested: dict[str, float]
    per_fold: dict[str, dict[str, float]]
    seconds: float  # the all-rows fit's wall-clock time: for the log, never for a file
    shrink: float = 0.0


def method_report(
    nested: NestedFit,
    probs: np.ndarray,
    labels: np.ndarray,
    cfg: ThresholdsConfig,
    shrink: float,
    ranking: dict[bytes, dict] | None = None,
) -> MethodReport:
    """In-sample scores of the all-rows fit at `shrink`, and nested ones: overall and per held-out part.

    `ranking` caches the threshold-free metrics (`ranking_metrics`) of all rows and of each part, which every
    method shares: pass one dict to the reports of every method on the same probabilities.
    """
    ranking = {} if ranking is None else ranking

    def scores(rows: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        key = np.packbits(rows).tobytes()  # the rows themselves: methods with other parts never share an entry
        y, p = (labels, probs) if rows.all() else (labels[rows], probs[rows])  # all rows: no copy
        if key not in ranking:
            ranking[key] = ranking_metrics(y, p, cfg.beta)
        return summary_metrics(y, p, pred, cfg.beta, ranking[key])

    thresholds = nested.fitted[shrink]
    every = np.ones(len(probs), dtype=bool)
    in_sample = scores(every, binarize(probs, thresholds, cfg.min_labels, cfg.max_labels))
    if nested.parts is None:
        return MethodReport(thresholds, in_sample, {}, {}, nested.seconds, shrink)
    held = held_out_predictions(nested, probs, cfg, shrink)
    per_fold = {}
    for part in nested.held_out[shrink]:
        rows = nested.parts == part
        per_fold[str(part)] = scores(rows, held[rows])
    return MethodReport(thresholds, in_sample, scores(every, held), per_fold, nested.seconds, shrink)


def nested_evaluation(
    probs: np.ndarray, labels: np.ndarray, folds: np.ndarray, cfg: ThresholdsConfig, method: str
) -> MethodReport:
    """Fit `method` (at `cfg.shrink`) on all rows and score it there (in-sample), then score it nested.

    Nested: fit on the OOF rows of k-1 folds, score on the remaining fold, round-robin (one fold: on its rows
    split by `nested_parts`). The gap between the in-sample and the nested score shows how much they overfit.

    Args:
        probs: (N, C) out-of-fold probabilities.
        labels: (N, C) truth.
        folds: (N,) fold of each row (the one whose model predicted it).
        cfg: The `thresholds` section.
        method: A registered threshold method.
    """
    nested = fit_nested(FitCache.of(probs, labels, cfg), nested_parts(folds, labels, cfg), method, [cfg.shrink])
    return method_report(nested, probs, labels, cfg, cfg.shrink)


def auto_shrinks(cfg: ThresholdsConfig) -> tuple[float, ...]:
    """Every shrink auto scores: global's 0, and `cfg.auto_shrink` for the per-class methods."""
    return tuple(dict.fromkeys([0.0, *cfg.auto_shrink]))


def candidate_rows(
    fits: dict[str, NestedFit], probs: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig
) -> dict[str, dict[float, np.ndarray]]:
    """Per-row nested F-beta of every method at every `cfg.auto_shrink`; global at shrink 0 alone.

    Shrinking global's one cut toward itself changes nothing, so it has a single candidate. Empty without parts.
    """
    return {
        m: {s: fbeta_per_row(labels, held_out_predictions(f, probs, cfg, s), cfg.beta)
            for s in ((0.0,) if m == BASELINE else cfg.auto_shrink)}
        for m, f in fits.items()
        if f.parts is not None
    }  # fmt: skip


def paired_gain(diff: np.ndarray) -> tuple[float, float]:
    """The mean of per-row differences between two predictions of the same rows, and its standard error."""
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")


def clears_margin(gain: float, standard_error: float, cfg: ThresholdsConfig) -> bool:
    """Whether a gain over global is positive and above `cfg.auto_margin_se` standard errors."""
    return gain > 0 and gain > cfg.auto_margin_se * standard_error


@dataclass(frozen=True)
class ProcedureScore:
    """`auto` as a whole procedure (fits, nested selection, refit) scored on rows it never saw, against global.

    Each outer part's rows are scored by the (method, shrink) that the nested selection chose on the other parts'
    rows alone, refitted on those rows; global's score is its nested one (fitted without the part) on the same rows.
    """

    choices: dict[int, tuple[str, float]]  # outer part -> (method, shrink) chosen without the part's rows
    fbeta: float  # the procedure's sample F-beta over all rows, each scored out of sample
    baseline: float  # global's nested sample F-beta over the same rows
    gain: float  # fbeta - baseline: the mean per-row difference
    standard_error: float  # of that gain, from the per-row differences (paired)


def inner_choice(cache: FitCache, parts: np.ndarray, outer: int, methods: Sequence[str]) -> AutoChoice:
    """The nested selection (`choose_auto`) run on the rows outside part `outer` alone, nested on their parts.

    With three or more parts the inner parts are the other outer parts, so each fit on all rows but two parts
    serves two outer parts; with two, the remaining part's rows are split as one fold's are (`nested_parts`).
    """
    rest = parts != outer
    inner = cache.subset(rest)
    inner_parts = nested_parts(parts[rest], inner.labels, cache.cfg)
    fits = {m: fit_nested(inner, inner_parts, m, auto_shrinks(cache.cfg)) for m in methods}
    return choose_auto(candidate_rows(fits, inner.probs, inner.labels, cache.cfg), cache.cfg)


def score_procedure(
    cache: FitCache, parts: np.ndarray, methods: Sequence[str], global_rows: np.ndarray
) -> ProcedureScore:
    """Score auto as a procedure out of sample: per outer part, the inner choice refitted without it, on its rows.

    The nested score of the best of several candidates is biased upward (the selection fits the same noise it is
    scored on); here the selection never sees the rows it is scored on, so the score holds its luck too.

    Args:
        cache: The fits on all OOF rows, shared (each method on all rows but one part is already there).
        parts: (N,) each row's nested part (`nested_parts`): the outer split.
        methods: The compared methods, global among them.
        global_rows: (N,) global's nested per-row F-beta, the baseline the procedure is compared with.
    """
    cfg, scores, choices = cache.cfg, np.empty(len(parts)), {}
    for outer in np.unique(parts):
        choice = inner_choice(cache, parts, int(outer), methods)
        thresholds = cache.fit(choice.method, parts != outer, [choice.shrink])[choice.shrink]
        held = parts == outer
        pred = binarize(cache.probs[held], thresholds, cfg.min_labels, cfg.max_labels)
        scores[held] = fbeta_per_row(cache.labels[held], pred, cfg.beta)
        choices[int(outer)] = (choice.method, choice.shrink)
    gain, se = paired_gain(scores - global_rows)
    return ProcedureScore(choices, round(float(scores.mean()), 6), round(float(global_rows.mean()), 6),
                          round(gain, 6), round(se, 6))  # fmt: skip


@dataclass(frozen=True)
class AutoChoice:
    """What `auto` chose, from which nested (and, for a per-class pick, out-of-sample) scores, and why."""

    method: str
    shrink: float
    candidates: dict[str, dict[float, float]]  # method -> shrink -> nested F-beta (6 decimals, as written)
    gain: float | None  # the best per-class candidate's nested F-beta minus global's (None: no candidate)
    standard_error: float | None  # of that gain, from the per-row differences
    reason: str
    nested_choice: tuple[str, float] = (BASELINE, 0.0)  # the nested selection's pick, before the out-of-sample check
    procedure: ProcedureScore | None = None  # None: not scored, as the nested selection kept global


def choose_auto(rows: dict[str, dict[float, np.ndarray]], cfg: ThresholdsConfig) -> AutoChoice:
    """The nested selection: global unless the best per-class candidate beats it by `cfg.auto_margin_se` SEs.

    Per-class cuts fit noise on few rows and rare classes (Planet, 6,667 OOF rows: nested F2 0.8946 per class
    against 0.8956 shared), so the simpler method stays unless the gain is clear. The standard error is that of
    the mean per-row difference from global (the same rows, so paired): a fixed margin would be too strict on many
    rows and too lax on few. Ties between per-class candidates go to the earlier in `compare_methods`, then in
    `auto_shrink`. The best of several noisy nested scores is still biased upward, so `fit_and_compare` checks a
    per-class pick out of sample (`score_procedure`, `confirm_out_of_sample`).
    """
    candidates = {m: {s: round(float(r.mean()), 6) for s, r in by.items()} for m, by in rows.items()}
    if BASELINE not in rows:
        return AutoChoice(BASELINE, 0.0, candidates, None, None, "auto chose global: too few OOF rows to nest")
    f, base = f"nested F{cfg.beta:g}", candidates[BASELINE][0.0]
    rivals = [(m, s, v) for m, by in candidates.items() if m != BASELINE for s, v in by.items()]
    if not rivals:
        reason = f"auto chose global ({f} {base:.4f}): no per-class method in thresholds.compare_methods"
        return AutoChoice(BASELINE, 0.0, candidates, None, None, reason)
    method, shrink, best = max(rivals, key=lambda rival: rival[2])  # max keeps the first of equal scores
    gain, se = paired_gain(rows[method][shrink] - rows[BASELINE][0.0])
    if clears_margin(gain, se, cfg):
        reason = f"auto chose {method} (shrink {shrink:g}): {versus_global(f, best, base, gain, se, cfg)}"
        return AutoChoice(method, shrink, candidates, round(gain, 6), round(se, 6), reason, (method, shrink))
    rule = f"gain {gain:+.4f}, {cfg.auto_margin_se:g} SE {cfg.auto_margin_se * se:.4f}"
    reason = (f"auto chose global: {f} {base:.4f} vs {method} {best:.4f} (shrink {shrink:g}), the best "
              f"per-class candidate, which must beat it by more than {cfg.auto_margin_se:g} SE ({rule})")  # fmt: skip
    return AutoChoice(BASELINE, 0.0, candidates, round(gain, 6), round(se, 6), reason)


def versus_global(score_name: str, score: float, base: float, gain: float, se: float, cfg: ThresholdsConfig) -> str:
    """'<score_name> 0.8960 vs global 0.8947 (gain +0.0013, 2 SE 0.0011)': a score, global's, and the margin."""
    margin = cfg.auto_margin_se
    return f"{score_name} {score:.4f} vs global {base:.4f} (gain {gain:+.4f}, {margin:g} SE {margin * se:.4f})"


def confirm_out_of_sample(nested: AutoChoice, procedure: ProcedureScore, cfg: ThresholdsConfig) -> AutoChoice:
    """Keep the nested selection's per-class pick only if auto as a procedure beats global out of sample.

    The same margin as the nested selection's (`cfg.auto_margin_se` standard errors of the paired per-row
    difference) applies: the procedure's score is unbiased, but noisy, and global stays unless the gain is real.
    """
    p = procedure
    outer = versus_global(f"F{cfg.beta:g}", p.fbeta, p.baseline, p.gain, p.standard_error, cfg)
    if clears_margin(p.gain, p.standard_error, cfg):
        reason = f"{nested.reason}; out of sample, auto as a procedure (its selection included): {outer}"
        return dataclasses.replace(nested, reason=reason, procedure=p)
    method, shrink = nested.nested_choice
    won = versus_global(f"nested F{cfg.beta:g}", nested.candidates[method][shrink],
                        nested.candidates[BASELINE][0.0], nested.gain, nested.standard_error, cfg)  # fmt: skip
    reason = (f"auto chose global: {method} (shrink {shrink:g}) won the nested selection, {won}, but out of sample "
              f"auto as a procedure (its selection included) does not beat global by more than "
              f"{cfg.auto_margin_se:g} SE: {outer}")  # fmt: skip
    return dataclasses.replace(nested, method=BASELINE, shrink=0.0, reason=reason, procedure=p)


@dataclass(frozen=True)
class ThresholdFit:
    """The thresholds stage's result: every compared method's report, and what the submission uses."""

    reports: dict[str, MethodReport]  # each method at cfg.shrink; with auto, also "auto": the chosen one's
    used: str  # the key of `reports` whose thresholds the submission uses
    method: str  # the fitting method behind them
    shrink: float
    reason: str
    auto: AutoChoice | None  # None: an explicit thresholds.method


def fit_and_compare(probs: np.ndarray, labels: np.ndarray, folds: np.ndarray, cfg: ThresholdsConfig) -> ThresholdFit:
    """Fit and score `cfg.method` and every `cfg.compare_methods` (nested), and pick auto's method and shrink.

    With `auto`, global is always a candidate (the baseline), each method is fitted once per set of rows whatever
    the number of shrinks, and the chosen (method, shrink) is the one fitted on all rows. A per-class pick of the
    nested selection stands only if auto as a procedure, scored out of sample, beats global too
    (`score_procedure`); when the nested selection keeps global, that check could not change the answer, and its
    fits are skipped.
    """
    check_methods(cfg)
    auto = cfg.method == AUTO
    parts = nested_parts(folds, labels, cfg)
    methods = list(dict.fromkeys([*cfg.compare_methods, BASELINE] if auto else [cfg.method, *cfg.compare_methods]))
    shrinks = tuple(dict.fromkeys([cfg.shrink, *auto_shrinks(cfg)] if auto else [cfg.shrink]))
    cache = FitCache.of(probs, labels, cfg)
    fits = {m: fit_nested(cache, parts, m, shrinks) for m in methods}
    ranking: dict[bytes, dict] = {}  # the threshold-free metrics, the same for every method: computed once
    reports = {m: method_report(f, probs, labels, cfg, cfg.shrink, ranking) for m, f in fits.items()}
    if not auto:
        return ThresholdFit(reports, cfg.method, cfg.method, cfg.shrink, f"thresholds.method is {cfg.method}", None)
    rows = candidate_rows(fits, probs, labels, cfg)
    choice = choose_auto(rows, cfg)
    if choice.method != BASELINE:
        procedure = score_procedure(cache, parts, methods, rows[BASELINE][0.0])
        choice = confirm_out_of_sample(choice, procedure, cfg)
    reports[AUTO] = method_report(fits[choice.method], probs, labels, cfg, choice.shrink, ranking)
    return ThresholdFit(reports, AUTO, choice.method, choice.shrink, choice.reason, choice)
