"""Metrics against sklearn (random and real labels, edge cases), threshold methods, regularisation, nesting."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from sklearn.metrics import average_precision_score, f1_score, fbeta_score, precision_score, recall_score

from mlic.config import ThresholdsConfig
from mlic.data.competitions.planet import PLANET_TAGS
from mlic.data.labels import encode_labels
from mlic.metrics import (
    average_precision_per_class,
    fbeta_samples,
    fold_prior_probs,
    mean_average_precision,
    per_class_table,
    precision_recall_f1,
    summary_metrics,
    top_k_predictions,
)
from mlic.predict.threshold_fitting import best_cut, fit_thresholds, nested_evaluation, regularise
from mlic.thresholds import binarize, shared_threshold_scores, threshold_grid


def model_like(labels: np.ndarray, seed: int = 0, strength: float = 2.0) -> np.ndarray:
    """Probabilities a decent model might give: logits pulled toward the truth, per-class skill varying."""
    rng = np.random.default_rng(seed)
    skill = rng.uniform(0.5, 1.5, labels.shape[1])
    logits = strength * skill * (2 * labels - 1) + rng.normal(0, 1.5, labels.shape) - 1.0
    return (1 / (1 + np.exp(-logits))).astype(np.float32)


@pytest.fixture
def noisy():
    rng = np.random.default_rng(1)
    labels = (rng.random((300, 6)) < [0.9, 0.5, 0.3, 0.1, 0.05, 0.02]).astype(np.uint8)
    probs = np.clip(0.35 * labels + 0.65 * rng.random(labels.shape), 0, 1)
    return labels, probs


@pytest.fixture
def edge_cases(noisy):
    """A class with no positives, a row with no predicted label, a row with no true label, many tied scores."""
    labels, probs = noisy
    labels, probs = labels.copy(), np.round(probs, 2)
    labels[:, 5] = 0
    labels[7] = 0
    probs[3] = 0.0
    return labels, probs


@pytest.fixture(scope="module")
def planet_labels():
    root = shared_path("planet-32px")
    frame = pd.read_csv(root / "train_v2.csv")
    return encode_labels([tags.split() for tags in frame["tags"]], PLANET_TAGS)


def sklearn_set(labels: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    kw = {"zero_division": 0}
    cp, cr = precision_score(labels, pred, average="macro", **kw), recall_score(labels, pred, average="macro", **kw)
    return {
        "cp": cp,
        "cr": cr,
        "cf1": 2 * cp * cr / (cp + cr) if cp + cr else 0.0,
        "op": precision_score(labels, pred, average="micro", **kw),
        "or": recall_score(labels, pred, average="micro", **kw),
        "of1": f1_score(labels, pred, average="micro", **kw),
        "f1_macro": f1_score(labels, pred, average="macro", **kw),
    }


def check_against_sklearn(labels: np.ndarray, probs: np.ndarray) -> None:
    for pred in (binarize(probs, 0.5, min_labels=0), top_k_predictions(probs, 3)):
        ours, theirs = precision_recall_f1(labels, pred), sklearn_set(labels, pred)
        assert ours == pytest.approx(theirs, abs=1e-12)
        expected = fbeta_score(labels, pred, beta=2, average="samples", zero_division=1.0)
        assert fbeta_samples(labels, pred, 2.0) == pytest.approx(expected, abs=1e-12)
    has_pos = labels.sum(0) > 0
    expected_ap = [average_precision_score(labels[:, c], probs[:, c]) for c in np.flatnonzero(has_pos)]
    ap = average_precision_per_class(labels, probs)
    assert np.allclose(ap[has_pos], expected_ap, atol=1e-12) and np.isnan(ap[~has_pos]).all()
    assert mean_average_precision(labels, probs) == pytest.approx(np.mean(expected_ap), abs=1e-12)


def test_metrics_match_sklearn_on_random_labels(noisy):
    check_against_sklearn(*noisy)


def test_metrics_match_sklearn_on_edge_cases(edge_cases):
    labels, probs = edge_cases
    check_against_sklearn(labels, probs)
    pred = binarize(probs, 0.5, min_labels=0)
    assert pred[3].sum() == 0  # the empty prediction row really is empty, and scores 0 (it has true labels)


def test_metrics_match_sklearn_on_real_planet_labels(planet_labels):
    check_against_sklearn(planet_labels[:5000], model_like(planet_labels[:5000]))


def test_fbeta_hand_example():
    truth = np.array([[1, 1, 0, 0]])
    pred = np.array([[1, 0, 1, 0]])  # tp 1, fp 1, fn 1: 5 / (5 + 4 + 1)
    assert fbeta_samples(truth, pred, 2.0) == pytest.approx(0.5)
    assert fbeta_samples(np.zeros((1, 3)), np.zeros((1, 3))) == 1.0


def test_summary_has_every_metric_and_its_top3_variant(noisy):
    labels, probs = noisy
    summary = summary_metrics(labels, probs, binarize(probs, 0.5))
    base = {"f2_samples", "cp", "cr", "cf1", "op", "or", "of1", "f1_macro"}
    assert set(summary) == base | {"map"} | {f"{k}_top3" for k in base}
    assert all(0 <= v <= 1 for v in summary.values())
    table = per_class_table(labels, binarize(probs, 0.5), list("abcdef"))
    assert [row["support"] for row in table] == labels.sum(0).tolist()


def test_binarize_tops_up_short_rows_and_caps_long_ones():
    probs = np.array([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7], [0.2, 0.45, 0.1]])
    thresholds = np.array([0.5, 0.5, 0.5])
    assert binarize(probs, thresholds, 0).tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert binarize(probs, thresholds, 1).tolist() == [[0, 0, 1], [1, 1, 1], [0, 1, 0]]
    assert binarize(probs, thresholds, 1, max_labels=2).tolist() == [[0, 0, 1], [1, 1, 0], [0, 1, 0]]
    # Top-up and caps rank by margin over each class's threshold, not by the raw probability.
    assert binarize(np.array([[0.3, 0.4]]), np.array([0.32, 0.9]), 1).tolist() == [[1, 0]]


def test_binarize_top_up_and_cap_select_as_a_stable_sort_would_ties_included():
    def by_sorting(probs, thresholds, min_labels, max_labels):  # the definition: rank rows by a stable argsort
        pred = probs >= thresholds
        counts = pred.sum(axis=1)
        for rows, k in ((counts < min_labels, min_labels), ((counts > max_labels) & (max_labels > 0), max_labels)):
            top = np.argsort(-(probs[rows] - thresholds), axis=1, kind="stable")[:, :k]
            fill = np.zeros((int(rows.sum()), probs.shape[1]), dtype=bool)
            np.put_along_axis(fill, top, True, axis=1)
            pred[rows] = fill
        return pred.astype(np.uint8)

    rng = np.random.default_rng(0)
    probs = (rng.integers(0, 6, size=(5000, 9)) / 5).astype(np.float32)  # six values: ties everywhere
    thresholds = rng.choice([0.2, 0.6, 0.8, 1.0], size=9)
    for min_labels, max_labels in ((1, 0), (2, 0), (3, 4), (0, 1), (0, 2), (9, 0), (12, 0)):
        expected = by_sorting(probs, thresholds, min_labels, max_labels)
        assert np.array_equal(binarize(probs, thresholds, min_labels, max_labels), expected), (min_labels, max_labels)


def test_best_cut_is_the_brute_force_best_for_each_class(noisy):
    """With the other classes fixed, no threshold of one class beats the exact search's (all distinct cuts tried)."""
    labels, probs = noisy
    thresholds = fit_thresholds(probs, labels, ThresholdsConfig(method="per_class_exact", min_labels=0))
    best = fbeta_samples(labels, binarize(probs, thresholds, 0))
    for c in range(labels.shape[1]):
        for cut in np.concatenate([np.unique(probs[:, c]), [1.1]]):
            trial = thresholds.copy()
            trial[c] = cut
            assert fbeta_samples(labels, binarize(probs, trial, 0)) <= best + 1e-12


