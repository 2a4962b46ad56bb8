"""The study: an Optuna study in SQLite, resumed when there, run trial by trial, and its best experiment applied."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from mlic.config import Config, TuneConfig, load_config, param_at
from mlic.errors import ConfigError, MlicError
from mlic.experiments.tune.overrides import hydra_value
from mlic.experiments.tune.runner import LOG_TAIL_LINES, dvc_command, tool_env
from mlic.experiments.tune.trial import Project, check_ignored, run_trial
from mlic.pipeline import write_pipeline
from mlic.registry import Registry
from mlic.search_space import suggest
from mlic.studies import create_study_storage

PRUNERS: Registry[Callable[[TuneConfig], Any]] = Registry("pruner", "tune.pruner")


@PRUNERS.register("none")
def _no_pruner(cfg: TuneConfig) -> Any:
    import optuna

    return optuna.pruners.NopPruner()


@PRUNERS.register("median")
def _median_pruner(cfg: TuneConfig) -> Any:
    """Prune a trial whose value at a step is below the median of the earlier trials' at that step."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=cfg.prune_startup_trials, n_warmup_steps=cfg.prune_warmup_steps)


def open_study(project: Project) -> Any:
    """The study of `tune.study` in `tune.storage` (SQLite), created when absent and resumed when there."""
    import optuna

    tune = project.cfg.tune
    storage, pruner = create_study_storage(project.storage), PRUNERS.get(tune.pruner)(tune)
    return optuna.create_study(study_name=tune.study, storage=storage, direction="maximize", load_if_exists=True,
                               pruner=pruner)  # fmt: skip


def held_trials(study: Any) -> int:
    """Trials the study has run or is running (not an enqueued one waiting for its turn)."""
    import optuna

    return len([t for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING])


def current_values(cfg: Config) -> dict[str, Any] | None:
    """The params' own values of the tuned keys; None when the space cannot draw one of them."""
    data = cfg.to_dict()
    values = {key: param_at(data, key) for key in cfg.tune.space}
    return values if all(cfg.tune.space[key].contains(value) for key, value in values.items()) else None


def enqueue_current(study: Any, cfg: Config) -> None:
    """A new study's first trial: the params as they are (`tune.start_from_params`), the score the search must beat."""
    if not cfg.tune.start_from_params or study.get_trials(deepcopy=False):
        return
    values = current_values(cfg)
    if values is None:
        print("tune: the params' own values are outside tune.space, so trial 0 is drawn like the others", flush=True)
        return
    study.enqueue_trial(values)
    print(f"tune: trial 0 runs the params as they are: {format_params(values)}", flush=True)


def fail_stale(study: Any) -> None:
    """Mark FAIL the trials an interrupted `mlic tune` left RUNNING (one workspace runs one experiment at a time)."""
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        print(f"tune trial {trial.number}: left RUNNING by an interrupted mlic tune, marked FAIL", flush=True)


def short(value: Any) -> str:
    """A drawn value for a log line: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_params(params: dict[str, Any]) -> str:
    """`key=value, ...` of a trial's drawn values."""
    return ", ".join(f"{key}={short(value)}" for key, value in params.items())


def outcome(trial: Any) -> str:
    """A finished trial's state with its value (COMPLETE), or where its curve stopped (PRUNED)."""
    if trial.state.name == "COMPLETE":
        return f"COMPLETE {trial.value:.6f}"
    if trial.state.name == "PRUNED" and trial.last_step is not None:
        return f"PRUNED at step {trial.last_step} (curve {trial.intermediate_values[trial.last_step]:.4f})"
    return trial.state.name


def trial_line(trial: Any, seconds: float) -> str:
    """One finished trial as one log line (a failure's message follows, indented)."""
    experiment = trial.user_attrs.get("experiment", "-")
    line = f"tune trial {trial.number}: {outcome(trial)} {format_params(trial.params)} ({experiment}, {seconds:.0f} s)"
    error = trial.user_attrs.get("error")
    return line + ("\n  " + error.replace("\n", "\n  ") if error else "")


def run_one(project: Project, study: Any) -> Any:
    """Ask the study for a trial, run it, tell the study how it ended; the finished (frozen) trial."""
    import optuna

    states = optuna.trial.TrialState
    start, trial = time.monotonic(), study.ask()
    try:
        value = run_trial(project, trial, suggest(trial, project.cfg.tune.space))
    except optuna.TrialPruned:
        study.tell(trial, state=states.PRUNED)
    except MlicError as exc:  # the run failed, or a drawn value is one params refuse
        trial.set_user_attr("error", exc.format())
        study.tell(trial, state=states.FAIL)
    except BaseException:  # Ctrl-C: the run is stopped and the workspace put back; the trial fails
        study.tell(trial, state=states.FAIL)
        raise
    else:
        study.tell(trial, value)
    finished = study.get_trials(deepcopy=False)[trial.number]
    print(trial_line(finished, time.monotonic() - start), flush=True)
    return finished


