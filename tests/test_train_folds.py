"""`mlic train-folds`: the train stages of a project at once, one per device, recorded in dvc.lock (fold_queue)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from finished_run import copy_run, run_tool

from mlic.experiments.fold_queue import fold_jobs, make_slots, stage_deps

PIPELINE = {
    "stages": {
        "prepare": {"cmd": "mlic prepare", "deps": ["data/raw"], "outs": ["data/processed/prepare"]},
        "folds": {"cmd": "mlic folds", "deps": ["data/processed/prepare/labels.npz"], "outs": ["data/processed/f.csv"]},
        "teacher-kd-0": {
            "cmd": "mlic teacher --model kd --fold 0",
            "deps": ["data/processed/prepare"],
            "outs": ["data/processed/teachers/kd/fold_0"],
        },  # fmt: skip
        "train-kd-0": {
            "cmd": "mlic train --model kd --fold 0 --resume",
            "deps": ["data/processed/prepare", "data/processed/f.csv", "data/processed/teachers/kd/fold_0"],
            "outs": ["data/processed/train/kd/fold_0"],
        },  # fmt: skip
        "train-base-0": {
            "cmd": "mlic train --model base --fold 0 --resume",
            "deps": ["data/processed/f.csv"],
            "outs": ["data/processed/train/base/fold_0"],
        },  # fmt: skip
        "train-base-1": {
            "cmd": "mlic train --model base --fold 1 --resume",
            "deps": ["data/processed/f.csv"],
            "outs": ["data/processed/train/base/fold_1"],
        },  # fmt: skip
        "ensemble": {"cmd": "mlic ensemble", "deps": ["data/processed/train/base/fold_0"], "outs": ["e"]},
    }
}


def test_the_train_stages_and_their_upstream_are_read_from_dvc_yaml():
    jobs = fold_jobs(PIPELINE, None, None)
    assert [j.stage for j in jobs] == ["train-kd-0", "train-base-0", "train-base-1"]
    assert jobs[0].args == ("train", "--model", "kd", "--fold", "0", "--resume")
    assert [j.stage for j in fold_jobs(PIPELINE, ("base",), (1,))] == ["train-base-1"]
    deps = stage_deps(PIPELINE)
    assert deps["train-kd-0"] == {"prepare", "folds", "teacher-kd-0"}  # a folder, a file, a file under a folder
    assert deps["folds"] == {"prepare"} and deps["ensemble"] == {"train-base-0"}


def test_each_device_gets_its_share_of_the_cores_and_only_its_gpu():
    slots = make_slots(["cuda:0", "cuda:1"], set(range(16)))
    assert [sorted(s.cores) for s in slots] == [list(range(8)), list(range(8, 16))]
    env = slots[1].env()
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["OMP_NUM_THREADS"] == "8"
    cpu = make_slots(["cpu", "cpu", "cpu"], {0, 1})  # more slots than cores: each gets one, shared
    assert all(len(s.cores) == 1 for s in cpu) and cpu[0].env()["CUDA_VISIBLE_DEVICES"] == ""


@pytest.mark.slow  # two tiny folds trained at once on the CPU, then dvc commit and status: about 40 s
def test_two_folds_train_at_once_and_dvc_repro_then_has_nothing_to_train(finished_run, tmp_path):
    """The baseline's two folds, deleted from a finished run, retrained in parallel (one core each).

    Their predictions match the serial run's (one thread instead of two: equal to float32 rounding), the two
    processes overlap in time, and DVC records both: `dvc status` then lists no train stage.
    """
    project = copy_run(finished_run, tmp_path / "run")
    folds = [project / f"data/processed/train/baseline/fold_{k}" for k in (0, 1)]
    before = [np.load(f / "oof.npz")["probs"] for f in folds]
    for folder in folds:
        shutil.rmtree(folder)
    out = run_tool(project, "mlic", "train-folds", "--models", "baseline", "--devices", "cpu", "cpu")
    runs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert sorted(r["stage"] for r in runs) == ["train-baseline-0", "train-baseline-1"]
    first, second = sorted(runs, key=lambda r: r["started_s"])
    assert second["started_s"] < first["started_s"] + first["seconds"]  # at once, not one after the other
    for folder, probs in zip(folds, before, strict=True):
        assert np.allclose(np.load(folder / "oof.npz")["probs"], probs, atol=1e-4)
    status = json.loads(run_tool(project, "dvc", "status", "--json") or "{}")
    assert not [name for name in status if name.startswith("train-")], status
