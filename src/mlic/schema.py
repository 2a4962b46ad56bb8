"""Frozen dataclasses built from plain params data, and checked: the validator behind `mlic.config`.

YAML gives mappings, lists and scalars; a `Schema` turns them into the section's frozen dataclass, field by field from
its type hints: nested dataclasses recursively, tuples from lists, floats from YAML 1.1's `1e-3` strings, and nothing
else converted (`yes` is no int, 1 is no bool). An unknown key is an error naming the key, the closest known one and
its owner; a wrong type names the key, the value and the expected type. Types that parse themselves (a models entry,
a search-space distribution) are built by the converter the schema is given for them.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mlic.errors import ConfigError, invalid

Converter = Callable[[str, Any], Any]  # (dotted key, raw value) -> built value; raises ConfigError


def plain(value: Any) -> Any:
    """A copy with tuples as lists, for YAML and JSON."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Schema:
    """How params data becomes dataclasses.

    Attributes:
        converters: Types built by their own function rather than field by field.
        check: Called with (key, value) for every built leaf and item of a tuple (e.g. registry names).
    """

    converters: Mapping[type, Converter]
    check: Callable[[str, Any], None]

    def coerce(self, key: str, hint: Any, value: Any) -> Any:
        """Check `value` against a type hint, converting only where YAML is ambiguous (1e-3 is a string in YAML 1.1)."""
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            members = [a for a in args if a is not type(None)]
            if len(members) == 1:
                return self.coerce(key, members[0], value)
            for member in members:  # `int | str`: the first member that takes the value
                try:
                    return self.coerce(key, member, value)
                except ConfigError:
                    continue
            names = " or ".join(getattr(m, "__name__", str(m)) for m in members)
            invalid(key, f"expected {names}, got {value!r} ({type(value).__name__})")
        if hint in self.converters:
            return self.converters[hint](key, value)
        if origin is dict:
            if not isinstance(value, dict):
                invalid(key, f"expected a mapping, got {value!r}")
            return {str(k): self.coerce(f"{key}.{k}", args[1], v) for k, v in value.items()}
        if origin is tuple:
            if not isinstance(value, (list, tuple)):
                invalid(key, f"expected a list, got {value!r}")
            return tuple(self.coerce(f"{key}[{i}]", args[0], v) for i, v in enumerate(value))
        if hint is float and not isinstance(value, bool):
            try:
                return float(value)
            except (TypeError, ValueError):
                pass
        if hint in (bool, int, str) and type(value) is hint:  # exact type: YAML's `yes` is no int, and 1 is no bool
            return value
        invalid(key, f"expected {getattr(hint, '__name__', hint)}, got {value!r} ({type(value).__name__})")

    def build(self, cls: type, data: Any, prefix: str, owner: str = "") -> Any:
        """Build dataclass `cls` from a mapping, rejecting unknown keys with a did-you-mean hint naming `owner`."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            invalid(prefix or "params", f"expected a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        kwargs = {}
        for key, value in data.items():
            full = f"{prefix}.{key}" if prefix else str(key)
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                invalid(full, f"unknown key{f' for {owner}' if owner else ''}{hint}", f"known: {', '.join(names)}")
            hint = hints[key]
            nested = dataclasses.is_dataclass(hint) and hint not in self.converters
            kwargs[key] = self.build(hint, value, full) if nested else self.coerce(full, hint, value)
            for item in kwargs[key] if isinstance(kwargs[key], tuple) else (kwargs[key],):
                self.check(full, item)
        return cls(**kwargs)
