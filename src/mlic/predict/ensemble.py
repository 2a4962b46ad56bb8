"""Blending several models' probabilities: weights chosen on the out-of-fold predictions, applied to the test.

Methods (`ensemble.method`), each a weight rule and a way to combine:
- `mean`: equal weights, arithmetic mean.
- `geometric`: equal weights, geometric mean of the probabilities (it punishes a label any model doubts).
- `weighted`: arithmetic blend with weights on the simplex that minimise the OOF binary cross-entropy.
- `per_class`: arithmetic blend with simplex weights per class: the direction of a non-negative least-squares fit
  of the class's label on the models' probabilities, with an intercept (`discriminant_weights`), normalised to sum
  1 and shrunk toward the pooled weights of all classes by the class's positives (`ensemble.per_class_shrink`).
- `auto` (no registered method, a choice): the candidate with the best nested score, kept at `mean` unless it
  beats the mean by more than `ensemble.auto_margin_se` standard errors of the paired per-row difference.

Fitted weights never score the rows they were fitted on: the OOF that `fit_blend` returns blends each row with the
weights fitted without its nested part (its fold; one trained fold: a seeded split of its rows, `blend_parts`),
and the test with the weights fitted on all rows. The nested score of a method is each part's per-row F-beta
under the weights and the shared threshold fitted on the other parts' rows (`held_out_row_scores`), so two methods'
scores of the same rows differ by a paired per-row difference with a standard error.

Why per-class simplex weights rather than a per-class logistic stack on logits: the blend stays a convex
combination of probabilities, so it keeps the models' calibration (the thresholds fitted next transfer), predicts
with the same `arithmetic` combine (a (models, classes) weight matrix), and has models - 1 free values per class
instead of models + 1, with a natural prior (the pooled weights) to shrink a rare class to. The fit is quadratic in
the weights: a class's fit needs only the (models x models) Gram matrix of its probabilities, their sums and their
products with the labels, summed once per nested part, so every nested fit is a difference of sums and a tiny
quadratic programme solved for all classes at once (`projected_quadratic_min`).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mlic.config import EnsembleConfig, ThresholdsConfig
from mlic.data.folds import assign_folds
from mlic.errors import invalid
from mlic.metrics import fbeta_per_row
from mlic.registry import Registry
from mlic.thresholds import best_global_threshold, binarize

EPS = 1e-6
AUTO = "auto"  # ensemble.method: the candidate with the best nested score (`pick_over_baseline`)
BASELINE = "mean"  # what auto keeps unless another method clearly beats it
ROW_BLOCK = 2048  # rows whose probabilities are gathered at once: 45 MB of 5 models at iMet's 1,103 classes
QP_ITERATIONS = 300  # accelerated projected-gradient steps of each small quadratic programme
NEWTON_STEPS = 30  # weighted: projected Newton steps at most (it stops when a step no longer lowers the loss)


def _weighted_sum(arrays: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Sum of `arrays` (each (N, C)) weighted by (M,) weights, or per class by (M, C) ones, without stacking them."""
    out = np.zeros(arrays[0].shape, dtype=np.float32)  # float32: iMet's (109k, 1,103) blend is 0.5 GB, not 1
    for array, w in zip(arrays, weights, strict=True):
        out += np.asarray(w, dtype=np.float32) * array  # w: a scalar, or (C,) broadcast over the rows
    return out