def run_study(project: Project, study: Any, trials: int) -> None:
    """Run trials until the study holds `trials`; raises after `tune.max_failures` failed trials in a row."""
    import optuna

    tune, failed = project.cfg.tune, 0
    for k in range(held_trials(study), trials):
        study.sampler = optuna.samplers.TPESampler(seed=tune.seed + k)  # trial k: the same, resumed or not
        failed = failed + 1 if run_one(project, study).state == optuna.trial.TrialState.FAIL else 0
        if failed >= tune.max_failures:
            raise MlicError(f"{failed} trials failed in a row, so the study stopped (tune.max_failures)",
                            path=project.log_dir, fix="see the last lines above, or the trials' logs")  # fmt: skip


def trials_table(study: Any) -> str:
    """The study's trials, one line each: number, state, value (of a complete trial) and drawn values."""
    rows = [("trial", "state", "value", "params")] + [
        (str(t.number), t.state.name, f"{t.value:.6f}" if t.state.name == "COMPLETE" else "", format_params(t.params))
        for t in study.get_trials(deepcopy=False)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join([*(row[i].ljust(widths[i]) for i in range(3)), row[3]]) for row in rows)


def apply_experiment(project: Project, name: str, values: dict[str, Any]) -> None:
    """`dvc exp apply name`; a checkout that misses outputs the trials never made is a warning, not a failure.

    The trials reproduce `tune.target` only, so the outputs of the stages after it (submit, evaluate) are those of
    the commit the study started from; when DVC's cache lacks them (a fresh clone), `dvc exp apply` writes the params
    and dvc.lock, then fails their checkout. The experiment is applied all the same, and `dvc repro` makes them.
    """
    command = [*project.dvc, "exp", "apply", name]
    result = subprocess.run(command, cwd=project.root, env=tool_env(), capture_output=True, text=True)
    if result.returncode == 0:
        return
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-LOG_TAIL_LINES:])
    data = yaml.safe_load(project.params_file.read_text()) or {}
    held = {key: param_at(data, key, None) for key in values}
    if held != values:
        raise MlicError(f"`dvc exp apply {name}` failed (exit status {result.returncode}):\n{tail}",
                        fix=f"apply it by hand: dvc exp apply {name}")  # fmt: skip
    print(f"tune: dvc exp apply {name} set the params and dvc.lock, but could not check out every output "
          f"(outputs of stages after {project.cfg.tune.target} missing from DVC's cache); `dvc repro` makes them",
          flush=True)  # fmt: skip


def apply_best(project: Project, study: Any) -> Any:
    """Apply the best trial's experiment to the workspace (`dvc exp apply`), train.folds set back; the best trial."""
    import optuna
    from dvc.utils.hydra import apply_overrides  # the code of `dvc exp run -S`: the file keeps its comments

    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        raise MlicError("no trial of the study completed, so there is nothing to apply", path=project.log_dir,
                        fix="see the failed trials above and their logs")  # fmt: skip
    best = study.best_trial
    apply_experiment(project, best.user_attrs["experiment"], best.params)
    folds = list(project.cfg.train.folds)
    if folds != list(project.cfg.tune.folds):
        apply_overrides(str(project.params_file), [f"train.folds={hydra_value(folds)}"])
    # the trial's dvc.yaml has its folds' stages only: the workspace's is the one its params need
    write_pipeline(load_config(project.params_file), project.root)
    return best


def tune(cfg: Config, params_file: Path, trials: int | None = None) -> None:
    """Run (or resume) the study of `cfg.tune` in the project of `params_file`, then apply its best trial.

    Args:
        cfg: The loaded params file.
        params_file: Its path; its folder is the git + DVC project where the experiments run.
        trials: Trials the study should hold at the end (default `tune.trials`), counting those it has.
    """
    total = cfg.tune.trials if trials is None else trials
    if total < 1:
        raise MlicError(f"--trials must be >= 1, got {total}")
    if not cfg.tune.space:
        raise ConfigError("tune.space: is empty, nothing to tune", fix="e.g. train.lr: {log_uniform: [0.001, 0.01]}")
    PRUNERS.get(cfg.tune.pruner)  # an unknown name fails before anything runs
    project = Project(params_file.resolve(), cfg, tuple(dvc_command()))
    check_ignored(project.root, [project.storage, project.log_dir / f"{cfg.tune.study}-0.log"])
    study = open_study(project)
    fail_stale(study)
    enqueue_current(study, cfg)
    held = held_trials(study)
    print(f"tune: study {cfg.tune.study!r} holds {held} trial(s); running {max(0, total - held)} more, each "
          f"`dvc exp run {cfg.tune.target}` on train.folds {list(cfg.tune.folds)}", flush=True)  # fmt: skip
    try:
        run_study(project, study, total)
    finally:
        print(trials_table(study), flush=True)
    best = apply_best(project, study)
    print(f"tune: best trial {best.number} ({best.user_attrs['experiment']}), oof_f{cfg.thresholds.beta:g}_nested "
          f"{best.value:.6f}: {format_params(best.params)}", flush=True)  # fmt: skip
    print(f"tune: applied to the workspace (dvc exp apply {best.user_attrs['experiment']}), train.folds "
          f"{list(cfg.train.folds)}: `dvc repro` trains every fold with them", flush=True)  # fmt: skip
    print(f"tune: browse the study with: optuna-dashboard sqlite:///{project.storage}", flush=True)
