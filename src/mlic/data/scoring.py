"""Scoring a submission against the true labels, as Kaggle would (sample-averaged F-beta), with other views of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.metrics import f1_score

from mlic.data.submission import SubmissionFormat, csv_line, read_string_csv, read_submission
from mlic.errors import MlicError
from mlic.metrics import fbeta_from_counts


def score_submission(
    submission_path: str | Path, solution_path: str | Path, fmt: SubmissionFormat, beta: float = 2.0
) -> dict[str, float | int]:
    """Score a submission offline as Kaggle would, against a solution file with the true labels.

    Args:
        submission_path: The submission CSV (exact header `id_column,label_column`).
        solution_path: The solution CSV: the same two columns; extra columns (such as "Usage") are ignored.
        fmt: The competition's submission format.
        beta: F-beta's beta; Planet and iMet use 2.

    Returns:
        `f{beta}_samples` (the leaderboard metric), `f1_micro`, `f1_macro` over the union of labels seen,
        `rows` scored, and the mean number of labels per row predicted and true.

    Raises:
        MlicError: A file is unreadable, repeats an id, or the submission lacks ids of the solution.
    """
    sub = read_submission(submission_path, fmt)
    solution = _read_solution(Path(solution_path), fmt)
    for frame, where in ((sub, Path(submission_path)), (solution, Path(solution_path))):
        _raise_on_duplicate(frame[fmt.id_column], where)
    positions = pd.Index(sub[fmt.id_column]).get_indexer(solution[fmt.id_column])
    if (positions < 0).any():
        missing = solution[fmt.id_column][positions < 0]
        raise MlicError(
            f"{len(missing)} id(s) of the solution are missing from the submission, e.g. "
            + ", ".join(repr(i) for i in missing.iloc[:5]),
            path=submission_path,
            fix=f"write one row for every id of {solution_path}",
        )
    y_true, y_pred = _binary_matrices(solution[fmt.label_column], sub[fmt.label_column].iloc[positions])
    tp = np.asarray(y_true.multiply(y_pred).sum(axis=1)).ravel()
    n_true, n_pred = np.asarray(y_true.sum(axis=1)).ravel(), np.asarray(y_pred.sum(axis=1)).ravel()
    rows = len(solution)
    return {
        f"f{beta:g}_samples": round(float(fbeta_from_counts(tp, n_pred - tp, n_true - tp, beta).mean()), 6),
        "f1_micro": round(float(f1_score(y_true, y_pred, average="micro", zero_division=0)), 6),
        "f1_macro": round(float(f1_score(y_true, y_pred, average="macro", zero_division=0)), 6),
        "rows": rows,
        "mean_labels_predicted": round(float(n_pred.sum() / max(rows, 1)), 6),
        "mean_labels_true": round(float(n_true.sum() / max(rows, 1)), 6),
    }


def _read_solution(path: Path, fmt: SubmissionFormat) -> pd.DataFrame:
    """A solution file's id and label columns (it may carry others, such as Kaggle's "Usage")."""
    frame = read_string_csv(path)
    missing = [c for c in (fmt.id_column, fmt.label_column) if c not in frame.columns]
    if missing:
        raise MlicError(
            f"solution lacks column(s) {missing}; found {list(frame.columns)}",
            path=path,
            row=1,
            fix=f"the header must include {fmt.id_column} and {fmt.label_column}",
        )
    return frame[[fmt.id_column, fmt.label_column]]


def _raise_on_duplicate(ids: pd.Series, path: Path) -> None:
    """Raise on the first repeated id: scoring by id needs each id once."""
    dup = ids.duplicated(keep="first")
    if dup.any():
        index = int(np.flatnonzero(dup)[0])
        raise MlicError(f"duplicate id {ids.iat[index]!r}", path=path, row=csv_line(index), fix="keep one row per id")


def _binary_matrices(true: pd.Series, pred: pd.Series) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Sparse binary (N, C) matrices of two aligned label columns over the union of their labels.

    Sparse, because iMet's 1,103 labels with ~4 per row would make dense matrices 99.7% zeros.
    """
    flat = [s.reset_index(drop=True).str.split().explode().dropna() for s in (true, pred)]
    codes, uniques = pd.factorize(pd.concat(flat, ignore_index=True))
    shape = (len(true), max(len(uniques), 1))
    matrices, start = [], 0
    for part in flat:
        cols = codes[start : start + len(part)]
        start += len(part)
        matrix = sparse.csr_matrix((np.ones(len(part), np.int8), (part.index.to_numpy(), cols)), shape=shape)
        matrix.sum_duplicates()
        matrix.data[:] = 1  # a label listed twice in a row still counts once
        matrices.append(matrix)
    return matrices[0], matrices[1]
