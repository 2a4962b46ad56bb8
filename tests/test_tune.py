"""`mlic tune`: the search space in params, the values passed to `dvc exp run -S`, the curve watcher, and a study of
tiny trials as DVC experiments (run, resume, apply the best)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from finished_run import REPO, copy_run, run_tool, tool_env

from mlic.config import config_from_dict, load_config
from mlic.errors import ConfigError
from mlic.experiments.tune import runner
from mlic.experiments.tune.curves import CurveWatcher, read_curve, run_files
from mlic.experiments.tune.overrides import hydra_value, set_param_args
from mlic.experiments.tune.runner import run_watched
from mlic.experiments.tune.study import current_values, enqueue_current
from mlic.search_space import DISTRIBUTIONS, SUGGESTERS, Distribution, suggest

SPACE = {
    "train.lr": {"log_uniform": [1e-4, "1e-2"]},  # "1e-2": YAML 1.1 reads it as a string, like params.yaml would
    "train.warmup_epochs": {"uniform": [0.0, 1.0]},
    "train.epochs": {"int": [2, 4]},
    "train.augment": {"choice": ["none", "satellite"]},
    "models.baseline.drop_rate": {"choice": [0.0, 0.5]},
}


def test_space_loads_checks_and_suggests():
    import optuna
    from dvc.utils.hydra import to_hydra_overrides

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = config_from_dict({**base, "tune": {"space": SPACE, "folds": [1]}})
    assert cfg.tune.space["train.lr"] == Distribution("log_uniform", (1e-4, 1e-2))
    assert cfg.tune.space["train.epochs"] == Distribution("int", (2, 4))
    assert cfg.to_dict()["tune"]["space"]["train.augment"] == {"choice": ["none", "satellite"]}
    assert set(SUGGESTERS) == set(DISTRIBUTIONS)  # every kind params accept can be drawn
    assert load_config(REPO / "params.yaml").tune.space  # the shipped space loads

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        values = suggest(study.ask(), cfg.tune.space)
        assert 1e-4 <= values["train.lr"] <= 1e-2 and 0.0 <= values["train.warmup_epochs"] <= 1.0
        assert type(values["train.epochs"]) is int and 2 <= values["train.epochs"] <= 4
        assert values["train.augment"] in ("none", "satellite") and values["models.baseline.drop_rate"] in (0.0, 0.5)
    # the -S arguments read back, through DVC's own parser, as the same values and types
    values = {**values, "s": "it's a,b \\", "n": None, "b": True, "f": 1e-05, "folds": [0, 2]}
    args = set_param_args(Path("params.yaml"), values)
    assert args[0] == "-S" and args[1].startswith("train.lr=")
    parsed = {o.key_or_group: o.value() for o in to_hydra_overrides(args[1::2])}
    assert parsed == values and {k: type(v) for k, v in parsed.items()} == {k: type(v) for k, v in values.items()}
    assert hydra_value("none") == "'none'" and set_param_args(Path("p2.yaml"), {"a.b": 1}) == ["-S", "p2.yaml:a.b=1"]


def test_a_new_study_starts_from_the_params_as_they_are(capsys):
    import optuna

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = config_from_dict({**base, "tune": {"space": {**SPACE, "train.epochs": {"int": [2, 10]}}}})
    study = optuna.create_study()
    enqueue_current(study, cfg)
    assert suggest(study.ask(), cfg.tune.space) == {
        "train.lr": 0.003,
        "train.warmup_epochs": 1.0,
        "train.epochs": 10,
        "train.augment": "satellite",
        "models.baseline.drop_rate": 0.0,
    }
    assert "trial 0 runs the params as they are" in capsys.readouterr().out
    enqueue_current(study, cfg)  # a study with trials: nothing more
    assert len(study.get_trials()) == 1
    outside = config_from_dict({**base, "tune": {"space": {"train.lr": {"log_uniform": [0.01, 0.1]}}}})
    assert current_values(outside) is None


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"train.lr": {"normal": [0, 1]}}, "tune.space.train.lr: unknown distribution 'normal'"),
        ({"train.lr": {"log_uniform": [0, 0.1]}}, "tune.space.train.lr: needs [low, high] with 0 < low < high"),
        ({"train.lr": {"uniform": [0.1, 0.01]}}, "tune.space.train.lr: needs [low, high] with low < high"),
        ({"train.lr": {"uniform": [0, 0.01]}}, "train.lr: {'uniform': [0.0, 0.01]} draws 0.0, which params refuse"),
        ({"train.epochs": {"int": [1.5, 4]}}, "tune.space.train.epochs: needs [low, high] of integers"),
        ({"train.epochs": {"uniform": [2, 4]}}, "draws 2.0, which params refuse: train.epochs: expected int"),
        ({"train.augment": {"choice": []}}, "tune.space.train.augment: needs a non-empty list of distinct scalars"),
        ({"train.augment": {"choice": [[1]]}}, "tune.space.train.augment: needs a non-empty list of distinct"),
        ({"train.augment": "none"}, "tune.space.train.augment: expected one {kind: args} mapping"),
        ({"train.lrr": {"choice": [0.1]}}, "tune.space.train.lrr: is not a key of params.yaml"),
        ({"train": {"choice": [1]}}, "tune.space.train: is not a key of params.yaml"),
        ({"models.baseline.loss_options.gamma_neg": {"choice": [0, 2]}}, "gamma_neg: is not a key of params.yaml"),
        ({"train.folds": {"choice": [0]}}, "tune.space.train.folds: cannot be tuned"),
    ],
)
def test_space_errors_name_the_key(space, message):
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    with pytest.raises(ConfigError) as caught:
        config_from_dict({**base, "tune": {"space": space}})
    assert message in str(caught.value)


def test_tune_section_errors():
    with pytest.raises(ConfigError, match=r"tune.folds: fold ids \[3\] are outside 0..2"):
        config_from_dict({"tune": {"folds": [0, 3]}})
    with pytest.raises(ConfigError, match="tune.study: must be letters, digits"):
        config_from_dict({"tune": {"study": "my study"}})
    with pytest.raises(ConfigError, match="tune.bogus: unknown key"):
        config_from_dict({"tune": {"bogus": 1}})


def test_tune_imports_no_torch():
    """`mlic tune` only drives `dvc` subprocesses: its modules, Optuna and DVC's -S code load without torch."""
    modules = "mlic.cli, mlic.tools, mlic.experiments.tune.study, mlic.studies, dvc.utils.hydra, optuna"
    code = f"import sys, {modules}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _tsv(path: Path, values: list[float], partial: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("step\tval_f2\n" + "".join(f"{i + 1}\t{v}\n" for i, v in enumerate(values)) + partial)


