"""Kaggle submission files: exact writers, validation against the sample submission, and offline scoring."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlic.errors import MlicError
from mlic.io import atomic_path


@dataclass(frozen=True)
class SubmissionFormat:
    """The columns of a competition's submission, and its sample submission file under the data root.

    Labels are written space-separated in `label_column`, as tag names (Planet) or attribute ids (iMet).
    """

    id_column: str
    label_column: str
    sample_file: str


def write_submission(
    path: str | Path, fmt: SubmissionFormat, ids: Sequence[str], label_lists: Sequence[Sequence[str]]
) -> None:
    """Write `id,labels` rows in the order given, atomically."""
    frame = pd.DataFrame({fmt.id_column: list(ids), fmt.label_column: [" ".join(t) for t in label_lists]})
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_submission(path: str | Path, fmt: SubmissionFormat) -> pd.DataFrame:
    """Read a submission (or sample submission / solution with the same two columns) as strings.

    Row `i` of the frame is line `i + 2` of the file (the header is line 1; blank lines are kept as rows).

    Args:
        path: The CSV file.
        fmt: The competition's submission format; the header must be exactly `id_column,label_column`.

    Raises:
        MlicError: The file is missing, is not parseable CSV, or has the wrong header.
    """
    path = Path(path)
    frame = read_string_csv(path)
    problem = _header_problem(frame, fmt, path)
    if problem is not None:
        raise problem
    return frame


def read_string_csv(path: Path) -> pd.DataFrame:
    """Parse a CSV of strings with its header taken verbatim (no index inference, no NA conversion)."""
    if not path.is_file():
        raise MlicError("file is missing", path=path, fix="check the path, or write the submission first")
    try:
        # header=None: pandas would otherwise silently turn a first row with one extra field into an index.
        raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise MlicError("file is empty", path=path, row=1, fix=_CSV_FIX) from None
    except pd.errors.ParserError as exc:
        line = re.search(r"line (\d+)", str(exc))
        detail = str(exc).replace("Error tokenizing data. C error: ", "").strip()
        raise MlicError(
            f"malformed CSV: {detail}", path=path, row=int(line.group(1)) if line else None, fix=_CSV_FIX
        ) from None
    except UnicodeDecodeError as exc:
        raise MlicError(
            f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); is it a CSV file?",
            path=path,
            fix=_CSV_FIX,
        ) from None
    frame = raw.iloc[1:].reset_index(drop=True)
    frame.columns = [str(c) for c in raw.iloc[0]]
    return frame


_CSV_FIX = "write it as UTF-8 CSV with exactly two fields per line (quote fields that contain commas)"


def _header_problem(frame: pd.DataFrame, fmt: SubmissionFormat, path: Path) -> MlicError | None:
    """The wrong-header problem, or None when the header is exactly `id_column,label_column`."""
    expected = [fmt.id_column, fmt.label_column]
    found = list(frame.columns)
    if found == expected:
        return None
    return MlicError(
        f"wrong header {','.join(found)!r}; expected {','.join(expected)!r}",
        path=path,
        row=1,
        fix=f"make line 1 exactly {','.join(expected)} (same names, same order, nothing else)",
    )


def validate_submission(
    path: str | Path,
    fmt: SubmissionFormat,
    sample_path: str | Path,
    vocabulary: Collection[str],
    allow_empty: bool = False,
    max_listed: int = 20,
) -> list[MlicError]:
    """Check a submission against the competition's sample submission, returning every problem found.

    Labels are split on any whitespace, as Kaggle does, so repeated or trailing spaces are accepted.

    Args:
        path: The submission CSV.
        fmt: The competition's submission format.
        sample_path: The competition's sample submission (its ids and their order are the reference).
        vocabulary: The valid labels (tag names or attribute ids).
        allow_empty: Accept rows with no label.
        max_listed: List at most this many rows per kind of problem, then one "... and N more" line.

    Returns:
        One MlicError per problem, each naming the file, the line and the fix; empty when the file is valid.

    Raises:
        MlicError: The sample submission itself cannot be read.
    """
    path = Path(path)
    sample = read_submission(sample_path, fmt)
    try:
        sub = read_string_csv(path)
    except MlicError as exc:
        return [exc]
    problems = []
    header = _header_problem(sub, fmt, path)
    if header is not None:
        problems.append(header)
        if sub.shape[1] != 2:
            return problems
        # Two columns under the wrong names: the rows can still be checked by position.
        sub.columns = [fmt.id_column, fmt.label_column]
    ids, labels = sub[fmt.id_column], sub[fmt.label_column]
    problems += _check_ids(ids, sample[fmt.id_column], path, Path(sample_path), max_listed)
    problems += _check_labels(labels, set(vocabulary), path, allow_empty, max_listed)
    return problems


def csv_line(index: int) -> int:
    """The 1-based file line of frame row `index` (the header is line 1)."""
    return int(index) + 2


def _capped(
    rows: np.ndarray, kind: str, path: Path, max_listed: int, describe: Callable[[int], tuple[str, str]]
) -> list[MlicError]:
    """One problem per offending row, at most `max_listed`, plus one summary line for the rest.

    Args:
        rows: Frame row indices (0-based) with this kind of problem, in file order.
        kind: What is wrong, for the summary ("unknown labels").
        path: The file.
        max_listed: How many rows to list.
        describe: Frame row index -> (message, fix).
    """
    problems = []
    for index in rows[:max_listed]:
        message, fix = describe(int(index))
        problems.append(MlicError(message, path=path, row=csv_line(index), fix=fix))
    rest = len(rows) - max_listed
    if rest > 0:
        problems.append(
            MlicError(
                f"... and {rest} more rows with {kind}",
                path=path,
                row=csv_line(rows[max_listed]),
                fix=f"fix every row with {kind}, not only those listed",
            )
        )
    return problems


def _check_ids(
    ids: pd.Series, sample_ids: pd.Series, path: Path, sample_path: Path, max_listed: int
) -> list[MlicError]:
    """Row count, missing, unknown, empty, duplicated and out-of-order ids, checked against the sample."""
    problems = []
    if len(ids) != len(sample_ids):
        problems.append(
            MlicError(
                f"{len(ids)} rows, but the sample submission has {len(sample_ids)}",
                path=path,
                row=csv_line(len(ids) - 1) if len(ids) else 1,
                fix=f"write exactly one row per id of {sample_path}",
            )
        )
    missing = sample_ids[~sample_ids.isin(ids)]
    if len(missing):
        shown = ", ".join(repr(i) for i in missing.iloc[:5])
        problems.append(
            MlicError(
                f"{len(missing)} id(s) of the sample submission are missing, e.g. {shown}; "
                f"the first is on line {csv_line(missing.index[0])} of the sample submission",
                path=path,
                row=csv_line(missing.index[0]),
                fix=f"write one row for every id of {sample_path}",
            )
        )
    empty = ids.str.strip() == ""
    problems += _capped(
        np.flatnonzero(empty),
        "an empty id",
        path,
        max_listed,
        lambda i: ("empty id (blank line?)", "remove the blank line, or fill in the id"),
    )
    unknown = np.flatnonzero(~ids.isin(sample_ids) & ~empty)
    problems += _capped(
        unknown,
        "ids not in the sample submission",
        path,
        max_listed,
        lambda i: (
            f"id {ids.iat[i]!r} is not in the sample submission",
            f"remove this row, or correct the id to one of {sample_path} (exact spelling, no spaces)",
        ),
    )
    first = ~ids.duplicated(keep="first")
    first_line = pd.Series(ids.index[first] + 2, index=ids[first])
    problems += _capped(
        np.flatnonzero(~first & ~empty),
        "duplicated ids",
        path,
        max_listed,
        lambda i: (
            f"duplicate id {ids.iat[i]!r} (first at line {first_line[ids.iat[i]]})",
            "keep exactly one row per id",
        ),
    )
    problems += _check_order(ids, sample_ids, first.to_numpy(), path, sample_path)
    return problems


def _check_order(
    ids: pd.Series, sample_ids: pd.Series, keep: np.ndarray, path: Path, sample_path: Path
) -> list[MlicError]:
    """The first row out of the sample's order, comparing only the ids both files share.

    Missing and extra rows are reported elsewhere; leaving them out here keeps one dropped row from making
    every later row look misplaced.
    """
    if sample_ids.duplicated().any():
        first = int(np.flatnonzero(sample_ids.duplicated())[0])
        raise MlicError(
            f"the sample submission repeats id {sample_ids.iat[first]!r}",
            path=sample_path,
            row=csv_line(first),
            fix="re-download the sample submission",
        )
    positions = pd.Index(sample_ids).get_indexer(ids)
    shared = np.flatnonzero((positions >= 0) & keep)
    found = positions[shared]
    expected = np.sort(found)
    wrong = np.flatnonzero(found != expected)
    if not len(wrong):
        return []
    k = wrong[0]
    return [
        MlicError(
            f"ids out of the sample submission's order: found {ids.iat[shared[k]]!r} where the sample has "
            f"{sample_ids.iat[expected[k]]!r} ({len(wrong)} rows out of place)",
            path=path,
            row=csv_line(shared[k]),
            fix=f"write the rows in the order of {sample_path}",
        )
    ]


def _check_labels(
    labels: pd.Series, vocabulary: set[str], path: Path, allow_empty: bool, max_listed: int
) -> list[MlicError]:
    """Empty cells, labels outside the vocabulary, and labels repeated within a row."""
    tokens = labels.str.split()  # any run of whitespace separates labels, as on Kaggle
    problems = []
    if not allow_empty:
        problems += _capped(
            np.flatnonzero(tokens.str.len() == 0),
            "no labels",
            path,
            max_listed,
            lambda i: (
                "empty label cell (no labels)",
                "predict at least one label for this id, or allow empty rows if the competition does",
            ),
        )
    flat = tokens.explode().dropna()
    unknown = flat[~flat.isin(vocabulary)]
    examples = ", ".join(sorted(vocabulary, key=str)[:3])
    problems += _capped(
        unknown.index.unique().to_numpy(),
        "unknown labels",
        path,
        max_listed,
        lambda i: (
            f"unknown label(s) {' '.join(unknown.loc[[i]])!r} (not among the {len(vocabulary)} labels)",
            f"use only the competition's labels, spelled exactly (e.g. {examples}), space-separated",
        ),
    )
    pairs = flat.reset_index()
    repeated = flat[pairs.duplicated().to_numpy()]
    problems += _capped(
        repeated.index.unique().to_numpy(),
        "duplicate labels",
        path,
        max_listed,
        lambda i: (
            f"duplicate label(s) {' '.join(repeated.loc[[i]].unique())!r} in this row",
            "list each label at most once per row",
        ),
    )
    return problems
