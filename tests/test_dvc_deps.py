"""Exact DVC deps: dvc.yaml is generated for the params (explicit stages, the code each imports, the data and params
each reads, curve plots), and `dvc status` sees exactly the stages an edit touches.

The status tests work on a copy of the finished tiny run (baseline and hourglass, 2 folds, a git + DVC project).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from finished_run import copy_run, merge, run_tool, tool_env

from mlic import deps
from mlic.config import TrainConfig, config_from_dict, load_config
from mlic.errors import ConfigError
from mlic.pipeline import check_running_stage, definitions, generate, pipeline_differences, prune_lock
from mlic.pipeline.definitions import TRAIN_FIELDS_NOT_READ, Plan


def params_with(override: dict) -> dict:
    return merge(yaml.safe_load((REPO / "params.yaml").read_text()), override)


def generated(override: dict) -> dict:
    """The dvc.yaml the generator writes for the repo's params.yaml merged with `override`, parsed."""
    return yaml.safe_load(generate(config_from_dict(params_with(override)), REPO))


def test_dvc_yaml_is_what_the_generator_writes_for_params_yaml():
    expected = generate(load_config(REPO / "params.yaml"), REPO)
    assert pipeline_differences((REPO / "dvc.yaml").read_text(), expected) == [], "run `mlic pipeline --write`"


def test_dvc_yaml_has_one_layer_of_definitions():
    text = (REPO / "dvc.yaml").read_text()
    stages = yaml.safe_load(text)["stages"]
    assert "${" not in text and not [name for name, body in stages.items() if {"matrix", "foreach", "do"} & set(body)]
    assert not any(name.startswith(("code", "teacher", "cam_model")) for name in stages)


def test_the_check_catches_a_missing_and_an_extra_dep():
    text = (REPO / "dvc.yaml").read_text()
    broken = text.replace("    - src/mlic/thresholds.py\n", "", 1).replace(
        "    - src/mlic/stages/folds.py\n", "    - src/mlic/stages/folds.py\n    - src/mlic/models/baseline.py\n"
    )
    assert broken.count("src/mlic/models/baseline.py") == 4  # the folds stage's, and three train stages'
    problems = pipeline_differences(broken, text)
    assert any("missing ['src/mlic/thresholds.py']" in p for p in problems)
    assert any(p.startswith("stage folds:") and "extra ['src/mlic/models/baseline.py']" in p for p in problems)


def test_the_embedded_sample_with_the_baseline_runs_neither_hog_nor_region_stages():
    stages = generated({})["stages"]
    assert "sample" in stages and not {"hog", "proposals"} & set(stages)
    assert [n for n in stages if n.startswith("train")] == ["train-baseline-0", "train-baseline-1", "train-baseline-2"]
    assert not [n for n in stages if n.startswith(("teacher", "cam_model"))]
    assert stages["train-baseline-1"]["deps"][:2] == ["data/processed/prepare", "data/processed/folds.csv"]
    assert stages["train-baseline-1"]["outs"] == ["data/processed/train/baseline/fold_1"]
    assert stages["ensemble"]["deps"][:3] == [f"data/processed/train/baseline/fold_{k}" for k in range(3)]


def test_real_data_has_no_sample_stage():
    stages = generated({"data": {"root": "data/raw/planet"}})["stages"]
    assert "sample" not in stages and {"prepare", "train-baseline-0", "submit"} <= set(stages)
    assert stages["prepare"]["deps"][0] == "data/raw/planet"


def test_a_hog_model_brings_the_hog_stage_and_only_its_stages_read_it():
    stages = generated({"train": {"models": ["baseline", "hog_linear"]}})["stages"]
    assert "hog" in stages and "proposals" not in stages
    assert "data/processed/hog" in stages["train-hog_linear-0"]["deps"]
    assert "data/processed/hog" not in stages["train-baseline-0"]["deps"]  # adding hog_linear reruns no baseline
    assert "src/mlic/models/hog_linear.py" in stages["train-hog_linear-0"]["deps"]
    assert "src/mlic/models/hog_linear.py" not in stages["train-baseline-0"]["deps"]


