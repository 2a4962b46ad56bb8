import numpy as np
import pytest
from sklearn.metrics import average_precision_score, fbeta_score

from mlic.config import ThresholdsConfig
from mlic.metrics import fbeta_samples, fold_prior_probs, mean_average_precision, per_class_table, summary_metrics
from mlic.thresholds import binarize, fit_thresholds


@pytest.fixture
def noisy():
    rng = np.random.default_rng(1)
    labels = (rng.random((300, 6)) < [0.9, 0.5, 0.3, 0.1, 0.05, 0.02]).astype(np.uint8)
    probs = np.clip(0.35 * labels + 0.65 * rng.random(labels.shape), 0, 1)
    return labels, probs


def test_fbeta_samples_matches_sklearn(noisy):
    labels, probs = noisy
    pred = binarize(probs, 0.5, min_labels=1)
    expected = fbeta_score(labels, pred, beta=2, average="samples", zero_division=0)
    assert fbeta_samples(labels, pred, 2.0) == pytest.approx(expected, abs=1e-12)


def test_fbeta_hand_example():
    truth = np.array([[1, 1, 0, 0]])
    pred = np.array([[1, 0, 1, 0]])  # tp 1, fp 1, fn 1: 5 / (5 + 4 + 1)
    assert fbeta_samples(truth, pred, 2.0) == pytest.approx(0.5)
    assert fbeta_samples(np.zeros((1, 3)), np.zeros((1, 3))) == 1.0


def test_map_matches_sklearn_and_skips_empty_classes(noisy):
    labels, probs = noisy
    labels = labels.copy()
    labels[:, 5] = 0
    expected = average_precision_score(labels[:, :5], probs[:, :5], average="macro")
    assert mean_average_precision(labels, probs) == pytest.approx(expected)


def test_binarize_tops_up_short_rows():
    probs = np.array([[0.1, 0.2, 0.3], [0.9, 0.8, 0.1], [0.2, 0.45, 0.1]])
    thresholds = np.array([0.5, 0.5, 0.5])
    assert binarize(probs, thresholds, 0).tolist() == [[0, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert binarize(probs, thresholds, 1).tolist() == [[0, 0, 1], [1, 1, 0], [0, 1, 0]]
    # Top-up is relative to each class's threshold, not the raw probability.
    assert binarize(np.array([[0.3, 0.4]]), np.array([0.32, 0.9]), 1).tolist() == [[1, 0]]


def test_per_class_beats_or_ties_global_and_is_deterministic(noisy):
    labels, probs = noisy
    scores = {}
    for method in ("global", "per_class"):
        cfg = ThresholdsConfig(method=method)
        thresholds = fit_thresholds(probs, labels, cfg)
        assert np.array_equal(thresholds, fit_thresholds(probs, labels, cfg))
        scores[method] = fbeta_samples(labels, binarize(probs, thresholds, cfg.min_labels))
    assert scores["per_class"] >= scores["global"] - 1e-9
    assert scores["global"] > fbeta_samples(labels, binarize(probs, 0.99, 1))


def test_separable_predictions_reach_a_perfect_score():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 4)) < 0.4).astype(np.uint8)
    labels[labels.sum(1) == 0, 0] = 1
    probs = np.where(labels, 0.6 + 0.3 * rng.random(labels.shape), 0.4 * rng.random(labels.shape))
    thresholds = fit_thresholds(probs, labels, ThresholdsConfig(method="per_class"))
    assert fbeta_samples(labels, binarize(probs, thresholds)) == 1.0


def test_fold_prior_probs_use_only_the_other_folds():
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.uint8)
    probs = fold_prior_probs(labels, [np.array([0, 1]), np.array([2, 3])])
    assert probs.tolist() == [[0, 1], [0, 1], [1, 0], [1, 0]]


def test_summary_and_per_class_tables(noisy):
    labels, probs = noisy
    pred = binarize(probs, 0.5)
    summary = summary_metrics(labels, probs, pred)
    assert set(summary) == {"f2_samples", "map_macro", "f1_micro", "f1_macro"}
    table = per_class_table(labels, pred, list("abcdef"))
    assert [row["support"] for row in table] == labels.sum(0).tolist()
    assert all(0 <= row["f2"] <= 1 for row in table)
