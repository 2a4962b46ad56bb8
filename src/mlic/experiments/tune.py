"""`mlic tune`: an Optuna study over params keys (`tune.space`), each trial one DVC experiment of the pipeline.

A trial draws a value for every key of `tune.space`, then runs, in the project (the params file's folder),

    dvc exp run -n <study>-<k> -S key=value ... -S train.folds=[<tune.folds>] <tune.target>

and its value is `oof_f<beta>_nested` of `thresholds.metrics_file` (the nested sample F-beta of the submission's
thresholds), maximised. While the run goes on, the DVCLive validation curves `val_f<beta>.tsv` of its train stages
are read every `tune.poll_seconds` and reported to Optuna (`CurveWatcher`). When the pruner (`tune.pruner`) says so,
the run is stopped (SIGINT to its process group, so that DVC releases its locks; SIGKILL after a grace period), the
workspace's params file and dvc.lock are put back as they were before the trial, and the trial is PRUNED. A failed
run fails its trial with the command's last lines (the whole output is in `<storage>-logs/<experiment>.log`), the
workspace is put back the same way, and the study goes on unless `tune.max_failures` trials have failed in a row.

The study lives in SQLite (`tune.storage`, which must be git-ignored, or `dvc exp run` would take it for one of the
experiment's files), so that rerunning resumes it: `tune.trials` (or `--trials`) counts the trials it holds, and
trial k's TPE sampler is seeded with `tune.seed + k`. At the end the trials are listed, and the best experiment is
applied to the workspace (`dvc exp apply`), with `train.folds` set back to the workspace's own, ready for a full
`dvc repro`.

Nothing here imports torch: the pipeline runs in `dvc` subprocesses.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlic.config import Config, Distribution, TuneConfig, config_from_dict, param_at
from mlic.errors import ConfigError, MlicError
from mlic.io import atomic_path
from mlic.layout import CONFIG_FILE, LIVE_DIR, live_metrics_dir
from mlic.registry import Registry

STOP_GRACE_SECONDS = 60.0  # how long a stopped trial's `dvc exp run` may take to exit after SIGINT, before SIGKILL
LOG_TAIL_LINES = 20  # lines of a failed trial's output in its message

# --- the search space: how each distribution kind of `tune.space` is drawn (config.DISTRIBUTIONS checks them) ---

Suggester = Callable[[Any, str, tuple], Any]  # (Optuna trial, params key, the distribution's args) -> a value
SUGGESTERS: Registry[Suggester] = Registry("distribution", "tune.space")


@SUGGESTERS.register("log_uniform")
def _log_uniform(trial: Any, key: str, args: tuple) -> float:
    return trial.suggest_float(key, args[0], args[1], log=True)


@SUGGESTERS.register("uniform")
def _uniform(trial: Any, key: str, args: tuple) -> float:
    return trial.suggest_float(key, args[0], args[1])


@SUGGESTERS.register("int")
def _int(trial: Any, key: str, args: tuple) -> int:
    return trial.suggest_int(key, args[0], args[1])


@SUGGESTERS.register("choice")
def _choice(trial: Any, key: str, args: tuple) -> Any:
    return trial.suggest_categorical(key, list(args))


def suggest(trial: Any, space: dict[str, Distribution]) -> dict[str, Any]:
    """A value for every key of `space`, drawn by the trial's sampler (each Optuna parameter is named by its key)."""
    return {key: SUGGESTERS.get(dist.kind)(trial, key, dist.args) for key, dist in space.items()}


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


# --- values as `dvc exp run -S` parses them (Hydra's override grammar) -------------------------------------------


@functools.singledispatch
def hydra_value(value: Any) -> str:
    """`value` in Hydra's override grammar, which `dvc exp run -S key=value` parses: it reads back the same value."""
    raise MlicError(f"cannot pass {value!r} ({type(value).__name__}) to `dvc exp run -S`",
                    fix="tune keys whose values are null, booleans, numbers, strings or lists of them")  # fmt: skip


@hydra_value.register(type(None))
def _null(value: None) -> str:
    return "null"


@hydra_value.register(bool)
def _bool(value: bool) -> str:
    return "true" if value else "false"


@hydra_value.register(int)
@hydra_value.register(float)
def _number(value: float) -> str:
    return repr(value)  # the shortest text that reads back as the same float