def test_best_cut_gain_equals_the_change_in_summed_score(noisy):
    labels, probs = noisy
    truth, pred = labels.astype(bool), probs >= 0.5
    counts = ((truth & pred).sum(1), (~truth & pred).sum(1), (truth & ~pred).sum(1))
    cut, gain = best_cut(probs[:, 1], truth[:, 1], pred[:, 1], counts, np.argsort(-probs[:, 1]), 2.0)
    after = np.full(6, 0.5)
    after[1] = cut
    before_sum = fbeta_samples(labels, binarize(probs, 0.5, 0)) * len(labels)
    assert fbeta_samples(labels, binarize(probs, after, 0)) * len(labels) - before_sum == pytest.approx(gain)


@pytest.mark.parametrize("method", ["global", "per_class_exact", "optuna"])
def test_methods_are_deterministic_and_beat_the_default_threshold(noisy, method, sqlite_dir):
    labels, probs = noisy
    cfg = ThresholdsConfig(method=method, optuna_trials=12, optuna_storage=str(sqlite_dir / "a.db"))
    thresholds = fit_thresholds(probs, labels, cfg)
    again = fit_thresholds(
        probs, labels, ThresholdsConfig(**{**cfg.__dict__, "optuna_storage": str(sqlite_dir / "b.db")})
    )
    assert np.array_equal(thresholds, again)
    # The untuned 0.5 cut is a candidate of every method, and on these weak probabilities F2's best cuts lie well
    # below it (0.71 at 0.5; 0.80 global, 0.89 per class): fitting must beat it clearly, not just tie.
    at_half = fbeta_samples(labels, binarize(probs, 0.5))
    assert fbeta_samples(labels, binarize(probs, thresholds)) >= at_half + 0.05


