"""What every competition reader provides: parsed raw data, and a writer for its exact submission format."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from mlic.errors import MlicError
from mlic.registry import Registry


@dataclass(frozen=True)
class RawData:
    """A competition's training labels and image locations, as read from its raw files."""

    classes: tuple[str, ...]
    train_ids: list[str]
    train_tags: list[list[str]]
    train_paths: list[Path]
    test_ids: list[str]
    test_paths: list[Path]


class Competition(Protocol):
    """A competition reader: registered in COMPETITIONS under the name used by `data.competition`."""

    name: str

    def read(self, root: Path) -> RawData:
        """Read and check the raw competition files under `root`."""
        ...

    def write_submission(self, path: Path, ids: Sequence[str], tag_lists: Sequence[Sequence[str]]) -> None:
        """Write a submission in the competition's exact format, rows in the order given."""
        ...


COMPETITIONS: Registry[Competition] = Registry("competition", "data.competition")


def read_csv_checked(path: Path, columns: Sequence[str], what: str) -> pd.DataFrame:
    """Read a CSV of strings, checking it exists, parses and has the required columns.

    Args:
        path: The CSV file.
        columns: Columns that must be present.
        what: What the file is, for the fix hint ("the Planet training labels").

    Raises:
        MlicError: Naming the file and what to do.
    """
    if not path.is_file():
        raise MlicError(
            f"{what} file is missing", path=path, fix="check data.root in params.yaml, or run mlic download"
        )
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise MlicError(f"malformed CSV: {exc}".strip(), path=path, fix="re-download the file") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MlicError(
            f"missing column(s) {missing}; found {list(frame.columns)}",
            path=path,
            row=1,
            fix=f"the header must be {','.join(columns)}",
        )
    return frame


def check_unique(frame: pd.DataFrame, column: str, path: Path) -> None:
    """Raise on the first duplicated id, naming both rows (1-based file lines, header = line 1)."""
    dup = frame[column].duplicated(keep=False)
    if dup.any():
        rows = frame.index[dup][:2] + 2
        raise MlicError(
            f"duplicate id {frame[column][dup].iloc[0]!r} (also at line {rows[0]})",
            path=path,
            row=int(rows[1]),
            fix="remove the duplicate row",
        )
