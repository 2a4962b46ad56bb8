"""Blending models: equal-weight means, and OOF-fitted weights that favour the better model."""

import numpy as np
import pytest

from mlic.predict.ensemble import ENSEMBLES, EPS, blend


def _models(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((400, 5)) < 0.3).astype(np.uint8)
    good = np.clip(0.8 * labels + 0.1 + rng.normal(0, 0.05, labels.shape), 0.01, 0.99)
    noise = rng.uniform(0.01, 0.99, labels.shape)
    return labels, good, noise


@pytest.mark.parametrize("method", ENSEMBLES.names())
def test_every_ensemble_gives_simplex_weights_and_probabilities(method):
    labels, good, noise = _models()
    weights, oof, test = blend(method, [good, noise], labels, [good[:10], noise[:10]])
    assert weights.shape == (2,) and weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
    assert oof.shape == good.shape and test.shape == (10, 5)
    # the test inputs are the OOF inputs' first 10 rows, so the same weights must give the same rows
    assert np.allclose(test, oof[:10], rtol=1e-6, atol=0)
    assert ((oof > 0) & (oof <= 1)).all()
    same, _, _ = blend(method, [good], labels, [good])
    assert same == pytest.approx([1.0])


def test_mean_and_geometric_of_one_matrix_are_that_matrix():
    labels, good, noise = _models()
    for method in ("mean", "geometric"):
        _, oof, _ = blend(method, [good, good], labels, [good, good])
        assert np.allclose(oof, good, atol=1e-6)
    # Two different matrices tell the methods apart, and show both models are used with equal weights.
    a, b = good, noise.copy()
    b[0, 0] = 0.0  # the geometric mean clips at EPS, so a zero does not wipe out the other model's probability
    weights, mean, mean_test = blend("mean", [a, b], labels, [b, a])
    assert weights == pytest.approx([0.5, 0.5])
    assert np.allclose(mean, (a + b) / 2, atol=1e-6) and np.allclose(mean_test, mean, atol=1e-6)
    weights, geo, geo_test = blend("geometric", [a, b], labels, [b, a])
    expected = np.sqrt(np.clip(a, EPS, 1.0) * np.clip(b, EPS, 1.0))
    assert weights == pytest.approx([0.5, 0.5])
    assert np.allclose(geo, expected, rtol=1e-5, atol=1e-9) and np.allclose(geo_test, geo, rtol=1e-5, atol=1e-9)
    assert geo[0, 0] == pytest.approx(np.sqrt(EPS * a[0, 0]), rel=1e-5)
    assert not np.allclose(geo, mean, atol=1e-3)  # the two methods really differ on these inputs


def test_weighted_blend_leans_on_the_informative_model():
    labels, good, noise = _models()
    weights, _, _ = blend("weighted", [noise, good], labels, [noise, good])
    assert weights[1] > 0.9
