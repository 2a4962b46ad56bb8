"""The DVCLive validation curves of a running trial's train stages, read while it runs and reported to Optuna."""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlic.config import Config, param_at
from mlic.layout import CONFIG_FILE, LIVE_DIR, live_metrics_dir

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
