"""The whole pipeline under `dvc repro`, on the session's finished tiny run (tests/finished_run.py) and copies of it."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from finished_run import copy_run, edit_params, run_tool

from mlic.data.competitions.planet import PLANET_TAGS

pytestmark = pytest.mark.slow

# train.models: [baseline, hourglass] read images only, so dvc.yaml (generated for the params) has no hog,
# proposals, teacher or cam_model stage
AFTER_TRAIN = ["ensemble", "thresholds", "submit", "evaluate"]
BASE_STAGES = ["sample", "prepare", "folds", *AFTER_TRAIN]
TRAIN_STAGES = ["train-baseline-0", "train-baseline-1", "train-hourglass-0", "train-hourglass-1"]
HOG_LINEAR = ["train-hog_linear-0", "train-hog_linear-1"]
MODELS = ["baseline", "hourglass"]


def _dvc(project: Path, *args: str) -> str:
    return run_tool(project, "dvc", *args)


def _stages_run(log: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", log)


@pytest.fixture(scope="module")
def hog_linear_added(finished_run, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the finished run with a third model, hog_linear, added and reproduced, and that run's log."""
    root = copy_run(finished_run, tmp_path_factory.mktemp("three_models") / "project")
    edit_params(root, {"train": {"models": [*MODELS, "hog_linear"]}})
    return root, _dvc(root, "repro")


@pytest.fixture(scope="module")
def with_hog_linear(hog_linear_added) -> Path:
    """The three-model project. Tests read it; editing tests copy it."""
    return hog_linear_added[0]


def test_repro_writes_a_valid_submission_and_metrics(finished_run, finished_run_log):
    project, ran = finished_run, _stages_run(finished_run_log)
    assert ran.index("sample") < ran.index("prepare") < ran.index("folds")
    assert min(ran.index(stage) for stage in TRAIN_STAGES) > ran.index("folds")
    assert ran.index("ensemble") > max(ran.index(stage) for stage in TRAIN_STAGES)
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
    assert metrics["oof_rows"] == 120 and set(metrics["models"]) == set(MODELS)
    for png in ("threshold_curve.png", "class_threshold_curves.png", "pr_curves.png"):
        assert (project / "reports" / png).stat().st_size > 1000
    for model, fold in ((model, fold) for model in MODELS for fold in (0, 1)):
        fold_dir = project / "data/processed/train" / model / f"fold_{fold}"
        assert {"model.pt", "oof.npz", "test.npy", "config.yaml", "live"} <= {p.name for p in fold_dir.iterdir()}
        curves = pd.read_csv(fold_dir / "live/plots/metrics/val_f2.tsv", sep="\t")
        assert len(curves) == 2  # one point per epoch
    assert not any((project / "data/interim/checkpoints").rglob("*.pt"))  # resume state goes once a fold ends
    train_deps = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["train-baseline-0"]["deps"]
    assert "src/mlic/models/baseline.py" in train_deps  # its architecture's code, and no other architecture's
    assert not [f for f in train_deps if f.startswith("src/mlic/models/") and "baseline" not in f
                and not f.endswith(("registry.py", "backbones.py", "__init__.py"))]  # fmt: skip


def test_second_repro_does_nothing(finished_run, tmp_path):
    project = copy_run(finished_run, tmp_path / "project")
    log = _dvc(project, "repro")
    assert _stages_run(log) == []
    assert "up to date" in log


def test_changing_epochs_reruns_only_train_and_after(finished_run, tmp_path):
    project = copy_run(finished_run, tmp_path / "project")
    edit_params(project, {"train": {"epochs": 1, "warmup_epochs": 0.5}})
    # what would run now (the stages after train rerun only if train writes other bytes, which DVC decides then)
    assert sorted(_stages_run(_dvc(project, "repro", "--dry"))) == TRAIN_STAGES


