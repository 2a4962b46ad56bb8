"""Params values as `dvc exp run -S key=value` parses them (Hydra's override grammar), and the params they make."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlic.config import Config, config_from_dict, param_at
from mlic.errors import MlicError


@functools.singledispatch
def hydra_value(value: Any) -> str:
    """`value` in Hydra's override grammar, which `dvc exp run -S key=value` parses: it reads back the same value."""
    raise MlicError(f"cannot pass {value!r} ({type(value).__name__}) to `dvc exp run -S`",
                    fix="tune keys whose values are null, booleans, numbers, strings or lists of them")  # fmt: skip


@hydra_value.register(type(None))
def _null(value: None) -> str:
    return "null"


@hydra_value.register(bool)
def _bool(value: bool) -> str:
    return "true" if value else "false"


@hydra_value.register(int)
@hydra_value.register(float)
def _number(value: float) -> str:
    return repr(value)  # the shortest text that reads back as the same float


@hydra_value.register(str)
def _string(value: str) -> str:
    """Quoted, so that `none`, `true`, `1e-3` or `a,b` stay strings (a bare comma would make a sweep).

    In Hydra's quoted strings a backslash escapes only a quote or another backslash before a quote or the end.
    """
    return "'" + re.sub(r"(\\*)('|\Z)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value) + "'"


@hydra_value.register(list)
@hydra_value.register(tuple)
def _list(value: Sequence) -> str:
    return "[" + ",".join(hydra_value(item) for item in value) + "]"


def set_param_args(params_file: Path, values: dict[str, Any]) -> list[str]:
    """The `-S` arguments of `dvc exp run` that set `values` (dotted key -> value) in the params file."""
    prefix = "" if params_file.name == "params.yaml" else f"{params_file.name}:"
    return [arg for key, value in values.items() for arg in ("-S", f"{prefix}{key}={hydra_value(value)}")]


def with_values(cfg: Config, values: dict[str, Any]) -> Config:
    """`cfg` with `values` (dotted key -> value) set, checked as params.yaml is (a ConfigError names the key)."""
    data = cfg.to_dict()
    for key, value in values.items():
        parent, _, leaf = key.rpartition(".")
        param_at(data, parent)[leaf] = value
    return config_from_dict(data)
