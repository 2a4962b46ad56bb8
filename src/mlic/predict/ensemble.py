"""Blending several models' probabilities: weights chosen on the out-of-fold predictions, applied to the test.

Methods (`ensemble.method`), each a weight rule and a way to combine:
- `mean`: equal weights, arithmetic mean.
- `geometric`: equal weights, geometric mean of the probabilities (it punishes a label any model doubts).
- `weighted`: arithmetic blend with weights on the simplex that minimise the OOF binary cross-entropy.
Thresholds are fitted afterwards, on the blended OOF probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from mlic.registry import Registry

EPS = 1e-6


def arithmetic(probs: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted arithmetic mean of probability matrices."""
    return np.tensordot(weights, np.stack(probs), axes=1).astype(np.float32)


def geometric(probs: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted geometric mean of probability matrices (clipped away from 0)."""
    logs = np.log(np.clip(np.stack(probs), EPS, 1.0))
    return np.exp(np.tensordot(weights, logs, axes=1)).astype(np.float32)


def equal_weights(probs: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """1 / n_models each."""
    return np.full(len(probs), 1.0 / len(probs))


def bce_weights(probs: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Simplex weights (a softmax of free parameters) minimising the blend's mean binary cross-entropy."""
    if len(probs) == 1:
        return np.ones(1)
    stack, y = np.clip(np.stack(probs).astype(np.float64), EPS, 1 - EPS), labels.astype(np.float64)

    def loss(z: np.ndarray) -> float:
        w = np.exp(z - z.max())
        p = np.clip(np.tensordot(w / w.sum(), stack, axes=1), EPS, 1 - EPS)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())

    z = minimize(loss, np.zeros(len(probs)), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-8}).x
    w = np.exp(z - z.max())
    return w / w.sum()


@dataclass(frozen=True)
class EnsembleMethod:
    """How an ensemble picks its weights (from OOF probabilities and labels) and combines probabilities."""

    fit_weights: Callable[[Sequence[np.ndarray], np.ndarray], np.ndarray]
    combine: Callable[[Sequence[np.ndarray], np.ndarray], np.ndarray]


ENSEMBLES: Registry[EnsembleMethod] = Registry("ensemble method", "ensemble.method")
ENSEMBLES.register("mean")(EnsembleMethod(equal_weights, arithmetic))
ENSEMBLES.register("geometric")(EnsembleMethod(equal_weights, geometric))
ENSEMBLES.register("weighted")(EnsembleMethod(bce_weights, arithmetic))


def blend(
    method: str, oof: Sequence[np.ndarray], labels: np.ndarray, test: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit weights on the models' OOF probabilities (rows every model covers), then blend OOF and test.

    Returns:
        The weights, the blended OOF probabilities and the blended test probabilities.
    """
    rule = ENSEMBLES.get(method)
    weights = rule.fit_weights(oof, labels)
    return weights, rule.combine(oof, weights), rule.combine(test, weights)
