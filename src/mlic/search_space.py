"""The language of `tune.space`: one `{kind: args}` distribution per params key, how it is checked and how it is drawn.

params.yaml writes `train.lr: {log_uniform: [0.001, 0.01]}`; `DISTRIBUTIONS` checks each kind's args and
`SUGGESTERS` draws it from an Optuna trial. Both halves live here, below `mlic.config`, rather than beside the tuner
in `mlic.experiments.tune`: a malformed space must fail whenever params load (every stage, not only `mlic tune`),
and config, in the base layer, may not import the experiments layer. Nothing here imports Optuna: a trial is
duck-typed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlic.errors import invalid
from mlic.registry import Registry


def _number(value: Any) -> float | None:
    """A YAML number as a float (1e-3, a string in YAML 1.1, too), or None for anything else (booleans included)."""
    if isinstance(value, bool):
        return None
    try:
        return float(value) if isinstance(value, (int, float, str)) else None
    except ValueError:
        return None


def _float_range(key: str, args: list, positive: bool) -> tuple[Any, ...]:
    """[low, high] of floats with low < high (and 0 < low when `positive`)."""
    low, high = (_number(a) for a in args) if len(args) == 2 else (None, None)
    if low is None or high is None or not low < high or (positive and low <= 0):
        invalid(key, f"needs [low, high] with {'0 < ' if positive else ''}low < high, got {args}",
                fix="e.g. {log_uniform: [0.001, 0.01]} or {uniform: [0.0, 0.5]}")  # fmt: skip
    return low, high


def _int_range(key: str, args: list) -> tuple[Any, ...]:
    """[low, high] of integers with low < high (both can be drawn)."""
    if len(args) != 2 or any(type(a) is not int for a in args) or not args[0] < args[1]:
        invalid(key, f"needs [low, high] of integers with low < high, got {args}", fix="e.g. {int: [1, 4]}")
    return tuple(args)


def _choices(key: str, args: list) -> tuple[Any, ...]:
    """Distinct scalars (null, booleans, numbers, strings: what Optuna's categorical distribution takes)."""
    scalar = all(a is None or isinstance(a, (bool, int, float, str)) for a in args)
    if not args or not scalar or len({(type(a), a) for a in args}) != len(args):
        invalid(key, f"needs a non-empty list of distinct scalars, got {args}", fix="e.g. {choice: [none, satellite]}")
    return tuple(args)


# Distribution kinds: name -> check of its args (key, args) -> the args as stored. The args are also the values a
# tuned key is checked with when params load (a range's ends, every choice); `SUGGESTERS` draws each kind.
DISTRIBUTIONS: dict[str, Callable[[str, list], tuple[Any, ...]]] = {
    "log_uniform": lambda key, args: _float_range(key, args, positive=True),
    "uniform": lambda key, args: _float_range(key, args, positive=False),
    "int": _int_range,
    "choice": _choices,
}


@dataclass(frozen=True)
class Distribution:
    """How `mlic tune` draws one params key, written `{kind: args}` in `tune.space` (see `DISTRIBUTIONS`).

    log_uniform and uniform: [low, high] floats; int: [low, high], both included; choice: [a, b, ...] scalars.
    """

    kind: str
    args: tuple[Any, ...]

    def to_dict(self) -> dict[str, list[Any]]:
        """As written in params.yaml."""
        return {self.kind: list(self.args)}

    def contains(self, value: Any) -> bool:
        """Whether the distribution can draw `value` (a choice among its args, or within its range)."""
        if self.kind == "choice":
            return value in self.args
        return isinstance(value, int | float) and self.args[0] <= value <= self.args[1]


def distribution(key: str, value: Any) -> Distribution:
    """A `tune.space` entry as a checked Distribution, or an error naming `key`."""
    if not isinstance(value, dict) or len(value) != 1:
        invalid(key, f"expected one {{kind: args}} mapping, got {value!r}", fix="e.g. {log_uniform: [0.001, 0.01]}")
    ((kind, args),) = value.items()
    if kind not in DISTRIBUTIONS:
        close = difflib.get_close_matches(str(kind), list(DISTRIBUTIONS), n=1)
        invalid(key, f"unknown distribution {kind!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                fix=f"use one of: {', '.join(DISTRIBUTIONS)}")  # fmt: skip
    if not isinstance(args, list):
        invalid(key, f"{kind} takes a list, got {args!r}", fix="e.g. {choice: [a, b]} or {uniform: [0.0, 1.0]}")
    return Distribution(kind, DISTRIBUTIONS[kind](key, args))


# --- drawing: each kind as an Optuna trial's suggest_* call (the keys of DISTRIBUTIONS, tests/test_tune.py checks) ---

Suggester = Callable[[Any, str, tuple], Any]  # (Optuna trial, params key, the distribution's args) -> a value
SUGGESTERS: Registry[Suggester] = Registry("distribution", "tune.space")


@SUGGESTERS.register("log_uniform")
def _log_uniform(trial: Any, key: str, args: tuple) -> float:
    return trial.suggest_float(key, args[0], args[1], log=True)


@SUGGESTERS.register("uniform")
def _uniform(trial: Any, key: str, args: tuple) -> float:
    return trial.suggest_float(key, args[0], args[1])


@SUGGESTERS.register("int")
def _int(trial: Any, key: str, args: tuple) -> int:
    return trial.suggest_int(key, args[0], args[1])


@SUGGESTERS.register("choice")
def _choice(trial: Any, key: str, args: tuple) -> Any:
    return trial.suggest_categorical(key, list(args))


def suggest(trial: Any, space: dict[str, Distribution]) -> dict[str, Any]:
    """A value for every key of `space`, drawn by the trial's sampler (each Optuna parameter is named by its key)."""
    return {key: SUGGESTERS.get(dist.kind)(trial, key, dist.args) for key, dist in space.items()}
