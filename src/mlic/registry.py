"""A tiny name -> factory registry, the way timm registers models: swappable parts are chosen by name in params."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mlic.errors import ConfigError

T = TypeVar("T")

_BY_PARAM: dict[str, list[Registry]] = {}  # every registry created so far, by the params key that picks its entries


def registered_names(param: str) -> set[str]:
    """The names registered so far in the registries of params key `param` (none before their modules import)."""
    return {name for registry in _BY_PARAM.get(param, ()) for name in registry.names()}


class Registry(Generic[T]):
    """A table of named entries (builders, functions) with a decorator to add to it.

    Args:
        kind: What the entries are, for error messages ("model", "loss", ...).
        param: The params.yaml key that picks an entry, for error messages.
    """

    def __init__(self, kind: str, param: str):
        self.kind, self.param = kind, param
        self._entries: dict[str, T] = {}
        _BY_PARAM.setdefault(param, []).append(self)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that adds the decorated object under `name`."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    @contextlib.contextmanager
    def registered(self, name: str, obj: T) -> Iterator[T]:
        """Register `obj` as `name` for the duration of a `with` block (a test's or a notebook's own entry)."""
        self.register(name)(obj)
        try:
            yield obj
        finally:
            del self._entries[name]

    def get(self, name: str) -> T:
        """The entry called `name`, or a ConfigError listing the known names and the closest match."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r} in {self.param}.{hint}",
                path="params.yaml",
                fix=f"set {self.param} to one of: {', '.join(sorted(self._entries))}",
            )
        return self._entries[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
