"""One trial: its values set in params, its experiment run under the curve watcher, and the value it scores."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlic.config import Config
from mlic.errors import ConfigError, MlicError
from mlic.experiments.tune.curves import CurveWatcher, run_files, watch
from mlic.experiments.tune.overrides import set_param_args, with_values
from mlic.experiments.tune.runner import Snapshot, last_lines, run_watched
from mlic.io import write_text
from mlic.pipeline import generate


@dataclass(frozen=True)
class Project:
    """Where the trials run: the folder of the params file, a git + DVC project."""

    params_file: Path  # absolute
    cfg: Config
    dvc: tuple[str, ...]

    @property
    def root(self) -> Path:
        """The project folder: trials run there, and the params' relative paths start there."""
        return self.params_file.parent

    @property
    def storage(self) -> Path:
        """The study's SQLite file."""
        return self.root / self.cfg.tune.storage

    @property
    def log_dir(self) -> Path:
        """Each trial's whole `dvc exp run` output, `<experiment>.log`, beside the study."""
        return self.storage.with_name(f"{self.storage.stem}-logs")


def check_ignored(root: Path, paths: Iterable[Path]) -> None:
    """Fail unless git ignores each of `paths`, which change while `dvc exp run` collects the experiment's files."""
    for path in paths:
        try:
            code = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=root, capture_output=True).returncode
        except FileNotFoundError:
            raise MlicError("git not found; DVC experiments need it", fix="install git") from None
        if code == 1:
            raise ConfigError(
                f"tune.storage: {path} is not git-ignored; the study and the trials' logs change during every "
                "`dvc exp run`, which commits tracked files into the experiment and warns about untracked ones",
                fix="point tune.storage into a git-ignored folder (data/processed/), or add it to .gitignore",
            )
        if code != 0:
            raise MlicError(f"{root} is not a git repository: DVC experiments need one",
                            fix="git init && dvc init, then commit the pipeline")  # fmt: skip


class TrialFailed(MlicError):
    """A trial whose experiment failed or left no objective value."""


def objective_value(metrics_file: Path, beta: float) -> float:
    """`oof_f<beta>_nested` of the thresholds stage's metrics file, the value a trial maximises."""
    key = f"oof_f{beta:g}_nested"
    value = json.loads(metrics_file.read_text()).get(key) if metrics_file.is_file() else None
    if value is None:
        raise TrialFailed(
            f"{key} is missing or null: no nested score (null: too few out-of-fold rows to nest)",
            path=metrics_file,
            fix="tune.target must be thresholds or a stage after it; with null, train more rows per trial "
            "(tune.folds) or lower thresholds.nested_splits",
        )
    return float(value)


def run_trial(project: Project, trial: Any, values: dict[str, Any]) -> float:
    """Run one trial's experiment and return its value; raises optuna.TrialPruned or TrialFailed.

    dvc.yaml is first written for the trial's params (`-S train.folds=[0]` must drop the other folds' stages). The
    workspace's params file, dvc.yaml and dvc.lock are put back as they were unless the experiment succeeded.
    """
    import optuna

    tune = project.cfg.tune
    run_values = {**values, "train.folds": list(tune.folds)}
    cfg = with_values(project.cfg, run_values)  # values params refuse fail the trial before anything runs
    name = f"{tune.study}-{trial.number}"
    trial.set_user_attr("experiment", name)
    metric, log = f"val_f{cfg.thresholds.beta:g}", project.log_dir / f"{name}.log"
    watcher = CurveWatcher(run_files(cfg, project.root, metric), metric, cfg.train.epochs, values)
    command = [*project.dvc, "exp", "run", "-n", name, *set_param_args(project.params_file, run_values), tune.target]
    dvc_yaml = project.root / "dvc.yaml"
    snapshot, status = Snapshot.take([project.params_file, project.root / "dvc.lock", dvc_yaml]), None
    write_text(dvc_yaml, generate(cfg, project.root))  # the trial's stages (its folds): `-S` sets params, not stages
    try:
        status = run_watched(command, project.root, log, lambda proc: watch(proc, watcher, trial, tune.poll_seconds))
    finally:
        if status != 0:  # stopped (None), failed, or interrupted
            snapshot.restore()
    if status is None:
        raise optuna.TrialPruned(f"pruned at step {watcher.last_step}")
    if status != 0:
        raise TrialFailed(f"`dvc exp run -n {name}` failed (exit status {status}); its last lines:\n{last_lines(log)}",
                          path=log)  # fmt: skip
    return objective_value(project.root / cfg.thresholds.metrics_file, cfg.thresholds.beta)