def test_region_models_bring_proposals_teacher_and_cam_stages():
    stages = generated({"train": {"models": ["kd_wsd"]}})["stages"]
    assert {"proposals", "teacher-kd_wsd-0", "teacher-kd_wsd-2"} <= set(stages) and "hog" not in stages
    assert not [n for n in stages if n.startswith("cam_model")]
    assert "data/processed/teachers/kd_wsd/fold_1" in stages["train-kd_wsd-1"]["deps"]
    assert "data/processed/proposals" in stages["teacher-kd_wsd-1"]["deps"]  # the WSDDN teacher reads the boxes
    assert "src/mlic/models/wsddn.py" in stages["teacher-kd_wsd-1"]["deps"]
    assert "src/mlic/models/kd_wsd.py" not in stages["teacher-kd_wsd-1"]["deps"]
    stages = generated({"train": {"models": ["sca"]}, "proposals": {"method": "cam"}})["stages"]
    assert {"proposals", "cam_model-0", "cam_model-2"} <= set(stages)
    assert not [n for n in stages if n.startswith("teacher")]
    cams = [d for d in stages["proposals"]["deps"] if "cam_model" in d]
    assert cams == [f"data/processed/cam_model/fold_{k}" for k in range(3)]
    assert "src/mlic/models/baseline.py" in stages["cam_model-0"]["deps"]  # the CAM model's arch, exactly


def test_every_training_knob_is_a_param_of_the_train_stages(monkeypatch):
    train = generated({})["stages"]["train-baseline-0"]["params"]
    knobs = {f"train.{f.name}" for f in dataclasses.fields(TrainConfig)} - {f"train.{k}" for k in TRAIN_FIELDS_NOT_READ}
    assert knobs <= set(train) and "models.baseline" in train and "train.models" not in train
    assert set(TRAIN_FIELDS_NOT_READ) <= {f.name for f in dataclasses.fields(TrainConfig)}  # no stale exemption
    # a knob added to TrainConfig tomorrow reaches the train stages with no edit to the generator
    extended = dataclasses.make_dataclass("Extended", [("new_knob", int, 1)], bases=(TrainConfig,), frozen=True)
    monkeypatch.setattr(definitions, "TrainConfig", extended)
    assert "train.new_knob" in definitions.train_params()


def test_the_curves_are_plots_of_every_model_and_fold():
    plots = generated({"train": {"models": ["baseline", "hourglass"], "folds": [0, 2]}})["plots"]
    by_metric = {name: spec for plot in plots for name, spec in plot.items()}
    assert set(by_metric) == {"train_loss", "lr", "val_f2", "val_map"}
    files = by_metric["val_f2"]["y"]
    assert len(files) == 4 and "data/processed/train/hourglass/fold_2/live/plots/metrics/val_f2.tsv" in files


def test_a_stage_run_by_dvc_fails_on_a_stale_dvc_yaml_with_the_fix(tmp_path):
    (tmp_path / "dvc.yaml").write_text(generate(load_config(REPO / "params.yaml"), tmp_path))
    cfg = config_from_dict(params_with({"train": {"models": ["baseline", "hog_linear"]}}))
    with pytest.raises(ConfigError, match=r"(?s)stage ensemble deps missing .*hog_linear/fold_0.*pipeline --write"):
        check_running_stage(cfg, "ensemble", "ensemble", tmp_path)
    with pytest.raises(ConfigError, match="stage train-hog_linear-0 is missing"):
        check_running_stage(cfg, "train", "train-hog_linear-0", tmp_path)
    elsewhere = config_from_dict(params_with({"data": {"root": "data/raw/planet"}}))
    with pytest.raises(ConfigError, match=r"stage prepare deps missing \['data/raw/planet'\]"):
        check_running_stage(elsewhere, "prepare", "prepare", tmp_path)
    check_running_stage(load_config(REPO / "params.yaml"), "train", "train-baseline-2", tmp_path)  # in date
    check_running_stage(cfg, "prepare", "prepare", tmp_path)  # a stage the change does not touch runs


