"""Exact DVC deps: dvc.yaml lists what each stage imports, and `dvc status` sees exactly the stages an edit touches.

The status tests work on a copy of the finished tiny run (baseline and hourglass, 2 folds, a git + DVC project).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from finished_run import run_tool

from mlic import deps
from mlic.pipeline import expected_code_deps, sync_code_deps

TRAIN = ["train@baseline-0", "train@baseline-1", "train@hourglass-0", "train@hourglass-1"]
CODE = {"code@baseline", "code@hourglass"}  # they depend on the whole package: any edit makes them look again
# they depend on every architecture module (the CAM model is found by name); without cam proposals they rewrite the
# same marker, so nothing after them reruns
CAM_MODEL = {"cam_model@0", "cam_model@1"}


def test_dvc_yaml_code_deps_are_exactly_the_imports():
    assert sync_code_deps(REPO / "dvc.yaml") == [], "run `mlic dvc-deps --write`"


def test_the_check_catches_a_missing_and_an_extra_dep(tmp_path):
    text = (REPO / "dvc.yaml").read_text()
    broken = text.replace("      - src/mlic/predict/thresholds.py\n", "", 1).replace(
        "      - src/mlic/stages/folds.py\n", "      - src/mlic/stages/folds.py\n      - src/mlic/models/baseline.py\n"
    )
    assert broken.count("src/mlic/models/baseline.py") == 1
    (tmp_path / "dvc.yaml").write_text(broken)
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    problems = sync_code_deps(tmp_path / "dvc.yaml")
    assert any("missing ['src/mlic/predict/thresholds.py']" in p for p in problems)
    assert any(p.startswith("stage folds:") and "extra ['src/mlic/models/baseline.py']" in p for p in problems)
    assert sync_code_deps(tmp_path / "dvc.yaml", write=True) and sync_code_deps(tmp_path / "dvc.yaml") == []
    assert yaml.safe_load((tmp_path / "dvc.yaml").read_text()) == yaml.safe_load(text)  # repaired to the original


def test_a_stage_does_not_import_other_stages_or_architectures():
    root = deps.source_root(REPO)
    train = deps.stage_modules("train", root)
    assert "mlic.stages.train" in train and "mlic.models.registry" in train
    assert not [m for m in train if m.startswith("mlic.stages.") and m not in ("mlic.stages", "mlic.stages.train")]
    assert not [m for m in train if m.startswith("mlic.models.") and m not in ("mlic.models", "mlic.models.registry")]
    assert "mlic.predict.threshold_fitting" not in train  # validation applies thresholds, it does not fit them
    assert "mlic.models.hourglass" in deps.arch_modules("hourglass", root)
    assert "mlic.models.baseline" not in deps.arch_modules("hourglass", root)
    assert "torch" not in str(expected_code_deps("evaluate", REPO))
    submit = expected_code_deps("submit", REPO)
    assert "src/mlic/predict/thresholds.py" in submit and "src/mlic/predict/threshold_fitting.py" not in submit


@pytest.fixture
def project(finished_run, tmp_path) -> Path:
    """A private copy of the finished run (its git history, DVC cache and lock included), clean to start with."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, symlinks=True)
    assert changed(copy) == set(), "the copied run should be up to date"
    return copy


def changed(project: Path) -> set[str]:
    """The stages `dvc status` reports as changed."""
    return set(json.loads(run_tool(project, "dvc", "status", "--json") or "{}"))


def ran(log: str) -> list[str]:
    return [line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage '")]


NEW_ARCH = '''"""A new architecture: what adding a model to the registry looks like."""

from torch import nn

from mlic.models.registry import ArchConfig, ModelDims, register_arch


@register_arch("new_arch", ArchConfig)
def new_arch(cfg: ArchConfig, dims: ModelDims) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(dims.num_classes))
'''


@pytest.mark.slow
def test_adding_an_architecture_module_leaves_every_trained_model_clean(project):
    (project / "src/mlic/models/new_arch.py").write_text(NEW_ARCH)
    stale = changed(project)
    assert not stale & set(TRAIN), stale
    assert stale <= CODE | CAM_MODEL  # they look at the package again, and find their architectures' code unchanged
    log = run_tool(project, "dvc", "repro")
    assert set(ran(log)) == CODE | CAM_MODEL, log
    assert changed(project) == set()


@pytest.mark.slow
def test_editing_an_architecture_reruns_only_its_models_stages(project):
    with (project / "src/mlic/models/hourglass.py").open("a") as f:
        f.write("\n# an edit\n")
    run_tool(project, "dvc", "repro", "code@baseline", "code@hourglass")  # the cheap check: which code changed
    assert {s for s in changed(project) if s.startswith("train@")} == {"train@hourglass-0", "train@hourglass-1"}


@pytest.mark.slow
def test_editing_thresholds_marks_submit_and_evaluate_changed(project):
    with (project / "src/mlic/predict/thresholds.py").open("a") as f:
        f.write("\n# an edit\n")
    stale = changed(project)
    assert {"submit", "evaluate", "thresholds"} <= stale, stale


@pytest.mark.slow
def test_editing_the_threshold_fitting_leaves_training_and_submit_alone(project):
    with (project / "src/mlic/predict/threshold_fitting.py").open("a") as f:
        f.write("\n# an edit\n")
    assert changed(project) - CODE == {"thresholds", "evaluate"}


@pytest.mark.slow
def test_an_hourglass_only_knob_leaves_the_baseline_stages_clean(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"]["hourglass"]["dilation"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stale = changed(project)
    assert {"train@hourglass-0", "train@hourglass-1", "code@hourglass"} <= stale
    assert not {"train@baseline-0", "train@baseline-1", "code@baseline"} & stale, stale
