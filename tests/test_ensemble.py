"""Blending models: equal-weight means, and OOF-fitted weights that favour the better model."""

import numpy as np
import pytest

from mlic.ensemble import ENSEMBLES, blend


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
    assert ((oof > 0) & (oof <= 1)).all()
    same, _, _ = blend(method, [good], labels, [good])
    assert same == pytest.approx([1.0])


def test_mean_and_geometric_of_one_matrix_are_that_matrix():
    labels, good, _ = _models()
    for method in ("mean", "geometric"):
        _, oof, _ = blend(method, [good, good], labels, [good, good])
        assert np.allclose(oof, good, atol=1e-6)


def test_weighted_blend_leans_on_the_informative_model():
    labels, good, noise = _models()
    weights, _, _ = blend("weighted", [noise, good], labels, [noise, good])
    assert weights[1] > 0.9