def test_a_stage_does_not_import_other_stages_or_architectures():
    root = deps.source_root(REPO)
    train = deps.stage_modules("train", root)
    assert "mlic.stages.train" in train and "mlic.models.registry" in train
    assert not [m for m in train if m.startswith("mlic.stages.") and m not in ("mlic.stages", "mlic.stages.train")]
    assert not [m for m in train if m.startswith("mlic.models.") and m not in ("mlic.models", "mlic.models.registry")]
    assert "mlic.predict.threshold_fitting" not in train  # validation applies thresholds, it does not fit them
    assert not [m for m in train if m.startswith("mlic.pipeline")]  # the stage check is imported by name
    assert "mlic.models.hourglass" in deps.arch_modules("hourglass", root)
    assert "mlic.models.baseline" not in deps.arch_modules("hourglass", root)
    stages = {s.name: s for s in definitions.pipeline_stages(Plan(load_config(REPO / "params.yaml"), REPO))}
    assert "torch" not in str(stages["evaluate"].code(REPO))
    submit = stages["submit"].code(REPO)
    assert "src/mlic/thresholds.py" in submit and "src/mlic/predict/threshold_fitting.py" not in submit


@pytest.fixture
def project(finished_run, tmp_path) -> Path:
    """A private copy of the finished run (its git history, DVC cache and lock included), clean to start with."""
    copy = copy_run(finished_run, tmp_path / "run")
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
    assert changed(project) == set()  # no stage imports it: nothing looks again, nothing reruns


@pytest.mark.slow
def test_editing_a_tool_its_help_or_the_generator_reruns_nothing(project):
    for module in ("tools.py", "pipeline/definitions.py", "experiments/tune/study.py"):
        with (project / "src/mlic" / module).open("a") as f:
            f.write("\n# a behaviour-free edit\n")
    assert changed(project) == set()  # no stage imports them: dvc.lock stays as it is


@pytest.mark.slow
def test_editing_an_architecture_reruns_only_its_models_stages(project):
    with (project / "src/mlic/models/hourglass.py").open("a") as f:
        f.write("\n# an edit\n")
    assert changed(project) == {"train-hourglass-0", "train-hourglass-1"}


@pytest.mark.slow
def test_editing_thresholds_marks_submit_and_evaluate_changed(project):
    with (project / "src/mlic/thresholds.py").open("a") as f:
        f.write("\n# an edit\n")
    stale = changed(project)
    assert {"submit", "evaluate", "thresholds"} <= stale, stale


@pytest.mark.slow
def test_editing_the_threshold_fitting_leaves_training_and_submit_alone(project):
    with (project / "src/mlic/predict/threshold_fitting.py").open("a") as f:
        f.write("\n# an edit\n")
    assert changed(project) == {"thresholds", "evaluate"}


@pytest.mark.slow
def test_an_hourglass_only_knob_leaves_the_baseline_stages_clean(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"]["hourglass"]["dilation"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stale = changed(project)
    assert stale == {"train-hourglass-0", "train-hourglass-1"}, stale


@pytest.mark.slow
def test_an_experiment_that_adds_a_model_fails_before_any_work_with_the_fix(project):
    before = (project / "dvc.lock").read_text()
    result = subprocess.run(["dvc", "exp", "run", "-S", "train.models=[baseline,hourglass,hog_linear]"], cwd=project,
                            env=tool_env(), capture_output=True, text=True)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "stage ensemble deps missing" in output and "mlic pipeline --write" in output, output
    assert ran(result.stdout) == ["ensemble"]  # the first stage the change touches stops before any work
    assert (project / "dvc.lock").read_text() == before


def test_a_data_file_a_stage_reads_from_its_package_is_a_dep():
    stages = generated({})["stages"]
    assert "src/mlic/data/synthetic/planet_land_probs.csv" in stages["sample"]["deps"]  # the generator's table
    assert not [d for d in stages["prepare"]["deps"] if d.endswith("planet_land_probs.csv")]


def test_writing_the_pipeline_drops_the_lock_entries_of_dropped_stages(tmp_path):
    lock = {"schema": "2.0", "stages": {"prepare": {"cmd": "mlic prepare"}, "train-gone-0": {"cmd": "mlic train"}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert prune_lock(tmp_path / "dvc.lock", {"prepare", "folds"}) == ["train-gone-0"]  # as `dvc remove` would
    assert yaml.safe_load((tmp_path / "dvc.lock").read_text()) == {
        "schema": "2.0",
        "stages": {"prepare": {"cmd": "mlic prepare"}},
    }
    assert prune_lock(tmp_path / "dvc.lock", {"prepare"}) == []
