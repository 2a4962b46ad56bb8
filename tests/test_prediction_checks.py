"""Predictions are checked wherever they are read: NaN or values outside [0, 1] stop with one message, nothing runs.

Every stage that reads predictions (ensemble, thresholds, submit, evaluate) and `mlic predict` refuse them, naming
the file, the model, the fold and the first bad rows, and leave their outputs as they were.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from finished_run import copy_run

from mlic.errors import MlicError
from mlic.layout import check_probabilities


def test_good_probabilities_pass_and_bad_ones_name_the_first_rows_and_cells():
    probs = np.full((8, 5), 0.5, dtype=np.float32)
    assert check_probabilities(probs, "p.npy", "model m, fold 0", "fix it") is probs
    probs[[0, 0, 0, 0], [0, 1, 2, 3]] = [np.nan, np.inf, -0.1, 1.5]  # four bad cells in row 0: three are shown
    probs[6, 4] = np.nan
    with pytest.raises(MlicError) as raised:
        check_probabilities(probs, "p.npy", "model m, fold 0", "fix it", [f"image {i}.jpg" for i in range(8)])
    message = str(raised.value)
    assert "model m, fold 0: 2 of 8 rows hold NaN, infinite or out-of-[0, 1] predictions" in message
    assert "image 0.jpg (class 0 = nan, class 1 = inf, class 2 = -0.1, ...); image 6.jpg (class 4 = nan)" in message
    assert "p.npy" in message and "fix it" in message
    exactly_one = np.array([[0.0, 1.0]], dtype=np.float32)  # the bounds are probabilities
    assert check_probabilities(exactly_one, "p.npy", "m", "f") is exactly_one


@pytest.fixture
def project(finished_run, tmp_path, monkeypatch) -> Path:
    """A private copy of the finished tiny run (outputs only, no git or DVC cache), as the working directory."""
    copy = copy_run(finished_run, tmp_path / "run", outputs_only=True)
    monkeypatch.chdir(copy)
    return copy


def _corrupt_npy(path: Path, cells: list[tuple[int, int | slice]], value: float) -> None:
    probs = np.load(path)
    for row, col in cells:
        probs[row, col] = value
    np.save(path, probs)


def _corrupt_npz(path: Path, cells: list[tuple[int, int | slice]], value: float) -> None:
    with np.load(path) as saved:
        arrays = dict(saved)
    for row, col in cells:
        arrays["probs"][row, col] = value
    np.savez(path, **arrays)


ENSEMBLE_TEST = "data/processed/ensemble/test.npy"
ENSEMBLE_OOF = "data/processed/ensemble/oof.npz"
FOLD_TEST = "data/processed/train/hourglass/fold_1/test.npy"
FOLD_OOF = "data/processed/train/baseline/fold_0/oof.npz"

CASES = {  # stage, file, cells, value, the words the message must hold
    "submit-nan-cell": ("submit", ENSEMBLE_TEST, [(3, 2)], np.nan, ["model ensemble", "row 3 (class 2 = nan)"]),
    "submit-nan-row": ("submit", ENSEMBLE_TEST, [(0, slice(None))], np.nan, ["model ensemble", "row 0"]),
    "submit-above-one": ("submit", ENSEMBLE_TEST, [(5, 1)], 1.7, ["row 5 (class 1 = 1.7)"]),
    "submit-negative": ("submit", ENSEMBLE_TEST, [(7, 0)], -0.2, ["row 7 (class 0 = -0.2)"]),
    "thresholds-oof": ("thresholds", ENSEMBLE_OOF, [(4, 0)], np.inf, ["out-of-fold", "(fold "]),
    "evaluate-oof": ("evaluate", ENSEMBLE_OOF, [(2, 3)], np.nan, ["model ensemble, out-of-fold"]),
    "ensemble-fold-test": ("ensemble", FOLD_TEST, [(1, 0)], np.nan, ["model hourglass, fold 1, test", "row 1"]),
    "ensemble-fold-oof": ("ensemble", FOLD_OOF, [(0, 1)], 2.5, ["model baseline, fold 0, out-of-fold"]),
}
OUTPUT_OF = {
    "submit": "submissions/submission.csv",
    "thresholds": "data/processed/thresholds.json",
    "evaluate": "reports/metrics.json",
    "ensemble": ENSEMBLE_TEST,
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_bad_predictions_stop_the_stage_naming_file_model_fold_and_rows(project, case, capsys):
    from mlic.cli import main as mlic_main

    stage, file, cells, value, words = CASES[case]
    (_corrupt_npz if file.endswith(".npz") else _corrupt_npy)(project / file, cells, value)
    output = project / OUTPUT_OF[stage]
    before = output.read_bytes()
    assert mlic_main([stage]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mlic {stage}: error: {file}: ") and "Traceback" not in err
    assert "NaN, infinite or out-of-[0, 1] predictions" in err and "fix:" in err
    for word in words:
        assert word in err
    assert output.read_bytes() == before  # nothing rewritten


@pytest.mark.slow
def test_predict_refuses_a_fold_that_outputs_nan_naming_model_fold_and_image(finished_run, tmp_path, monkeypatch,
                                                                             capsys):  # fmt: skip
    from mlic.cli import main as mlic_main
    from mlic.loop.fold_model import FoldModel

    original = FoldModel.predict

    def nan_in_second_row(self, arrays, batch_size):
        probs = original(self, arrays, batch_size)
        if self.model == "hourglass" and self.fold == 1:
            probs[1, 0] = np.nan
        return probs

    monkeypatch.setattr(FoldModel, "predict", nan_in_second_row)
    images = sorted((finished_run / "data/raw/sample/test-jpg").glob("*.jpg"))[:3]
    out = tmp_path / "predictions.csv"
    args = ["predict", *map(str, images), "--run", str(finished_run), "--out", str(out)]
    assert mlic_main(args) == 2
    err = capsys.readouterr().err
    assert "model hourglass, fold 1" in err and f"{images[1]} (class 0 = nan)" in err
    assert not out.exists()