@hydra_value.register(str)
def _string(value: str) -> str:
    """Quoted, so that `none`, `true`, `1e-3` or `a,b` stay strings (a bare comma would make a sweep).

    In Hydra's quoted strings a backslash escapes only a quote or another backslash before a quote or the end.
    """
    return "'" + re.sub(r"(\\*)('|\Z)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value) + "'"


@hydra_value.register(list)
@hydra_value.register(tuple)
def _list(value: Sequence) -> str:
    return "[" + ",".join(hydra_value(item) for item in value) + "]"


def set_param_args(params_file: Path, values: dict[str, Any]) -> list[str]:
    """The `-S` arguments of `dvc exp run` that set `values` (dotted key -> value) in the params file."""
    prefix = "" if params_file.name == "params.yaml" else f"{params_file.name}:"
    return [arg for key, value in values.items() for arg in ("-S", f"{prefix}{key}={hydra_value(value)}")]


def with_values(cfg: Config, values: dict[str, Any]) -> Config:
    """`cfg` with `values` (dotted key -> value) set, checked as params.yaml is (a ConfigError names the key)."""
    data = cfg.to_dict()
    for key, value in values.items():
        parent, _, leaf = key.rpartition(".")
        param_at(data, parent)[leaf] = value
    return config_from_dict(data)


# --- the validation curves of a running trial ------------------------------------------------------------------

RunKey = tuple[str, int]  # (model, fold): one train stage


@dataclass(frozen=True)
class RunFiles:
    """One train run's DVCLive curve: while it trains, and in its fold folder (beside its config) once it has ended."""

    training: Path
    finished: Path
    config: Path


def run_files(cfg: Config, root: Path, metric: str) -> dict[RunKey, RunFiles]:
    """The curve files of `metric` of every train run of `cfg`, in params order (models, then folds)."""
    curve = live_metrics_dir(LIVE_DIR) / f"{metric}.tsv"
    return {
        (m, f): RunFiles(root / cfg.checkpoint_dir(m, f) / curve, root / cfg.fold_dir(m, f) / curve,
                         root / cfg.fold_dir(m, f) / CONFIG_FILE)
        for m in cfg.train.models
        for f in cfg.train.folds
    }  # fmt: skip


def read_curve(path: Path, metric: str) -> list[float]:
    """A DVCLive TSV's values of `metric` in step order; [] when absent. A half-written last line is left out."""
    try:
        text = path.read_text()
    except OSError:
        return []
    header, *rows = text[: text.rfind("\n") + 1].splitlines() or [""]
    columns = header.split("\t")
    if "step" not in columns or metric not in columns:
        return []
    points = {}
    for row in rows:
        cells = row.split("\t")
        with contextlib.suppress(ValueError):
            if len(cells) == len(columns):
                points[int(cells[columns.index("step")])] = float(cells[columns.index(metric)])
    return [points[step] for step in sorted(points)]


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of a file from another (mtime, size, inode); None when it is absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def trained_with(config_file: Path, values: dict[str, Any]) -> bool:
    """Whether a fold folder's config agrees with `values` (dotted key -> value) on every key it holds."""
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    missing = object()
    for key, value in values.items():
        found = param_at(config, key, missing)
        if found is not missing and found != value:
            return False
    return True


class CurveWatcher:
    """The validation curves of one trial's train runs, as the points (step, value) of `trial.report`.

    A run's curve is this trial's when it was written after the watcher was made: under the checkpoint folder while
    the run trains, or in its fold folder, when that folder's config agrees with the trial's values (`dvc exp run`
    first checks out the workspace's outputs, which may be another trial's). Epoch e (from 0) of the r-th run in params
    order is step r * epochs + e: the trial's epochs so far when DVC runs them in that order, each run counted as
    `epochs` whatever early stopping did, so that a step is the same run and epoch in every trial.
    """

    def __init__(self, files: dict[RunKey, RunFiles], metric: str, epochs: int, values: dict[str, Any]):
        self.files, self.metric, self.epochs, self.values = files, metric, epochs, values
        self._before = {p: _signature(p) for run in files.values() for p in (run.training, run.finished)}
        self._reported: dict[RunKey, int] = {}  # points of each run returned so far
        self.last_step: int | None = None

    def _new(self, path: Path) -> bool:
        return _signature(path) not in (None, self._before[path])

    def curve(self, run: RunKey) -> list[float]:
        """The run's longest curve written in this trial (at most `epochs` points); [] when there is none yet."""
        files = self.files[run]
        paths = [files.training] if self._new(files.training) else []
        if self._new(files.finished) and trained_with(files.config, self.values):
            paths.append(files.finished)
        return max((read_curve(path, self.metric)[: self.epochs] for path in paths), key=len, default=[])

    def poll(self) -> list[tuple[int, float]]:
        """The points written since the last poll, in step order."""
        points = []
        for r, run in enumerate(self.files):
            curve, done = self.curve(run), self._reported.get(run, 0)
            points += [(r * self.epochs + e, value) for e, value in enumerate(curve) if e >= done]
            self._reported[run] = max(done, len(curve))
        if points:
            self.last_step = max(points[-1][0], self.last_step or 0)
        return points


def watch(proc: subprocess.Popen, watcher: CurveWatcher, trial: Any, poll_seconds: float) -> bool:
    """Report the trial's curves to Optuna until its run ends; True when the pruner stops it first."""
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=poll_seconds)
        for step, value in watcher.poll():
            trial.report(value, step)
        if proc.returncode is not None:
            return False
        if trial.should_prune():
            return True