def arithmetic(probs: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted arithmetic mean of probability matrices; `weights` (M,) or per class (M, C)."""
    return _weighted_sum(probs, weights)


def geometric(probs: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted geometric mean of probability matrices (clipped away from 0); `weights` (M,) or (M, C)."""
    logs = [np.log(np.clip(p, EPS, 1.0)) for p in probs]
    return np.exp(_weighted_sum(logs, weights)).astype(np.float32)


def equal_weights(probs: Sequence[np.ndarray], labels: np.ndarray, cfg: EnsembleConfig) -> np.ndarray:
    """1 / n_models each."""
    return np.full(len(probs), 1.0 / len(probs))


def bce_terms(
    probs: Sequence[np.ndarray], labels: np.ndarray, weights: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean binary cross-entropy of the blend with (M,) `weights`, and its gradient and Hessian in the weights.

    One pass over row blocks in float32 (sums in float64): iMet's probabilities are never stacked or widened.
    """
    n_models = len(probs)
    loss, gradient, hessian = 0.0, np.zeros(n_models), np.zeros((n_models, n_models))
    for start in range(0, len(labels), ROW_BLOCK):
        q = [np.asarray(p[start : start + ROW_BLOCK], dtype=np.float32) for p in probs]
        y = labels[start : start + ROW_BLOCK].astype(bool)
        blend = np.clip(_weighted_sum(q, weights), EPS, 1 - EPS)
        loss -= np.where(y, np.log(blend), np.log1p(-blend)).sum(dtype=np.float64)
        slope = np.where(y, -1.0 / blend, 1.0 / (1.0 - blend)).astype(np.float32)  # d loss / d blend
        curvature = np.square(slope)  # d2 loss / d blend2: 1/p^2 or 1/(1-p)^2
        for i in range(n_models):
            gradient[i] += np.einsum("nc,nc->c", slope, q[i]).sum(dtype=np.float64)
            weighted = curvature * q[i]
            for j in range(i, n_models):
                hessian[i, j] += np.einsum("nc,nc->c", weighted, q[j]).sum(dtype=np.float64)
                hessian[j, i] = hessian[i, j]
    size = labels.size
    return loss / size, gradient / size, hessian / size


def bce_weights(probs: Sequence[np.ndarray], labels: np.ndarray, cfg: EnsembleConfig) -> np.ndarray:
    """Simplex weights minimising the blend's mean binary cross-entropy, by projected Newton steps.

    The cross-entropy of a linear blend is convex in its weights, so each step minimises the loss's quadratic model
    over the simplex (`projected_quadratic_min`) and backtracks until the loss falls enough. A handful of passes
    over the rows converge to the weights the former Nelder-Mead search found, which needed hundreds of passes
    (5,000 iMet-sized rows: 0.4 s against 24 s; all 109k rows: 6 s a fit).
    """
    if len(probs) == 1:
        return np.ones(1)
    weights = np.full(len(probs), 1.0 / len(probs))
    loss, gradient, hessian = bce_terms(probs, labels, weights)
    for _ in range(NEWTON_STEPS):
        target = projected_quadratic_min(hessian[None] / 2, ((hessian @ weights - gradient) / 2)[None],
                                         weights[None], project_to_simplex)[0]  # fmt: skip
        direction = target - weights
        slope = float(gradient @ direction)
        if slope > -1e-12:
            break
        for step in 0.5 ** np.arange(12):
            trial = bce_terms(probs, labels, weights + step * direction)
            if trial[0] <= loss + 1e-4 * step * slope:
                break
        else:
            break  # no step lowers the loss: at the optimum as far as float32 sums tell
        weights = project_to_simplex((weights + step * direction)[None])[0]
        loss, gradient, hessian = trial
    return weights


def project_to_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row of `v` (K, M) onto the probability simplex (sort-based, vectorised)."""
    u = -np.sort(-v, axis=1)
    cumulative = np.cumsum(u, axis=1) - 1.0
    support = (u - cumulative / np.arange(1, v.shape[1] + 1) > 0).sum(axis=1)  # >= 1: the top entry always is
    tau = cumulative[np.arange(len(v)), support - 1] / support
    return np.maximum(v - tau[:, None], 0.0)


def non_negative(v: np.ndarray) -> np.ndarray:
    """Projection onto the non-negative orthant."""
    return np.maximum(v, 0.0)


def projected_quadratic_min(
    gram: np.ndarray, cross: np.ndarray, start: np.ndarray, project: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """The minimum over a convex set of v^T G v - 2 b^T v, for every (G, b) of (K, M, M) and (K, M) at once.

    Accelerated projected gradient (FISTA) from `start` with step 1 / (2 lambda_max(G)), `project` mapping onto
    the set; a few hundred steps of (K, M, M) products, negligible beside the passes over the rows. Each problem is
    scaled first (by its trace), which leaves its minimum alone.
    """
    scale = np.maximum(np.trace(gram, axis1=1, axis2=2), 1e-300)[:, None]
    g, b = gram / scale[:, :, None], cross / scale
    step = 1.0 / (2.0 * np.maximum(np.linalg.eigvalsh(g)[:, -1], 1e-12))[:, None]
    v = project(np.asarray(start, dtype=np.float64))
    z, t = v.copy(), 1.0
    for _ in range(QP_ITERATIONS):
        v_next = project(z - step * 2.0 * (np.einsum("kij,kj->ki", g, z) - b))
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        z, v, t = v_next + ((t - 1.0) / t_next) * (v_next - v), v_next, t_next
    return v


@dataclass(frozen=True)
class ClassStats:
    """Per class, the sums over rows a least-squares fit of the blend needs: sum q q^T, sum q, sum q y, positives.

    Sums over rows add and subtract, so the statistics of "all rows but part k" are all rows' minus part k's.
    """

    gram: np.ndarray  # (C, M, M): the models' probabilities' outer products, summed over rows
    sums: np.ndarray  # (C, M): the probabilities, summed
    cross: np.ndarray  # (C, M): the probabilities times the label, summed
    positives: np.ndarray  # (C,): positive rows
    rows: int

    def __add__(self, other: ClassStats) -> ClassStats:
        return ClassStats(self.gram + other.gram, self.sums + other.sums, self.cross + other.cross,
                          self.positives + other.positives, self.rows + other.rows)  # fmt: skip

    def __sub__(self, other: ClassStats) -> ClassStats:
        return ClassStats(self.gram - other.gram, self.sums - other.sums, self.cross - other.cross,
                          self.positives - other.positives, self.rows - other.rows)  # fmt: skip

    def centred(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class, the covariance of the probabilities and their covariance with the label (both times rows)."""
        n = max(self.rows, 1)
        gram = self.gram - self.sums[:, :, None] * self.sums[:, None, :] / n
        return gram, self.cross - self.sums * (self.positives[:, None] / n)


def class_stats(probs: Sequence[np.ndarray], labels: np.ndarray, rows: np.ndarray) -> ClassStats:
    """`ClassStats` of the given rows (indices), a block of whole rows at a time.

    Whole rows are contiguous in memory, so each block is read once, and each pair of models' products is one
    streaming `einsum` over it (at iMet's 1,103 classes, several times faster than a batched matmul per class).
    """
    n_models, n_classes = len(probs), labels.shape[1]
    gram, sums = np.zeros((n_classes, n_models, n_models)), np.zeros((n_classes, n_models))
    cross = np.zeros((n_classes, n_models))
    for start in range(0, len(rows), ROW_BLOCK):
        block = rows[start : start + ROW_BLOCK]
        q = [np.asarray(p[block], dtype=np.float32) for p in probs]
        y = labels[block].astype(np.float32)
        for i in range(n_models):
            sums[:, i] += q[i].sum(axis=0, dtype=np.float64)
            cross[:, i] += np.einsum("nc,nc->c", q[i], y)
            for j in range(i, n_models):
                gram[:, i, j] += np.einsum("nc,nc->c", q[i], q[j])
                gram[:, j, i] = gram[:, i, j]
    return ClassStats(gram, sums, cross, labels[rows].sum(axis=0, dtype=np.int64), len(rows))


def discriminant_weights(gram: np.ndarray, cross: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """(K, M) simplex weights along the non-negative least-squares fit of the centred label (`fallback` if none).

    A least-squares fit of y on the probabilities with an intercept and a free scale finds the direction that best
    separates positives from negatives (Fisher's discriminant); normalising it to sum 1 keeps the blend a convex
    combination, at the models' own scale. Without the intercept and scale (a plain Brier fit on the simplex) the
    few positives of a rare class dominate and the fit leans on the model that ranks them highest, losing the
    averaging of the negatives' noise: on synthetic data that cost more F2 at a shared threshold than it won.
    """
    v = projected_quadratic_min(gram, cross, np.zeros(cross.shape), non_negative)
    total = v.sum(axis=1, keepdims=True)
    return np.where(total > 1e-12, v / np.where(total > 1e-12, total, 1.0), fallback)


def per_class_from_stats(stats: ClassStats, shrink: float) -> np.ndarray:
    """(M, C) weights: each class's fit pulled to the pooled one by (n_c w_c + shrink w) / (n_c + shrink).

    The pooled weights are the fit of all classes' centred sums together (equal weights if no model separates).
    A class with few positives in the rows (iMet's tail) keeps little of its own weights, which would mostly fit
    noise; a class without any keeps none.
    """
    gram, cross = stats.centred()
    n_models = gram.shape[1]
    pooled = discriminant_weights(gram.sum(axis=0)[None], cross.sum(axis=0)[None], np.full(n_models, 1 / n_models))
    own = discriminant_weights(gram, cross, pooled)  # (C, M)
    n = stats.positives.astype(np.float64)[:, None]
    total = n + shrink
    weights = np.where(total > 0, (n * own + shrink * pooled) / np.where(total > 0, total, 1.0), pooled)
    return weights.T


def per_class_weights(probs: Sequence[np.ndarray], labels: np.ndarray, cfg: EnsembleConfig) -> np.ndarray:
    """(M, C) per-class simplex weights fitted on all rows (`per_class_from_stats`)."""
    return per_class_from_stats(class_stats(probs, labels, np.arange(len(labels))), cfg.per_class_shrink)


def per_class_by_part(
    probs: Sequence[np.ndarray], labels: np.ndarray, parts: np.ndarray, cfg: EnsembleConfig
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Per-class weights on all rows and on all rows but each part, from one pass of sums (all = the parts' sum)."""
    by_part = {int(k): class_stats(probs, labels, np.flatnonzero(parts == k)) for k in np.unique(parts)}
    total = functools.reduce(operator.add, by_part.values())
    held_out = {k: per_class_from_stats(total - s, cfg.per_class_shrink) for k, s in by_part.items()}
    return per_class_from_stats(total, cfg.per_class_shrink), held_out


WeightFitter = Callable[[Sequence[np.ndarray], np.ndarray, EnsembleConfig], np.ndarray]
PartFitter = Callable[[Sequence[np.ndarray], np.ndarray, np.ndarray, EnsembleConfig],
                      tuple[np.ndarray, dict[int, np.ndarray]]]  # fmt: skip


@dataclass(frozen=True)
class EnsembleMethod:
    """How an ensemble picks its weights (from OOF probabilities and labels) and combines probabilities.

    `fit_by_part` fits on all rows and on all rows but each part at once, when the method can share work between
    those fits; without it, `fit_weights` runs once per set of rows. `fitted`: whether the weights depend on the
    labels at all (mean and geometric: no, so their OOF needs no nesting).
    """

    fit_weights: WeightFitter
    combine: Callable[[Sequence[np.ndarray], np.ndarray], np.ndarray]
    fitted: bool = True
    fit_by_part: PartFitter | None = None

    def fit_nested(
        self, probs: Sequence[np.ndarray], labels: np.ndarray, parts: np.ndarray | None, cfg: EnsembleConfig
    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Weights fitted on all rows, and part -> weights fitted without that part's rows (empty without parts)."""
        if parts is None or not self.fitted:
            weights = self.fit_weights(probs, labels, cfg)
            return weights, {} if parts is None else {int(k): weights for k in np.unique(parts)}
        if self.fit_by_part is not None:
            return self.fit_by_part(probs, labels, parts, cfg)
        held_out = {}
        for k in np.unique(parts):
            rest = parts != k
            held_out[int(k)] = self.fit_weights([p[rest] for p in probs], labels[rest], cfg)
        return self.fit_weights(probs, labels, cfg), held_out


ENSEMBLES: Registry[EnsembleMethod] = Registry("ensemble method", "ensemble.method")
ENSEMBLES.register("mean")(EnsembleMethod(equal_weights, arithmetic, fitted=False))
ENSEMBLES.register("geometric")(EnsembleMethod(equal_weights, geometric, fitted=False))
ENSEMBLES.register("weighted")(EnsembleMethod(bce_weights, arithmetic))
ENSEMBLES.register("per_class")(EnsembleMethod(per_class_weights, arithmetic, fit_by_part=per_class_by_part))


def blend(
    method: str,
    oof: Sequence[np.ndarray],
    labels: np.ndarray,
    test: Sequence[np.ndarray],
    cfg: EnsembleConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit weights on all of the models' OOF probabilities, then blend OOF (in-sample) and test.

    Returns:
        The weights ((M,), or (M, C) per class), the blended OOF probabilities and the blended test probabilities.
    """
    rule = ENSEMBLES.get(method)
    weights = rule.fit_weights(oof, labels, cfg or EnsembleConfig())
    return weights, rule.combine(oof, weights), rule.combine(test, weights)


def check_methods(cfg: EnsembleConfig) -> None:
    """Fail before any fit, naming the key, on a method that is neither registered nor (`ensemble.method`) auto."""
    known = ENSEMBLES.names()
    allowed = {"ensemble.method": [AUTO, *known], "ensemble.auto_candidates": known}
    for key, names in (("ensemble.method", [cfg.method]), ("ensemble.auto_candidates", cfg.auto_candidates)):
        for name in names:
            if name not in allowed[key]:
                invalid(key, f"unknown ensemble method {name!r}", fix=f"use one of: {', '.join(allowed[key])}")


def blend_parts(folds: np.ndarray, labels: np.ndarray, cfg: ThresholdsConfig) -> np.ndarray | None:
    """Each OOF row's nested part: its fold, or, when all rows come from one fold, a seeded split of them.

    The split is the thresholds stage's (`threshold_fitting.nested_parts`: `thresholds.nested_splits`
    multilabel-stratified parts seeded by `thresholds.seed`), so both stages nest on the same rows. None: too few
    rows to split.
    """
    if len(np.unique(folds)) > 1:
        return np.asarray(folds)
    n_splits = min(cfg.nested_splits, len(folds))
    return assign_folds(labels, n_splits, cfg.seed) if n_splits >= 2 else None


@dataclass(frozen=True)
class BlendScoring:
    """How a blend's rows are scored, as the submission is: F-beta at a shared grid threshold, with label limits."""

    beta: float = 2.0
    min_labels: int = 1
    max_labels: int = 0
    grid_step: float = 0.01

    @classmethod
    def of(cls, cfg: ThresholdsConfig) -> BlendScoring:
        """The `thresholds` section's metric and label limits."""
        return cls(cfg.beta, cfg.min_labels, cfg.max_labels, cfg.grid_step)


def held_out_row_scores(blended: np.ndarray, labels: np.ndarray, held: np.ndarray, scoring: BlendScoring) -> np.ndarray:
    """Per-row F-beta of the `held` rows at the shared threshold fitted on the other rows of the same blend."""
    s = scoring
    threshold, _ = best_global_threshold(blended[~held], labels[~held], s.beta, s.min_labels, s.grid_step)
    return fbeta_per_row(labels[held], binarize(blended[held], threshold, s.min_labels, s.max_labels), s.beta)


@dataclass(frozen=True)
class NestedBlend:
    """One method fitted on all rows (the test's blend) and without each nested part (that part's OOF rows)."""

    method: str
    weights: np.ndarray  # (M,) or (M, C), fitted on all rows
    held_out: dict[int, np.ndarray]  # part -> weights fitted without its rows
    oof: np.ndarray  # (N, C): each row blended by the weights fitted without its part (no parts: in-sample)
    test: np.ndarray | None  # blended by `weights`; None when no test was given
    row_scores: np.ndarray | None  # (N,) nested per-row F-beta (`held_out_row_scores`); None without parts


def fit_blend(
    method: str,
    oofs: Sequence[np.ndarray],
    labels: np.ndarray,
    parts: np.ndarray | None,
    tests: Sequence[np.ndarray] | None,
    cfg: EnsembleConfig,
    scoring: BlendScoring,
) -> NestedBlend:
    """Fit `method` nested, blend each part's rows by the weights fitted without them, and score each part.

    A part's score uses those weights and a shared threshold fitted on the other parts' rows (`held_out_row_scores`).
    """
    rule = ENSEMBLES.get(method)
    weights, held_out = rule.fit_nested(oofs, labels, parts, cfg)
    test = None if tests is None else rule.combine(tests, weights)
    if parts is None:
        return NestedBlend(method, weights, held_out, rule.combine(oofs, weights), test, None)
    oof, scores = np.empty(labels.shape, dtype=np.float32), np.empty(len(labels))
    shared = None if rule.fitted else rule.combine(oofs, weights)  # nothing fitted: one blend serves every part
    for k, part_weights in held_out.items():
        blended = shared if shared is not None else rule.combine(oofs, part_weights)
        held = parts == k
        oof[held] = blended[held]
        scores[held] = held_out_row_scores(blended, labels, held, scoring)
    return NestedBlend(method, weights, held_out, oof, test, scores)


def paired_gain(diff: np.ndarray) -> tuple[float, float]:
    """The mean of per-row differences between two blends of the same rows, and its standard error."""
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")


@dataclass(frozen=True)
class AutoPick:
    """What a nested comparison with a baseline chose, and why."""

    method: str
    gain: float | None  # the best rival's nested F-beta minus the baseline's (None: nothing compared)
    standard_error: float | None  # of that gain, from the paired per-row differences
    reason: str


def pick_over_baseline(rows: Mapping[str, np.ndarray], baseline: str, margin_se: float, beta: float) -> AutoPick:
    """`baseline` unless the rival with the best nested score beats it by more than `margin_se` standard errors.

    The standard error is that of the mean per-row difference (the same rows, so paired): a fixed margin would be
    too strict on many rows and too lax on few. Ties between rivals go to the earlier in `rows`.
    """
    score_name, base = f"nested F{beta:g}", float(rows[baseline].mean())
    rivals = [m for m in rows if m != baseline]
    if not rivals:
        return AutoPick(baseline, None, None, f"{baseline} ({score_name} {base:.4f}): no other candidate")
    best = max(rivals, key=lambda m: float(rows[m].mean()))  # max keeps the first of equal scores
    gain, se = paired_gain(rows[best] - rows[baseline])
    versus = (f"{score_name} {float(rows[best].mean()):.4f} vs {baseline} {base:.4f} "
              f"(gain {gain:+.4f}, {margin_se:g} SE {margin_se * se:.4f})")  # fmt: skip
    if gain > 0 and gain > margin_se * se:
        return AutoPick(best, round(gain, 6), round(se, 6), f"{best}: {versus}")
    reason = f"{baseline}: the best other candidate, {best}, must beat it by more than {margin_se:g} SE: {versus}"
    return AutoPick(baseline, round(gain, 6), round(se, 6), reason)


@dataclass(frozen=True)
class BlendChoice:
    """The blend a run uses (`choose_blend`): its method and weights, its nested OOF and test, and why."""

    method: str  # the registered method used
    requested: str  # ensemble.method: auto or that method
    weights: np.ndarray  # (M,) or (M, C), fitted on all rows: the test's (and a new image's) blend
    oof: np.ndarray  # (N, C): each row blended by weights fitted without its nested part
    test: np.ndarray | None
    scores: dict[str, float]  # every fitted candidate's nested F-beta (6 decimals); empty without nested parts
    gain: float | None  # the best rival's nested F-beta minus the mean's (auto only)
    standard_error: float | None  # of that gain (paired per-row differences)
    reason: str
    nested_parts: int  # 0: too few rows to nest, and the OOF is blended in-sample


def _candidates(cfg: EnsembleConfig, n_models: int) -> list[str]:
    """The methods to fit: the asked one; with auto, mean (the baseline) and `auto_candidates` (one model: mean)."""
    if cfg.method != AUTO:
        return [cfg.method]
    return [BASELINE] if n_models == 1 else list(dict.fromkeys([BASELINE, *cfg.auto_candidates]))


def choose_blend(
    oofs: Sequence[np.ndarray],
    labels: np.ndarray,
    parts: np.ndarray | None,
    tests: Sequence[np.ndarray] | None,
    cfg: EnsembleConfig,
    scoring: BlendScoring = BlendScoring(),
) -> BlendChoice:
    """Blend the models' OOF and test probabilities with `cfg.method`, or with auto's choice (`pick_over_baseline`).

    Pure: usable outside the stage, e.g. on several models' fold-0 OOF (with `parts` from `blend_parts`).

    Args:
        oofs: Each model's (N, C) OOF probabilities of the same rows.
        labels: (N, C) truth of those rows.
        parts: (N,) nested part of each row (`blend_parts`); None: nothing nested, scored or chosen (auto: mean).
        tests: Each model's test probabilities, or None.
        cfg: The `ensemble` section.
        scoring: The metric and label limits of the nested score.
    """
    check_methods(cfg)
    parts = None if len(oofs) == 1 else parts  # one model: every method leaves it as it is, nothing to compare
    rows, kept, best = {}, {}, None
    for method in _candidates(cfg, len(oofs)):
        fit = fit_blend(method, oofs, labels, parts, tests, cfg, scoring)
        if fit.row_scores is not None:
            rows[method] = fit.row_scores
        if method == BASELINE or best is None or (method in rows and rows[method].mean() > rows[best].mean()):
            best = best if method == BASELINE else method
            kept = {m: f for m, f in {**kept, method: fit}.items() if m in (BASELINE, best)}  # the rest's OOF goes
    scores = {m: round(float(r.mean()), 6) for m, r in rows.items()}
    n_parts = 0 if parts is None else len(np.unique(parts))
    if cfg.method != AUTO:
        pick = AutoPick(cfg.method, None, None, f"ensemble.method is {cfg.method}")
    elif len(oofs) == 1:
        pick = AutoPick(BASELINE, None, None, "mean: a single model, which every method leaves as it is")
    elif not rows:
        pick = AutoPick(BASELINE, None, None, "mean: too few OOF rows to nest")
    else:
        pick = pick_over_baseline(rows, BASELINE, cfg.auto_margin_se, scoring.beta)
    fit, reason = kept[pick.method], pick.reason if cfg.method != AUTO else f"ensemble auto chose {pick.reason}"
    return BlendChoice(fit.method, cfg.method, fit.weights, fit.oof, fit.test, scores, pick.gain,
                       pick.standard_error, reason, n_parts)  # fmt: skip


@dataclass(frozen=True)
class ModelSelection:
    """The models `select_models` kept, in the order they were added, with the nested score after each step."""

    models: list[str]
    scores: list[float]  # nested F-beta of the blend of models[: i + 1]
    reason: str  # why the selection stopped


def select_models(
    oofs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    parts: np.ndarray,
    cfg: EnsembleConfig,
    scoring: BlendScoring = BlendScoring(),
    method: str = BASELINE,
) -> ModelSelection:
    """Greedy forward selection of models by the nested score of their `method` blend (default: the mean).

    Start from the model with the best nested score alone; at each step, add the model whose blend with the kept
    ones scores best, if it beats the kept blend by more than `cfg.auto_margin_se` standard errors of the paired
    per-row difference; stop at the first that does not. The margin keeps a model that adds only noise out. The
    final subset's nested score is biased upward by the selection (it was chosen on the same rows), so a report
    should show it as the selection's and compare subsets with that in mind.

    Args:
        oofs: Model name -> (N, C) OOF probabilities of the same rows.
        labels: (N, C) truth.
        parts: (N,) nested part of each row (`blend_parts`).
        cfg: The `ensemble` section (its margin, and per_class_shrink if `method` is per_class).
        scoring: The metric and label limits of the nested score.
        method: The registered blend that scores each subset.
    """

    def rows_of(names: Sequence[str]) -> np.ndarray:
        return fit_blend(method, [oofs[n] for n in names], labels, parts, None, cfg, scoring).row_scores

    single = {name: rows_of([name]) for name in oofs}
    first = max(single, key=lambda name: float(single[name].mean()))
    kept, current, scores = [first], single[first], [round(float(single[first].mean()), 6)]
    reason = "every model added"
    while len(kept) < len(oofs):
        trials = {name: rows_of([*kept, name]) for name in oofs if name not in kept}
        best = max(trials, key=lambda name: float(trials[name].mean()))
        gain, se = paired_gain(trials[best] - current)
        if not (gain > 0 and gain > cfg.auto_margin_se * se):
            reason = (f"stopped: adding {best} changes the nested F{scoring.beta:g} by {gain:+.4f}, "
                      f"not more than {cfg.auto_margin_se:g} SE ({cfg.auto_margin_se * se:.4f})")  # fmt: skip
            break
        kept, current = [*kept, best], trials[best]
        scores.append(round(float(current.mean()), 6))
    return ModelSelection(kept, scores, reason)


def model_shares(weights: np.ndarray, models: Sequence[str]) -> dict[str, float]:
    """Each model's weight in the blend (per-class weights: its mean over classes; the shares sum to 1)."""
    shares = weights if weights.ndim == 1 else weights.mean(axis=1)
    return {m: round(float(w), 6) for m, w in zip(models, shares, strict=True)}


def blend_record(choice: BlendChoice, models: Sequence[str], classes: Sequence[str]) -> dict:
    """What blend.json holds: the method used and why, every candidate's nested score, per-class weights if any."""
    per_class = None
    if choice.weights.ndim == 2:
        per_class = {m: {c: round(float(w), 6) for c, w in zip(classes, row, strict=True)}
                     for m, row in zip(models, choice.weights, strict=True)}  # fmt: skip
    return {"method": choice.method, "requested": choice.requested, "reason": choice.reason,
            "nested_fbeta": choice.scores, "gain": choice.gain, "standard_error": choice.standard_error,
            "nested_parts": choice.nested_parts, "class_weights": per_class}  # fmt: skip


def saved_blend(
    record: dict | None, shares: Mapping[str, float], models: Sequence[str], classes: Sequence[str], method: str
) -> tuple[str, np.ndarray]:
    """The method and (M,) or (M, C) weights a finished run blends new predictions with.

    Args:
        record: blend.json (`blend_record`), or None for a run written before it existed.
        shares: weights.json: model -> weight.
        models: The members, in the order of the probabilities to blend.
        classes: The probability columns' classes.
        method: The method to use without a record (the thresholds file's `ensemble`).
    """
    if record is None:
        return method, np.array([shares[m] for m in models])
    per_class = record.get("class_weights")
    if per_class is None:
        return record["method"], np.array([shares[m] for m in models])
    return record["method"], np.array([[per_class[m][c] for c in classes] for m in models])
