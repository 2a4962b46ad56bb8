"""The whole pipeline under `dvc repro`, on a tiny sample, in a temporary project."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from mlic.competitions.planet import PLANET_TAGS

pytestmark = pytest.mark.slow

ALL_STAGES = ["sample", "prepare", "hog", "folds", "train@0", "train@1", "thresholds", "submit", "evaluate"]
TINY = {
    "sample": {"n_train": 120, "n_test": 30, "image_size": 32},
    "prepare": {"image_size": 32},
    "hog": {"image_size": 32},
    "folds": {"n_splits": 2},
    "model": {"extra_filters": 16},
    "train": {"folds": [0, 1], "epochs": 2, "batch_size": 32},
    "thresholds": {"grid_step": 0.05},
}


def _merge(base: dict, override: dict) -> dict:
    return {k: {**v, **override.get(k, {})} if isinstance(v, dict) else v for k, v in base.items()}


def _dvc(project: Path, *args: str) -> str:
    # dvc, and the `mlic` its stages call, live beside this interpreter, whether or not the venv is on PATH.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    result = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _stages_run(log: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", log)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    shutil.copy(REPO / "dvc.yaml", root)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _dvc(root, "init", "--no-scm", "-q")
    return root


def test_repro_writes_a_valid_submission_and_metrics(project):
    log = _dvc(project, "repro")
    ran = _stages_run(log)
    assert ran[:2] == ["sample", "prepare"] and ran.index("train@0") > max(ran.index("hog"), ran.index("folds"))
    assert sorted(ran) == sorted(ALL_STAGES)
    submission = pd.read_csv(project / "submissions" / "planet-baseline.csv", dtype=str, keep_default_na=False)
    sample = pd.read_csv(project / "data/raw/sample/sample_submission_v2.csv", dtype=str)
    assert list(submission.columns) == ["image_name", "tags"]
    assert list(submission["image_name"]) == list(sample["image_name"])
    for tags in submission["tags"]:
        assert tags and set(tags.split()) <= set(PLANET_TAGS)
    metrics = yaml.safe_load((project / "reports" / "metrics.json").read_text())
    for part in ("oof", "all_prior_baseline"):
        assert set(metrics[part]) == {"f2_samples", "map_macro", "f1_micro", "f1_macro"}
        assert 0 < metrics[part]["f2_samples"] <= 1
    assert metrics["oof_rows"] == 120
    assert (project / "reports" / "threshold_curve.png").stat().st_size > 1000
    for fold in (0, 1):
        fold_dir = project / "data/processed/train" / f"fold_{fold}"
        assert {"model.pt", "oof.npz", "test.npy", "config.yaml"} <= {p.name for p in fold_dir.iterdir()}


def test_second_repro_does_nothing(project):
    log = _dvc(project, "repro")
    assert _stages_run(log) == []
    assert "up to date" in log


def test_changing_epochs_reruns_only_train_and_after(project):
    params_file = project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["train"]["epochs"] = 1
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _stages_run(_dvc(project, "repro"))
    assert ran[:2] == ["train@0", "train@1"]
    assert set(ran) <= {"train@0", "train@1", "thresholds", "submit", "evaluate"}
    assert "thresholds" in ran


def test_same_seed_gives_the_same_folds_and_submission(project):
    outputs = ("data/raw/sample/train_v2.csv", "data/processed/folds.csv", "submissions/planet-baseline.csv")
    oof_file = project / "data/processed/train/fold_0/oof.npz"
    before = {p: (project / p).read_bytes() for p in outputs}
    oof_before = np.load(oof_file)["probs"]
    ran = _stages_run(_dvc(project, "repro", "--force"))  # recompute every stage, nothing restored from DVC's cache
    assert sorted(ran) == sorted(ALL_STAGES)
    for path, content in before.items():
        assert (project / path).read_bytes() == content, path
    assert np.array_equal(np.load(oof_file)["probs"], oof_before)  # training itself is seeded, augmentation included