def _finished(files, values: list[float], lr: float) -> None:
    """A fold folder as the train stage writes it: its curve and its config."""
    _tsv(files.finished, values)
    files.config.write_text(yaml.safe_dump({"train": {"lr": lr, "folds": [0]}, "thresholds": {"beta": 2.0}}))


def test_curve_watcher_reports_this_trials_epochs_once(tmp_path):
    models = {"baseline": {"arch": "baseline"}, "hourglass": {"arch": "hourglass"}}
    train = {"models": ["baseline", "hourglass"], "folds": [2], "epochs": 3}
    cfg = config_from_dict({"models": models, "train": train})
    files = run_files(cfg, tmp_path, "val_f2")
    assert list(files) == [("baseline", 2), ("hourglass", 2)]
    a, b = files.values()
    assert a.training == tmp_path / "data/interim/checkpoints/baseline/fold_2/live/plots/metrics/val_f2.tsv"
    assert a.finished == tmp_path / "data/processed/train/baseline/fold_2/live/plots/metrics/val_f2.tsv"
    _tsv(a.training, [0.1, 0.2])  # a pruned trial's leftover resume state
    _finished(b, [0.3, 0.3, 0.3], lr=0.003)  # an earlier run's outputs
    watcher = CurveWatcher(files, "val_f2", cfg.train.epochs, {"train.lr": 0.001, "train.augment": "none"})
    assert watcher.poll() == []  # nothing of this trial yet

    _finished(b, [0.4, 0.4, 0.4], lr=0.003)  # `dvc exp run` checks out another trial's outputs: not this trial's
    _tsv(a.training, [0.5], partial="2\t0.6")  # this trial's first run starts; its second line is half-written
    assert read_curve(a.training, "val_f2") == [0.5]
    assert watcher.poll() == [(0, 0.5)]
    _tsv(a.training, [0.5, 0.6])
    assert watcher.poll() == [(1, 0.6)]
    shutil.rmtree(a.training.parents[3])  # the run ends between two polls: its last epoch is only in its fold folder
    _finished(a, [0.5, 0.6, 0.7], lr=0.001)
    _tsv(b.training, [0.8])  # and the second run starts: its steps follow the first's three epochs
    assert watcher.poll() == [(2, 0.7), (3, 0.8)]
    assert watcher.poll() == []
    _finished(b, [0.8, 0.9, 0.95, 0.99], lr=0.001)  # a restored or finished run: at most `epochs` points
    assert watcher.poll() == [(4, 0.9), (5, 0.95)] and watcher.last_step == 5
    assert read_curve(tmp_path / "absent.tsv", "val_f2") == [] and read_curve(a.finished, "val_map") == []