def test_exact_beats_global_and_optuna_starts_from_exact(noisy, sqlite_dir):
    labels, probs = noisy
    scores = {}
    for method in ("global", "per_class_exact", "optuna"):
        cfg = ThresholdsConfig(method=method, optuna_trials=15, optuna_storage=str(sqlite_dir / "s.db"), min_labels=0)
        scores[method] = fbeta_samples(labels, binarize(probs, fit_thresholds(probs, labels, cfg), 0))
    assert scores["global"] <= scores["per_class_exact"] <= scores["optuna"] + 1e-12


def test_optuna_study_resumes_from_its_sqlite_storage(noisy, sqlite_dir):
    import optuna

    labels, probs = noisy
    cfg = ThresholdsConfig(method="optuna", optuna_trials=8, optuna_storage=str(sqlite_dir / "study.db"))
    first = fit_thresholds(probs, labels, cfg)
    (summary,) = optuna.study.get_all_study_summaries(f"sqlite:///{sqlite_dir / 'study.db'}")
    assert summary.n_trials == 8
    more = dataclasses.replace(cfg, optuna_trials=12)
    fit_thresholds(probs, labels, more)  # 4 more trials in the same study, not 12 new ones
    (summary,) = optuna.study.get_all_study_summaries(f"sqlite:///{sqlite_dir / 'study.db'}")
    assert summary.n_trials == 12 and first.shape == (6,)


def test_separable_predictions_reach_a_perfect_score():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 4)) < 0.4).astype(np.uint8)
    labels[labels.sum(1) == 0, 0] = 1
    probs = np.where(labels, 0.6 + 0.3 * rng.random(labels.shape), 0.4 * rng.random(labels.shape))
    thresholds = fit_thresholds(probs, labels, ThresholdsConfig(method="per_class_exact"))
    assert fbeta_samples(labels, binarize(probs, thresholds)) == 1.0


