"""Fold-parallel training without DDP: the train stages of a project run at once, one per device, then DVC records them.

`dvc repro` runs one stage at a time and holds the project's lock while it does, so two GPUs train one fold after
the other. `mlic train-folds` instead:
1. brings the train stages' upstream stages (prepare, hog, folds, proposals, teachers) up to date with `dvc repro`;
2. runs each stale `train-<model>-<fold>` stage's own command (`mlic train --model M --fold K --resume`, as dvc.yaml
   has it) in a process of its own, as many at once as there are devices: `cuda:N` sets `CUDA_VISIBLE_DEVICES=N`,
   and each process gets its own share of the CPU cores (its affinity, so `train.num_workers: auto` sizes its loader
   to that share, and its torch threads);
3. records each finished stage in dvc.lock (`dvc commit --force <stage>`), so that `dvc repro` then runs only what
   follows (ensemble, thresholds, submit...). A failed fold is left out of the lock, and its log names why.

Each process's output goes to `<train.checkpoint_dir>/../train-folds/<stage>.log`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml

from mlic.errors import MlicError


@dataclass(frozen=True)
class FoldJob:
    """One train stage of dvc.yaml: its name and its command's arguments after `mlic`."""

    stage: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Slot:
    """Where one job at a time runs: a device name (`cpu`, `cuda:N`) and the CPU cores it may use."""

    device: str
    cores: frozenset[int]

    def env(self) -> dict[str, str]:
        """The job's environment: its GPU alone (or none), and torch's threads on its cores."""
        env = {**os.environ, "OMP_NUM_THREADS": str(len(self.cores))}
        env["CUDA_VISIBLE_DEVICES"] = self.device.split(":", 1)[1] if self.device.startswith("cuda:") else ""
        return env


@dataclass(frozen=True)
class JobResult:
    """How one job went: its stage, device, exit status, seconds from its start and its log."""

    stage: str
    device: str
    returncode: int
    started: float
    seconds: float
    log: Path


def stage_deps(pipeline: dict) -> dict[str, set[str]]:
    """Each stage of a dvc.yaml mapping -> the stages whose outputs it reads (an output path, or a folder above one)."""
    stages = pipeline.get("stages", {})
    outs = {str(o): name for name, stage in stages.items() for o in stage.get("outs", [])}
    deps = {}
    for name, stage in stages.items():
        found = set()
        for dep in map(str, stage.get("deps", [])):
            found |= {owner for out, owner in outs.items() if dep == out or dep.startswith(out.rstrip("/") + "/")}
        deps[name] = found
    return deps


def fold_jobs(pipeline: dict, models: tuple[str, ...] | None, folds: tuple[int, ...] | None) -> list[FoldJob]:
    """The train stages of a dvc.yaml mapping, for `models` and `folds` (None: all), in the file's order."""
    jobs = []
    for name, stage in pipeline.get("stages", {}).items():
        args = tuple(str(stage.get("cmd", "")).split())
        if args[:2] != ("mlic", "train"):
            continue
        model, fold = args[args.index("--model") + 1], int(args[args.index("--fold") + 1])
        if (models is None or model in models) and (folds is None or fold in folds):
            jobs.append(FoldJob(name, args[1:]))
    return jobs


def make_slots(devices: list[str], cores: set[int] | None = None) -> list[Slot]:
    """One slot per device, the usable CPU cores dealt out evenly among them (each gets at least one)."""
    cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
    share = max(1, len(cores) // len(devices))
    return [Slot(d, frozenset(cores[i * share : (i + 1) * share] or cores[-1:])) for i, d in enumerate(devices)]


def run_jobs(jobs: list[FoldJob], slots: list[Slot], params: str, log_dir: Path) -> list[JobResult]:
    """Run the jobs, one per slot at a time, each `python -m mlic.cli --params P <args>`; wait for them all."""
    log_dir.mkdir(parents=True, exist_ok=True)
    queue, free, running, results = deque(jobs), deque(slots), {}, []
    began = time.perf_counter()
    while queue or running:
        while queue and free:
            job, slot = queue.popleft(), free.popleft()
            log = log_dir / f"{job.stage}.log"
            command = [sys.executable, "-m", "mlic.cli", "--params", params, *job.args]
            pin = partial(os.sched_setaffinity, 0, slot.cores)  # in the child, before it starts
            with open(log, "w") as out:
                process = subprocess.Popen(command, stdout=out, stderr=out, env=slot.env(), preexec_fn=pin)
            print(f"train-folds: {job.stage} on {slot.device} (cores {sorted(slot.cores)}), log {log}", flush=True)
            running[process] = (job, slot, time.perf_counter(), log)
        time.sleep(0.2)
        for process in [p for p in running if p.poll() is not None]:
            job, slot, started, log = running.pop(process)
            results.append(JobResult(job.stage, slot.device, process.returncode, round(started - began, 1),
                                     round(time.perf_counter() - started, 1), log))  # fmt: skip
            status = "done" if process.returncode == 0 else f"FAILED (exit {process.returncode})"
            print(f"train-folds: {job.stage} {status} in {results[-1].seconds:.0f} s", flush=True)
            free.append(slot)
    return results


def dvc(*args: str) -> str:
    """Run a dvc command in the project; its failure is an MlicError with its output."""
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise MlicError(f"`dvc {' '.join(args)}` failed:\n{(result.stdout + result.stderr)[-2000:]}",
                        fix="fix the error above, then rerun mlic train-folds")  # fmt: skip
    return result.stdout


def stale(stages: list[str]) -> set[str]:
    """Which of `stages` `dvc status` reports as changed (or never run)."""
    out = yaml.safe_load(dvc("status", "--json", *stages)) or {}
    return {name.split(":")[-1] for name in out} & set(stages)


def train_folds(params: str, devices: list[str], models: tuple[str, ...] | None, folds: tuple[int, ...] | None,
                force: bool, log_dir: Path) -> list[JobResult]:  # fmt: skip
    """Upstream stages reproduced, the stale train stages run in parallel on `devices`, and recorded in dvc.lock."""
    pipeline = yaml.safe_load(Path("dvc.yaml").read_text()) if Path("dvc.yaml").is_file() else None
    if pipeline is None:
        raise MlicError("dvc.yaml not found", fix="run from the project root (after `mlic pipeline --write`)")
    jobs = fold_jobs(pipeline, models, folds)
    if not jobs:
        raise MlicError("no train stage matches", path="dvc.yaml", fix="check --models and --folds: train.models")
    names = {job.stage for job in jobs}
    upstream = sorted(set().union(*(stage_deps(pipeline)[name] for name in names)) - names)
    if upstream:
        print(f"train-folds: dvc repro {' '.join(upstream)}", flush=True)
        dvc("repro", *upstream)
    todo = names if force else stale(sorted(names))
    jobs = [job for job in jobs if job.stage in todo]
    skipped = len(names) - len(jobs)
    print(f"train-folds: {len(jobs)} stage(s) to train on {len(devices)} device(s); {skipped} up to date", flush=True)
    results = run_jobs(jobs, make_slots(devices), params, log_dir)
    done = [r.stage for r in results if r.returncode == 0]
    if done:
        dvc("commit", "--force", *done)
    failed = [r for r in results if r.returncode != 0]
    if failed:
        listed = ", ".join(f"{r.stage} (log {r.log})" for r in failed)
        fix = "read the logs; the finished folds are in dvc.lock, so a rerun trains only these"
        raise MlicError(f"{len(failed)} fold(s) failed: {listed}", fix=fix)
    return results
