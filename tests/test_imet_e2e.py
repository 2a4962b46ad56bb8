"""The whole pipeline under `dvc repro` on a tiny synthetic iMet 2019 competition, with images, in a temporary project.

The iMet reader was otherwise exercised only through its labels: here PNG photos of varied, non-square sizes go in,
rare attributes are dropped by `data.min_label_count`, and the submission must name the original attribute ids.
"""

import collections
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from finished_run import copy_pipeline, run_tool

pytestmark = pytest.mark.slow

ROOT = "data/raw/imet2019"
MIN_LABEL_COUNT = 3
TINY_IMET = {
    "sample": {
        "competition": "imet2019",
        "out_dir": ROOT,
        "n_train": 120,
        "n_test": 30,
        "imet": {"cultures": 6, "tags": 14, "tail_ratio": 0.02, "min_side": 24, "max_side": 48},
    },
    "data": {"competition": "imet2019", "root": ROOT, "min_label_count": MIN_LABEL_COUNT},
    "prepare": {"image_size": 32},
    "hog": {"image_size": 32},
    "folds": {"n_splits": 2},
    "models": {"baseline": {"extra_filters": 16}},
    # 60 training photos per fold: small batches and 8 epochs give the ~60 optimizer steps the model needs to beat
    # the all-prior baseline clearly (2 epochs of 32, as in the Planet e2e, left it below); seconds at 32 px.
    "train": {"folds": [0, 1], "epochs": 8, "batch_size": 8, "augment": "photo", "tta": "flips"},
    "thresholds": {"grid_step": 0.05, "optuna_trials": 10},
}


@pytest.fixture(scope="module")
def imet_run(tmp_path_factory) -> tuple[Path, str]:
    """The tiny iMet project after `dvc repro`, and that run's log."""
    root = copy_pipeline(tmp_path_factory.mktemp("imet_project"), TINY_IMET)
    run_tool(root, "dvc", "init", "--no-scm", "-q")
    with pytest.MonkeyPatch.context() as env:
        # One OpenMP thread: on busy shared cores torch's second thread spin-waits, which made a fold's training here
        # 5x slower (measured: 65 s against 12 s per fold with the machine loaded by other jobs).
        env.setenv("OMP_NUM_THREADS", "1")
        return root, run_tool(root, "dvc", "repro")


def _train_counts(root: Path) -> dict[str, int]:
    """How many training images carry each attribute id of labels.csv (0 for the unused ones)."""
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    train = pd.read_csv(root / "train.csv", dtype=str)
    counts = collections.Counter(a for cell in train["attribute_ids"] for a in cell.split())
    return {a: counts[a] for a in labels["attribute_id"]}


def test_submission_is_valid_imet_with_original_attribute_ids(imet_run):
    project, log = imet_run
    root = project / ROOT
    counts = _train_counts(root)
    kept = {a for a, n in counts.items() if n >= MIN_LABEL_COUNT}
    dropped = set(counts) - kept
    # The data must make the check bite: some attributes are dropped, and one of them has an id that is also a class
    # index, so writing class indices instead of attribute ids would name a dropped attribute.
    assert dropped and min(int(a) for a in dropped) < len(kept), (dropped, len(kept))
    stats = json.loads((project / "data/processed/prepare/stats.json").read_text())
    assert sorted(stats["dropped_labels"], key=int) == sorted(dropped, key=int)
    assert "prepare: dropped" in log

    assert "valid imet2019 submission" in run_tool(project, "mlic", "validate-submission", "submissions/submission.csv")
    submission = pd.read_csv(project / "submissions/submission.csv", dtype=str, keep_default_na=False)
    sample = pd.read_csv(root / "sample_submission.csv", dtype=str)
    assert list(submission.columns) == ["id", "attribute_ids"]
    assert list(submission["id"]) == list(sample["id"])  # the sample submission's row order
    submitted = [cell.split() for cell in submission["attribute_ids"]]
    assert all(submitted) and all(a.isdigit() for ids in submitted for a in ids)  # ids, not names
    assert {a for ids in submitted for a in ids} <= kept  # never a dropped attribute, nor a class index
    scores = json.loads(
        run_tool(project, "mlic", "score", "submissions/submission.csv", "--solution", f"{ROOT}/solution.csv")
    )
    assert 0 < scores["f2_samples"] <= 1


def test_images_vary_in_size_and_the_model_beats_the_prior(imet_run):
    project, _ = imet_run
    import cv2

    shapes = {cv2.imread(str(p)).shape[:2] for p in (project / ROOT / "train").glob("*.png")}
    assert len(shapes) > 20 and any(h != w for h, w in shapes)
    metrics = yaml.safe_load((project / "reports/metrics.json").read_text())
    assert metrics["oof_rows"] == 120
    assert metrics["oof"]["f2_samples"] > metrics["all_prior_baseline"]["f2_samples"], metrics
