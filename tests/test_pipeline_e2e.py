"""The whole pipeline under `dvc repro`, on a tiny sample, in a temporary project."""

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from finished_run import copy_pipeline, edit_params, run_tool

from mlic.data.competitions.planet import PLANET_TAGS

pytestmark = pytest.mark.slow

# train.models: [baseline] reads images only, so dvc.yaml (generated for the params) has no hog, proposals, teacher
# or cam_model stage
AFTER_TRAIN = ["ensemble", "thresholds", "submit", "evaluate"]
BASE_STAGES = ["sample", "code@baseline", "prepare", "folds", *AFTER_TRAIN]
TRAIN_STAGES = ["train@baseline-0", "train@baseline-1"]
HOG_LINEAR = ["code@hog_linear", "train@hog_linear-0", "train@hog_linear-1"]
TINY = {
    "sample": {"n_train": 120, "n_test": 30, "image_size": 32},
    "prepare": {"image_size": 32},
    "hog": {"image_size": 32},
    "folds": {"n_splits": 2},
    "models": {"baseline": {"extra_filters": 16}},
    "train": {"folds": [0, 1], "epochs": 2, "batch_size": 32},
    "thresholds": {"grid_step": 0.05, "optuna_trials": 10},
}


def _dvc(project: Path, *args: str) -> str:
    return run_tool(project, "dvc", *args)