def _ends(stat: Path, seconds: float = 10.0) -> bool:
    """Whether the process of a /proc stat file is gone, or a zombie to reap, within `seconds`.

    A SIGKILLed process is not gone at once: on a busy machine it may still be running when the signal is sent.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:  # gone
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_a_stopped_run_is_interrupted_with_its_process_group(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "STOP_GRACE_SECONDS", 1.0)
    polls = []

    def stop_after_three_polls(proc) -> bool:
        while len(polls) < 3:
            time.sleep(0.1)
            polls.append(proc.poll())
        return True

    # a background job of a script ignores SIGINT: the SIGKILL after the grace period ends it
    command = ["bash", "-c", "trap '' INT; sleep 60 & echo $! > child.pid; echo started; wait"]
    start = time.monotonic()
    assert run_watched(command, tmp_path, tmp_path / "logs" / "run.log", stop_after_three_polls) is None
    assert time.monotonic() - start < 20 and polls == [None, None, None]
    assert (tmp_path / "logs" / "run.log").read_text() == "started\n"
    stat = Path(f"/proc/{(tmp_path / 'child.pid').read_text().strip()}/stat")
    assert _ends(stat), "the background job outlived the SIGKILL"

    def until_it_ends(proc) -> bool:
        proc.wait()
        return False

    assert run_watched(["bash", "-c", "exit 3"], tmp_path, tmp_path / "run.log", until_it_ends) == 3


TINY_TUNE = {
    "trials": 3,
    "study": "tiny",
    "folds": [0],
    "pruner": "none",  # with two epochs, pruning is the unit test's business; here each trial runs to the end
    "poll_seconds": 0.5,
    # one training knob (its new value trains once, then comes from DVC's run cache) and one of the thresholds stage
    "space": {"thresholds.grid_step": {"choice": [0.05, 0.02]}, "train.augment": {"choice": ["satellite", "none"]}},
}


def _tune_project(finished_run: Path, root: Path) -> Path:
    """A copy of the finished run (git ignores its studies) whose params hold TINY_TUNE, committed."""
    project = copy_run(finished_run, root)
    tracked = run_tool(project, "git", "ls-files", "data/processed/train").split()
    assert tracked and all(path.endswith("/.gitignore") for path in tracked)  # DVC's, which keep the folds out
    params = yaml.safe_load((project / "params.yaml").read_text())
    # one threshold method per trial (the finished run fits three, Optuna's among them): seconds off every trial
    params["thresholds"] |= {"method": "global", "compare_methods": ["global"]}
    (project / "params.yaml").write_text(yaml.safe_dump({**params, "tune": TINY_TUNE}, sort_keys=False))
    run_tool(project, "git", "add", "-A")
    run_tool(project, "git", "commit", "-q", "-m", "tune tiny")
    return project


def _experiments(project: Path) -> list[str]:
    names = run_tool(project, "dvc", "exp", "list", "--name-only").split()
    return sorted(name for name in names if name.startswith("tiny-"))


@pytest.mark.slow
def test_tune_runs_trials_as_experiments_resumes_and_applies_the_best(finished_run, tmp_path):
    import optuna

    project = _tune_project(finished_run, tmp_path / "project")
    first = run_tool(project, "mlic", "tune")
    print(first)
    assert [line.split(":")[0] for line in first.splitlines() if line.startswith("tune trial")] == [
        f"tune trial {k}" for k in range(3)
    ]
    assert _experiments(project) == ["tiny-0", "tiny-1", "tiny-2"]

    # resumed from another folder, through --params: two more trials, not three
    result = subprocess.run(["mlic", "--params", str(project / "params.yaml"), "tune", "--trials", "5"],
                            cwd=tmp_path, env=tool_env(), capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(result.stdout)
    assert "holds 3 trial(s); running 2 more" in result.stdout and "tune trial 3:" in result.stdout
    assert "tune trial 0:" not in result.stdout and "optuna-dashboard sqlite:////" in result.stdout
    assert _experiments(project) == [f"tiny-{k}" for k in range(5)]
    storage = f"sqlite:///{project / 'data/processed/tune.db'}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5
    assert any(t.intermediate_values for t in study.trials)  # the curves of the trials that trained

    best = study.best_trial
    params = load_config(project / "params.yaml")
    drawn = (best.params["thresholds.grid_step"], best.params["train.augment"])
    assert (params.thresholds.grid_step, params.train.augment) == drawn
    assert params.train.folds == (0, 1)  # the workspace's own folds, not the trials'
    scores = json.loads((project / "reports/thresholds.json").read_text())
    assert scores["oof_f2_nested"] == pytest.approx(best.value)

    # the experiments side by side: headline columns in `dvc exp show`, training curves in `dvc plots show` / `diff`
    rows = json.loads(run_tool(project, "dvc", "exp", "show", "--json"))
    columns = _experiment_metrics(rows)
    assert set(columns) >= {f"tiny-{k}" for k in range(5)}
    for metrics in columns.values():
        assert {"method", "oof_f2", "oof_f2_nested", "oof_map"} <= set(metrics)
    run_tool(project, "dvc", "plots", "show", "-o", "shown")
    page = (project / "shown/index.html").read_text()
    for metric in ("train_loss", "lr", "val_f2", "val_map"):
        assert f'"{metric} per epoch"' in page
    assert "baseline/fold_0/live/plots/metrics/val_f2.tsv" in page
    run_tool(project, "dvc", "plots", "diff", "tiny-0", "tiny-1", "-o", "diffed")
    page = (project / "diffed/index.html").read_text()
    assert '"rev": "tiny-0"' in page and '"rev": "tiny-1"' in page and '"val_f2 per epoch"' in page


def _experiment_metrics(rows: list[dict]) -> dict[str, dict]:
    """Experiment name -> its thresholds metrics, from `dvc exp show --json` (baseline rows hold their experiments)."""
    found = {}
    for row in rows:
        for experiment in row.get("experiments") or []:
            for rev in experiment.get("revs", []):
                metrics = ((rev.get("data") or {}).get("metrics") or {}).get("reports/thresholds.json", {})
                found[rev["name"]] = metrics.get("data", {})
    return found


def test_git_keeps_the_metrics_files_that_dvc_exp_show_reads():
    """`dvc exp show` reads an experiment's metrics from its git commit: the repo must not ignore them."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    files = [params["thresholds"]["metrics_file"], f"{params['evaluate']['out_dir']}/metrics.json"]
    assert dvc["thresholds"]["metrics"] and dvc["evaluate"]["metrics"]
    ignored = subprocess.run(["git", "check-ignore", *files], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert ignored == [], f"{ignored} are git-ignored, so experiments would show no metrics"
