"""Threshold methods side by side: fit time and held-out F2, at Planet and iMet scale.

Labels are the real label matrices (planet/train_v2.csv: 40,479 x 17; imet2019/train.csv: 109,237 x 1,103).
Probabilities are drawn for them like a model's: per class a skill s_c ~ U(0.5, 1.5), logit =
strength * s_c * (2y - 1) + N(0, 1.5) - 1, so classes differ in how separable they are. Rows are split once
(seed 0) into a fit half and a held-out half; each method fits on the first and is scored on the second.

Methods:
- `global`, `per_class_exact`, `per_class_exact+shrink` (the regularised one: thresholds.shrink) and `optuna`
  (a fixed number of trials, warm-started from the exact search) from `mlic.thresholds`;
- `sklearn_grid`: the search public Planet kernels use: for each class in turn, 100 cuts (0.01 .. 1.00), each
  scored with one `sklearn.metrics.fbeta_score(average="samples")` call on the whole matrix. At iMet scale that
  is 110,300 calls of about 3 s, so it runs for --sklearn-budget seconds and the time is extrapolated; its
  thresholds (and held-out F2) come from `grid_search`, a vectorised search of the same grid with the same
  objective, which the Planet run checks picks identical thresholds.
Held-out F2 is averaged over --draws draws (each its own probabilities and split); times are the first draw's.
Prints JSON. Usage: .venv/bin/python benchmarks/thresholds.py [--data ../shared/data] [--optuna-trials 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import fbeta_score

from mlic.config import ThresholdsConfig
from mlic.data.competitions.planet import PLANET_TAGS
from mlic.data.labels import encode_labels
from mlic.metrics import fbeta_from_counts, fbeta_samples
from mlic.predict.threshold_fitting import fit_per_class_exact, fit_thresholds
from mlic.thresholds import binarize

GRID = np.round(np.arange(0.01, 1.001, 0.01), 2)


def load(data: Path, name: str) -> np.ndarray:
    if name == "planet":
        frame = pd.read_csv(data / "planet" / "train_v2.csv")
        return encode_labels([t.split() for t in frame["tags"]], PLANET_TAGS)
    frame = pd.read_csv(data / "imet2019" / "train.csv")
    return encode_labels([t.split() for t in frame["attribute_ids"]], [str(c) for c in range(1103)])


def model_like(labels: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    skill = rng.uniform(0.5, 1.5, labels.shape[1])
    logits = strength * skill * (2.0 * labels - 1) + rng.normal(0, 1.5, labels.shape) - 1.0
    return (1 / (1 + np.exp(-logits))).astype(np.float32)


def sklearn_grid(probs: np.ndarray, labels: np.ndarray, budget_s: float = np.inf) -> tuple[np.ndarray, int]:
    """The public-kernel search: per class, 100 cuts, one sklearn fbeta_score call each (start: 0.2 everywhere).

    Returns the thresholds and the number of calls made (it stops once `budget_s` seconds are spent).
    """
    thresholds, calls, start = np.full(probs.shape[1], 0.2), 0, time.perf_counter()
    for c in range(probs.shape[1]):
        scores = []
        for cut in GRID:
            if time.perf_counter() - start > budget_s:
                return thresholds, calls
            thresholds[c] = cut
            scores.append(fbeta_score(labels, probs > thresholds, beta=2, average="samples", zero_division=0))
            calls += 1
        thresholds[c] = GRID[int(np.argmax(scores))]
    return thresholds, calls


def grid_search(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`sklearn_grid`'s search, vectorised: each class's 100 cuts scored at once from the other classes' counts."""
    truth, thresholds = labels.astype(bool), np.full(probs.shape[1], 0.2)
    pred = probs > thresholds
    tp, fp, fn = (truth & pred).sum(1), (~truth & pred).sum(1), (truth & ~pred).sum(1)
    for c in range(probs.shape[1]):
        y, on = truth[:, c], pred[:, c]
        tp0, fp0, fn0 = tp - (on & y), fp - (on & ~y), fn - (~on & y)
        col = probs[:, c, None] > GRID[None, :]
        yy = y[:, None]
        scores = fbeta_from_counts(tp0[:, None] + (yy & col), fp0[:, None] + (~yy & col), fn0[:, None] + (yy & ~col), 2)
        thresholds[c] = GRID[int(np.argmax(scores.mean(0)))]
        pred[:, c] = probs[:, c] > thresholds[c]
        tp, fp, fn = tp0 + (pred[:, c] & y), fp0 + (pred[:, c] & ~y), fn0 + (~pred[:, c] & y)
    return thresholds


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def split(labels: np.ndarray, strength: float, draw: int) -> tuple[np.ndarray, ...]:
    """Probabilities for one draw, and its fit and held-out halves: (fit probs, fit labels, held probs, held labels)."""
    probs = model_like(labels, strength, draw)
    order = np.random.default_rng(draw).permutation(len(labels))
    fit, held = order[: len(order) // 2], order[len(order) // 2 :]
    return probs[fit], labels[fit], probs[held], labels[held]


def fitters(args: argparse.Namespace, workdir: Path) -> dict:
    """Method name -> function (fit probs, fit labels) -> thresholds."""
    exact = ThresholdsConfig(min_labels=0)
    shrunk = ThresholdsConfig(min_labels=0, shrink=args.shrink)

    def optuna(pf: np.ndarray, lf: np.ndarray) -> np.ndarray:
        storage = workdir / f"optuna-{time.monotonic_ns()}.db"  # a fresh study each time: no resumed trials
        cfg = ThresholdsConfig(min_labels=0, optuna_trials=args.optuna_trials, optuna_storage=str(storage))
        return fit_thresholds(pf, lf, cfg, "optuna")

    return {
        "global": lambda pf, lf: fit_thresholds(pf, lf, exact, "global"),
        "per_class_exact": lambda pf, lf: fit_thresholds(pf, lf, exact, "per_class_exact"),
        f"per_class_exact+shrink{args.shrink:g}": lambda pf, lf: fit_thresholds(pf, lf, shrunk, "per_class_exact"),
        f"optuna_{args.optuna_trials}_trials": optuna,
        "grid_vectorised": grid_search,
    }


def run_scale(labels: np.ndarray, strength: float, args: argparse.Namespace, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    results = {name: {"seconds": None, "held_out_f2": []} for name in fitters(args, workdir)}
    for draw in range(args.draws):
        pf, lf, ph, lh = split(labels, strength, draw)
        for name, fit in fitters(args, workdir).items():
            thresholds, seconds = timed(fit, pf, lf)
            results[name]["seconds"] = results[name]["seconds"] or round(seconds, 3)
            results[name]["held_out_f2"].append(round(fbeta_samples(lh, binarize(ph, thresholds, 0)), 6))
            if draw == 0:
                results[name]["fit_f2"] = round(fbeta_samples(lf, binarize(pf, thresholds, 0)), 6)
    for r in results.values():
        r["mean_held_out_f2"] = round(float(np.mean(r["held_out_f2"])), 6)
    pf, lf, _, _ = split(labels, strength, 0)
    full = labels.shape[1] * len(GRID)
    (sk_thresholds, made), sk_seconds = timed(sklearn_grid, pf, lf, args.sklearn_budget)
    results["sklearn_grid"] = {**results["grid_vectorised"], "seconds": round(sk_seconds * full / made, 3),
                               "timed_calls": made, "extrapolated_to_calls": full}  # fmt: skip
    if made == full:
        same = np.array_equal(sk_thresholds, grid_search(pf, lf))
        results["sklearn_grid"]["same_thresholds_as_grid_vectorised"] = bool(same)
    exact = results["per_class_exact"]
    one_pass = ThresholdsConfig(min_labels=0, max_passes=1)
    _, seconds = timed(fit_per_class_exact, model_like(labels, strength, 0), labels, one_pass)
    exact["one_pass_seconds_all_rows"] = round(seconds, 3)  # global start, one sort, one pass, on every row
    exact["speedup_vs_sklearn_grid"] = round(results["sklearn_grid"]["seconds"] / exact["seconds"], 1)
    return {"rows": len(labels), "classes": labels.shape[1], "fit_rows": len(lf), "methods": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--optuna-trials", type=int, default=30)
    parser.add_argument("--shrink", type=float, default=20.0)
    parser.add_argument("--sklearn-budget", type=float, default=120, help="seconds; longer grids are extrapolated")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--scales", nargs="+", default=["planet", "imet2019"])
    args = parser.parse_args()
    strengths = {"planet": 2.0, "imet2019": 2.0}
    out = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.scales:
            out[name] = run_scale(load(args.data, name), strengths[name], args, Path(workdir) / name)
            print(json.dumps({name: out[name]}), flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