def test_adding_a_model_adds_its_stages_and_reruns_no_other_model(hog_linear_added):
    project, log = hog_linear_added
    # hog now runs, and hog_linear's stages; the other models' stages do not list the HOG folder, so none reruns
    assert sorted(_stages_run(log)) == sorted(["hog", *HOG_LINEAR, *AFTER_TRAIN])
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert "data/processed/hog" not in stages["train-baseline-0"]["deps"]
    assert "data/processed/hog" in stages["train-hog_linear-0"]["deps"]
    metrics = yaml.safe_load((project / "reports" / "metrics.json").read_text())
    assert set(metrics["models"]) == {*MODELS, "hog_linear"}


def test_changing_the_ensemble_or_thresholds_reruns_only_what_reads_them(with_hog_linear, tmp_path):
    project = copy_run(with_hog_linear, tmp_path / "project")
    edit_params(project, {"ensemble": {"method": "weighted"}})
    assert sorted(_stages_run(_dvc(project, "repro"))) == sorted(AFTER_TRAIN)
    weights = yaml.safe_load((project / "data/processed/ensemble/weights.json").read_text())
    assert set(weights) == {*MODELS, "hog_linear"} and sum(weights.values()) == pytest.approx(1.0, abs=1e-5)
    edit_params(project, {"thresholds": {"method": "per_class_exact", "shrink": 5.0}})  # auto ignores shrink
    assert sorted(_stages_run(_dvc(project, "repro"))) == sorted(AFTER_TRAIN[1:])


def test_same_seed_gives_the_same_folds_and_submission(with_hog_linear, tmp_path):
    project = copy_run(with_hog_linear, tmp_path / "project")
    outputs = ("data/raw/sample/train_v2.csv", "data/processed/folds.csv", "submissions/submission.csv")
    oof_file = project / "data/processed/train/baseline/fold_0/oof.npz"
    before = {p: (project / p).read_bytes() for p in (*outputs, "dvc.lock")}
    oof_before = np.load(oof_file)["probs"]
    # every stage recomputed, nothing restored from DVC's cache, in dvc.yaml's order; but the hourglass's two folds:
    # the baseline's and hog_linear's stand for training (twenty seconds less)
    stages = [s for s in yaml.safe_load((project / "dvc.yaml").read_text())["stages"] if "hourglass" not in s]
    assert set(stages) == {*BASE_STAGES, "hog", "train-baseline-0", "train-baseline-1", *HOG_LINEAR}
    assert _stages_run(_dvc(project, "repro", "--force", "--single-item", *stages)) == stages
    for path, content in before.items():  # dvc.lock too: every tracked output (reports, metrics) is byte-identical
        assert (project / path).read_bytes() == content, path
    assert np.array_equal(np.load(oof_file)["probs"], oof_before)  # training itself is seeded, augmentation included


def test_dropping_a_model_leaves_the_lock_a_fresh_clone_would_write(finished_run, with_hog_linear, tmp_path):
    """ensemble and evaluate hash only the listed models' folds: no leftovers of a dropped model in dvc.lock."""
    project = copy_run(with_hog_linear, tmp_path / "project")
    edit_params(project, {"train": {"models": MODELS}})
    _dvc(project, "repro")
    fresh, dropped = (yaml.safe_load((p / "dvc.lock").read_text())["stages"] for p in (finished_run, project))
    for stage in ("ensemble", "evaluate"):
        assert dropped[stage]["deps"] == fresh[stage]["deps"], stage
    for stage in ("ensemble", "thresholds", "submit"):
        assert dropped[stage]["outs"] == fresh[stage]["outs"], stage
    assert dropped.keys() == fresh.keys()  # the generator dropped hog's and hog_linear's entries with their stages
    edit_params(project, {"train": {"models": [*MODELS, "hog_linear"]}})  # listed again: restored, not retrained
    ran = _stages_run(_dvc(project, "repro"))
    assert not set(HOG_LINEAR) & set(ran)
    assert (project / "data/processed/train/hog_linear/fold_1/oof.npz").is_file()