def _stages_run(log: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", log)


def _copy(project: Path, tmp_path: Path) -> Path:
    """A private copy of a project (outputs, DVC cache and run cache included), for a test to edit."""
    return Path(shutil.copytree(project, tmp_path / "project", symlinks=True))


@pytest.fixture(scope="module")
def first_repro(tmp_path_factory) -> tuple[Path, str]:
    """The tiny project after its first `dvc repro`, and that run's log. Tests read it; editing tests copy it."""
    root = copy_pipeline(tmp_path_factory.mktemp("project"), TINY)
    _dvc(root, "init", "--no-scm", "-q")
    return root, _dvc(root, "repro")


@pytest.fixture(scope="module")
def hog_linear_added(first_repro, tmp_path_factory) -> tuple[Path, str]:
    """The tiny project with a second model, hog_linear, added and reproduced, and that run's log."""
    root = _copy(first_repro[0], tmp_path_factory.mktemp("two_models"))
    edit_params(root, {"train": {"models": ["baseline", "hog_linear"]}})
    return root, _dvc(root, "repro")


@pytest.fixture(scope="module")
def with_hog_linear(hog_linear_added) -> Path:
    """The two-model project. Tests read it; editing tests copy it."""
    return hog_linear_added[0]


def test_repro_writes_a_valid_submission_and_metrics(first_repro):
    project, log = first_repro
    ran = _stages_run(log)
    assert ran.index("sample") < ran.index("prepare") < ran.index("folds")
    assert ran.index(TRAIN_STAGES[0]) > max(ran.index("folds"), ran.index("code@baseline"))
    assert sorted(ran) == sorted(BASE_STAGES + TRAIN_STAGES)  # no hog: no listed model reads HOG
    assert not (project / "data/processed/hog").exists() and not (project / "data/processed/proposals").exists()
    submission = pd.read_csv(project / "submissions" / "submission.csv", dtype=str, keep_default_na=False)
    sample = pd.read_csv(project / "data/raw/sample/sample_submission_v2.csv", dtype=str)
    assert list(submission.columns) == ["image_name", "tags"]
    assert list(submission["image_name"]) == list(sample["image_name"])
    for tags in submission["tags"]:
        assert tags and set(tags.split()) <= set(PLANET_TAGS)
    metrics = yaml.safe_load((project / "reports" / "metrics.json").read_text())
    for part in ("oof", "all_prior_baseline"):
        assert {"f2_samples", "map", "cf1", "of1", "cf1_top3", "of1_top3"} <= set(metrics[part])
        assert 0 < metrics[part]["f2_samples"] <= 1
    scores = yaml.safe_load((project / "reports" / "thresholds.json").read_text())
    reports = {method: report for method, report in scores.items() if isinstance(report, dict)}
    assert set(reports) == {"auto", "global", "per_class_exact", "optuna"}  # auto: the chosen one's scores
    assert scores["method"] == scores["auto"]["method"] and 0 < scores["oof_f2_nested"] <= scores["oof_f2"] + 0.05
    for report in reports.values():
        assert set(report["folds"]) == {"0", "1"} and 0 < report["nested"]["f2_samples"] <= 1
    assert metrics["oof_rows"] == 120 and set(metrics["models"]) == {"baseline"}
    for png in ("threshold_curve.png", "class_threshold_curves.png", "pr_curves.png"):
        assert (project / "reports" / png).stat().st_size > 1000
    for fold in (0, 1):
        fold_dir = project / "data/processed/train/baseline" / f"fold_{fold}"
        assert {"model.pt", "oof.npz", "test.npy", "config.yaml", "live"} <= {p.name for p in fold_dir.iterdir()}
        curves = pd.read_csv(fold_dir / "live/plots/metrics/val_f2.tsv", sep="\t")
        assert len(curves) == 2  # one point per epoch
    assert not any((project / "data/interim/checkpoints").rglob("*.pt"))  # resume state goes once a fold ends
    manifest = yaml.safe_load((project / "data/interim/code/baseline.json").read_text())
    assert manifest["arch"] == "baseline" and "src/mlic/models/baseline.py" in manifest["files"]
    assert not [f for f in manifest["files"] if f.startswith("src/mlic/models/") and "baseline" not in f
                and not f.endswith(("registry.py", "backbones.py", "__init__.py"))]  # fmt: skip


def test_second_repro_does_nothing(first_repro, tmp_path):
    project = _copy(first_repro[0], tmp_path)
    log = _dvc(project, "repro")
    assert _stages_run(log) == []
    assert "up to date" in log


def test_changing_epochs_reruns_only_train_and_after(first_repro, tmp_path):
    project = _copy(first_repro[0], tmp_path)
    edit_params(project, {"train": {"epochs": 1, "warmup_epochs": 0.5}})
    # what would run now (the stages after train rerun only if train writes other bytes, which DVC decides then)
    assert sorted(_stages_run(_dvc(project, "repro", "--dry"))) == TRAIN_STAGES


def test_adding_a_model_adds_its_stages_and_reruns_no_other_model(hog_linear_added):
    project, log = hog_linear_added
    # hog now runs; code@baseline looks at the new feature folder, finds that its model does not read it and writes
    # the same record, so the baseline's training does not rerun (nor any other stage of the baseline's)
    assert sorted(_stages_run(log)) == sorted(["hog", "code@baseline", *HOG_LINEAR, *AFTER_TRAIN])
    baseline_record = yaml.safe_load((project / "data/interim/code/baseline.json").read_text())
    assert "features" not in baseline_record
    record = yaml.safe_load((project / "data/interim/code/hog_linear.json").read_text())
    assert list(record["features"]) == ["hog"]
    metrics = yaml.safe_load((project / "reports" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"baseline", "hog_linear"}


def test_changing_the_ensemble_or_thresholds_reruns_only_what_reads_them(with_hog_linear, tmp_path):
    project = _copy(with_hog_linear, tmp_path)
    edit_params(project, {"ensemble": {"method": "weighted"}})
    assert sorted(_stages_run(_dvc(project, "repro"))) == sorted(AFTER_TRAIN)
    weights = yaml.safe_load((project / "data/processed/ensemble/weights.json").read_text())
    assert set(weights) == {"baseline", "hog_linear"} and sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    edit_params(project, {"thresholds": {"method": "per_class_exact", "shrink": 5.0}})  # auto ignores shrink
    assert sorted(_stages_run(_dvc(project, "repro"))) == sorted(AFTER_TRAIN[1:])


def test_same_seed_gives_the_same_folds_and_submission(with_hog_linear, tmp_path):
    project = _copy(with_hog_linear, tmp_path)
    outputs = ("data/raw/sample/train_v2.csv", "data/processed/folds.csv", "submissions/submission.csv",
               "data/interim/code/baseline.json")  # fmt: skip
    oof_file = project / "data/processed/train/baseline/fold_0/oof.npz"
    before = {p: (project / p).read_bytes() for p in (*outputs, "dvc.lock")}
    oof_before = np.load(oof_file)["probs"]
    ran = _stages_run(_dvc(project, "repro", "--force"))  # recompute every stage, nothing restored from DVC's cache
    assert sorted(ran) == sorted(BASE_STAGES + TRAIN_STAGES + ["hog", *HOG_LINEAR])
    for path, content in before.items():  # dvc.lock too: every tracked output (reports, metrics) is byte-identical
        assert (project / path).read_bytes() == content, path
    assert np.array_equal(np.load(oof_file)["probs"], oof_before)  # training itself is seeded, augmentation included


def test_dropping_a_model_leaves_the_lock_a_fresh_clone_would_write(first_repro, with_hog_linear, tmp_path):
    """ensemble and evaluate hash only the listed models' folds: no leftovers of a dropped model in dvc.lock."""
    project = _copy(with_hog_linear, tmp_path)
    edit_params(project, {"train": {"models": ["baseline"]}})
    log = _dvc(project, "repro")
    assert "removed data/processed/train/hog_linear" in log
    assert not (project / "data/processed/train/hog_linear").exists()
    fresh, dropped = (yaml.safe_load((p / "dvc.lock").read_text())["stages"] for p in (first_repro[0], project))
    for stage in ("ensemble", "evaluate"):
        assert dropped[stage]["deps"] == fresh[stage]["deps"], stage
    for stage in ("ensemble", "thresholds", "submit"):
        assert dropped[stage]["outs"] == fresh[stage]["outs"], stage
    edit_params(project, {"train": {"models": ["baseline", "hog_linear"]}})  # listed again: restored, not retrained
    ran = _stages_run(_dvc(project, "repro"))
    assert not {"train@hog_linear-0", "train@hog_linear-1"} & set(ran)
    assert (project / "data/processed/train/hog_linear/fold_1/oof.npz").is_file()