def test_shrinkage_pulls_rare_classes_to_the_global_threshold():
    labels = np.zeros((100, 2), dtype=np.uint8)
    labels[:90, 0], labels[:2, 1] = 1, 1  # supports 90 and 2
    shrunk = regularise(np.array([0.8, 0.8]), labels, 0.2, shrink=10.0)
    assert shrunk == pytest.approx([(90 * 0.8 + 10 * 0.2) / 100, (2 * 0.8 + 10 * 0.2) / 12])
    assert np.array_equal(regularise(np.array([0.8, 0.8]), labels, 0.2, shrink=0.0), [0.8, 0.8])


def test_nested_scores_come_from_thresholds_fitted_without_the_fold(noisy):
    labels, probs = noisy
    folds = np.arange(len(labels)) % 3
    report = nested_evaluation(probs, labels, folds, ThresholdsConfig(method="per_class_exact"), "per_class_exact")
    assert set(report.per_fold) == {"0", "1", "2"}
    assert report.nested["f2_samples"] < report.in_sample["f2_samples"]  # per-class cuts overfit 300 rows
    held = fit_thresholds(probs[folds != 0], labels[folds != 0], ThresholdsConfig(method="per_class_exact"))
    expected = fbeta_samples(labels[folds == 0], binarize(probs[folds == 0], held))
    assert report.per_fold["0"]["f2_samples"] == pytest.approx(expected, abs=1e-6)


def test_fold_prior_probs_use_only_the_other_folds():
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.uint8)
    probs = fold_prior_probs(labels, [np.array([0, 1]), np.array([2, 3])])
    assert probs.tolist() == [[0, 1], [0, 1], [1, 0], [1, 0]]


@pytest.mark.parametrize("min_labels", [0, 1])
def test_shared_threshold_scores_equal_one_metric_call_per_threshold(edge_cases, min_labels):
    labels, probs = edge_cases  # ties on grid values, an empty row, a class without positives
    grid = threshold_grid(0.01)
    fast = shared_threshold_scores(probs, labels, grid, 2.0, min_labels)
    slow = [fbeta_samples(labels, binarize(probs, t, min_labels)) for t in grid]
    assert np.allclose(fast, slow, atol=1e-12)


def test_a_single_row_gives_no_nested_score(noisy):
    # one fold is split into parts for its nested score (tests/test_thresholds_auto.py); one row cannot be
    labels, probs = noisy
    report = nested_evaluation(probs[:1], labels[:1], np.zeros(1, int), ThresholdsConfig(), "global")
    assert report.nested == {} and report.per_fold == {} and report.in_sample["f2_samples"] > 0


def test_shared_threshold_scores_in_blocks_are_the_bytes_of_one_pass(monkeypatch):
    import mlic.thresholds as thresholds

    rng = np.random.default_rng(1)
    probs = rng.random((1000, 30)).astype(np.float32)
    labels = (rng.random((1000, 30)) < 0.1).astype(np.uint8)
    grid = threshold_grid(0.02)
    one_pass = thresholds._row_scores(probs, labels, grid, 2.0, 1).mean(axis=0)
    monkeypatch.setattr(thresholds, "_BLOCK_VALUES", 51 * 64)  # 16 blocks of 64 rows (51 grid bins), the last short
    assert np.array_equal(shared_threshold_scores(probs, labels, grid, 2.0, 1), one_pass)


def test_average_precision_hardly_depends_on_its_column_chunk():
    rng = np.random.default_rng(3)
    probs = (rng.random((3000, 37)) * 40).round().astype(np.float32) / 40  # ties within every column
    labels = (rng.random((3000, 37)) < 0.05).astype(np.uint8)
    by_default = average_precision_per_class(labels, probs)  # 3,000 rows: chunks of 174 columns, all 37 at once
    assert np.isnan(by_default).sum() == (labels.sum(0) == 0).sum()
    for chunk in (1, 2, 8, 9, 64):  # the order of a float sum may change with the chunk's width: the last bit
        np.testing.assert_allclose(average_precision_per_class(labels, probs, chunk), by_default, rtol=1e-14)
