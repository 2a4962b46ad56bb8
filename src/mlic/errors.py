"""User-facing errors: one clear message naming the file, the row and the fix, never a traceback."""

from __future__ import annotations

from typing import NoReturn

DEFAULT_PARAMS = "params.yaml"  # the params file a key error names; the CLI re-points it at --params


class MlicError(Exception):
    """An error caused by the user's input or configuration, reported without a traceback.

    Args:
        message: What is wrong.
        path: The file concerned, if any.
        row: The 1-based line (or row) in that file, if any.
        fix: What the user should do about it.
    """

    def __init__(self, message: str, *, path: object = None, row: int | None = None, fix: str | None = None):
        self.message, self.path, self.row, self.fix = message, path, row, fix
        super().__init__(self.format())

    def format(self) -> str:
        """Render as `file:row: message (fix: ...)`."""
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.row}: " if self.row is not None else f"{self.path}: "
        tail = f"\n  fix: {self.fix}" if self.fix else ""
        return f"{where}{self.message}{tail}"


class ConfigError(MlicError):
    """A problem in params.yaml: unknown key, wrong type or inconsistent values."""


class DataProblems(MlicError):
    """Several problems found in a dataset or file, reported together, one line each.

    Args:
        problems: Each an MlicError naming its file, row and fix.
        summary: One line put first ("3 problems in data/raw/planet").
    """

    def __init__(self, problems: list[MlicError], summary: str):
        self.problems = problems
        body = "\n".join(f"- {p.format()}".replace("\n", "\n  ") for p in problems)
        super().__init__(f"{summary}\n{body}")


def invalid(key: str, message: str, fix: str | None = None) -> NoReturn:
    """Raise the ConfigError of a bad params key: `key: message`, with the fix."""
    raise ConfigError(f"{key}: {message}", path=DEFAULT_PARAMS, fix=fix)