# --- running one experiment --------------------------------------------------------------------------------------


def tool_env() -> dict[str, str]:
    """This environment with the interpreter's bin folder first on PATH, so that the stages run this `mlic`."""
    return {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def dvc_command() -> list[str]:
    """The dvc beside this interpreter (the virtual environment's), else the one on PATH."""
    local = Path(sys.executable).with_name("dvc")
    found = str(local) if local.is_file() else shutil.which("dvc")
    if not found:
        raise MlicError("dvc not found", fix="install the locked requirements (`make install`)")
    return [found]


def stop(proc: subprocess.Popen) -> None:
    """Interrupt a run's process group as Ctrl-C would (DVC releases its locks), killing what lingers after a while.

    DVC waits for its stage's command, which SIGINT also ends, so the group goes at once; SIGKILL comes after
    `STOP_GRACE_SECONDS`, or as soon as the leader is gone, for any process of the group still there.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError):  # what is left of the group: all of it after the grace period
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_watched(command: list[str], cwd: Path, log: Path, stop_when: Callable[[subprocess.Popen], bool]) -> int | None:
    """Run `command` in its own process group, its output in `log`; its exit status, or None when it was stopped.

    `stop_when(proc)` watches it until it ends (False) or must stop (True). Ctrl-C or an error stops it too.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=tool_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            stopped = stop_when(proc)
        except BaseException:
            stop(proc)
            raise
        if stopped:
            stop(proc)
            return None
        return proc.wait()


@dataclass(frozen=True)
class Snapshot:
    """Files of the workspace as they were (None: absent), put back after a stopped or failed trial."""

    files: dict[Path, bytes | None]

    @classmethod
    def take(cls, paths: Iterable[Path]) -> Snapshot:
        """The current bytes of `paths`."""
        return cls({path: path.read_bytes() if path.is_file() else None for path in paths})

    def restore(self) -> None:
        """Write every file back as it was (atomically), or remove it when it was absent."""
        for path, data in self.files.items():
            if data is None:
                path.unlink(missing_ok=True)
            elif not path.is_file() or path.read_bytes() != data:
                with atomic_path(path) as tmp:
                    tmp.write_bytes(data)


class TrialFailed(MlicError):
    """A trial whose experiment failed or left no objective value."""


def last_lines(path: Path, count: int = LOG_TAIL_LINES) -> str:
    """The last `count` lines of a log file."""
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(lines[-count:])


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


# --- the study -------------------------------------------------------------------------------------------------


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


def run_trial(project: Project, trial: Any, values: dict[str, Any]) -> float:
    """Run one trial's experiment and return its value; raises optuna.TrialPruned or TrialFailed.

    The workspace's params file and dvc.lock are put back as they were unless the experiment succeeded.
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
    snapshot, status = Snapshot.take([project.params_file, project.root / "dvc.lock"]), None
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


def open_study(project: Project) -> Any:
    """The study of `tune.study` in `tune.storage` (SQLite), created when absent and resumed when there."""
    import optuna

    from mlic.predict.threshold_fitting import create_study_storage

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
