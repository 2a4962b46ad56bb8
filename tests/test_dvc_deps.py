"""Exact DVC deps: dvc.yaml is generated for the params (stages they need, code deps from the imports, curve plots),
and `dvc status` sees exactly the stages an edit touches.

The status tests work on a copy of the finished tiny run (baseline and hourglass, 2 folds, a git + DVC project).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from finished_run import merge, run_tool

from mlic import deps
from mlic.config import config_from_dict, load_config
from mlic.errors import ConfigError
from mlic.pipeline import check_stage_list, expected_code_deps, generate, pipeline_differences

TRAIN = ["train@baseline-0", "train@baseline-1", "train@hourglass-0", "train@hourglass-1"]
CODE = {"code@baseline", "code@hourglass"}  # they depend on the whole package: any edit makes them look again
OPTIONAL = {"sample", "hog", "proposals", "cam_model", "teacher"}


def generated(override: dict) -> dict:
    """The dvc.yaml the generator writes for the repo's params.yaml merged with `override`, parsed."""
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), override)
    return yaml.safe_load(generate(config_from_dict(params), REPO))


def test_dvc_yaml_is_what_the_generator_writes_for_params_yaml():
    expected = generate(load_config(REPO / "params.yaml"), REPO)
    assert pipeline_differences((REPO / "dvc.yaml").read_text(), expected) == [], "run `mlic pipeline --write`"


def test_the_check_catches_a_missing_and_an_extra_dep():
    text = (REPO / "dvc.yaml").read_text()
    broken = text.replace("      - src/mlic/predict/thresholds.py\n", "", 1).replace(
        "      - src/mlic/stages/folds.py\n", "      - src/mlic/stages/folds.py\n      - src/mlic/models/baseline.py\n"
    )
    assert broken.count("src/mlic/models/baseline.py") == 1
    problems = pipeline_differences(broken, text)
    assert any("missing ['src/mlic/predict/thresholds.py']" in p for p in problems)
    assert any(p.startswith("stage folds:") and "extra ['src/mlic/models/baseline.py']" in p for p in problems)
    assert pipeline_differences(text.replace("  hog:", "  hog_gone:"), text) == []  # no hog stage in the repo's


def test_the_embedded_sample_with_the_baseline_runs_neither_hog_nor_region_stages():
    stages = generated({})["stages"]
    assert "sample" in stages and not OPTIONAL - {"sample"} & set(stages)
    train_deps = stages["train"]["deps"]
    assert "${hog.out_dir}" not in train_deps and "${proposals.out_dir}" not in train_deps
    assert stages["code"]["deps"] == ["src/mlic"]  # no feature folder to record


def test_real_data_has_no_sample_stage():
    stages = generated({"data": {"root": "data/raw/planet"}})["stages"]
    assert "sample" not in stages and {"prepare", "train", "submit"} <= set(stages)
    assert stages["prepare"]["deps"][0] == "${data.root}"


def test_a_hog_model_brings_the_hog_stage_and_the_code_stage_records_it():
    stages = generated({"train": {"models": ["baseline", "hog_linear"]}})["stages"]
    assert "hog" in stages and not {"proposals", "teacher", "cam_model"} & set(stages)
    assert stages["code"]["deps"][0] == "${hog.out_dir}"  # a train stage reads features through code@<model>
    assert "${hog.out_dir}" not in stages["train"]["deps"]


def test_region_models_bring_proposals_teacher_and_cam_stages():
    stages = generated({"train": {"models": ["kd_wsd"]}})["stages"]
    assert {"proposals", "teacher"} <= set(stages) and not {"hog", "cam_model"} & set(stages)
    assert "${proposals.cam.run_dir}" not in stages["proposals"]["deps"]  # no cam_model stage to read
    assert "${train.teacher_dir}/${item.model}/fold_${item.fold}" in stages["train"]["deps"]
    stages = generated({"train": {"models": ["sca"]}, "proposals": {"method": "cam"}})["stages"]
    assert {"proposals", "cam_model"} <= set(stages) and "teacher" not in stages
    assert "${proposals.cam.run_dir}" in stages["proposals"]["deps"]


def test_the_curves_are_plots_of_every_model_and_fold():
    plots = generated({"train": {"models": ["baseline", "hourglass"], "folds": [0, 2]}})["plots"]
    by_metric = {name: spec for plot in plots for name, spec in plot.items()}
    assert set(by_metric) == {"train_loss", "lr", "val_f2", "val_map"}
    files = by_metric["val_f2"]["y"]
    assert len(files) == 4 and "data/processed/train/hourglass/fold_2/live/plots/metrics/val_f2.tsv" in files


def test_a_stale_dvc_yaml_fails_with_the_fix(tmp_path):
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), {"train": {"models": ["hog_linear"]}})
    with pytest.raises(ConfigError, match=r"(?s)no stage hog.*mlic pipeline --write"):
        check_stage_list(config_from_dict(params), tmp_path / "dvc.yaml")
    check_stage_list(load_config(REPO / "params.yaml"), tmp_path / "dvc.yaml")  # the repo's params: in date


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
    assert stale <= CODE  # they look at the package again, and find their architectures' code unchanged
    log = run_tool(project, "dvc", "repro")
    assert set(ran(log)) == CODE, log
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
