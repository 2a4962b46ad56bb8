"""`mlic train` as users run it, in subprocesses: SIGKILL mid-epoch then --resume, and DDP under torchrun (gloo)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO
from finished_run import tool_env

from mlic.config import config_from_dict
from mlic.stages import folds, hog, prepare

pytestmark = pytest.mark.slow

# Runs `mlic train` with CachedSamples patched to SIGKILL its own process after KILL_AFTER training samples of the
# epoch that follows the first checkpoint: a kill at a known point in the middle of epoch 2, not a timing guess.
KILLER = """
import os, signal, sys
from pathlib import Path
import mlic.loop.batches
import torch.utils.data
checkpoint, kill_after, fetched = Path(sys.argv[1]), int(sys.argv[2]), [0]
original = mlic.loop.batches.CachedSamples.__getitem__
def getitem(self, i):
    if self.transform is not None and checkpoint.is_file():  # a training sample, after epoch 1's checkpoint
        fetched[0] += 1
        if fetched[0] == kill_after:  # the training process itself, also when a loader worker fetches
            worker = torch.utils.data.get_worker_info() is not None
            os.kill(os.getppid() if worker else os.getpid(), signal.SIGKILL)
    return original(self, i)
mlic.loop.batches.CachedSamples.__getitem__ = getitem
from mlic.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _params(root: Path, sample: Path, name: str, train: dict) -> Path:
    params = {
        "data": {"root": str(sample), "min_label_count": 1},
        "prepare": {"out_dir": str(root / "prepare"), "image_size": 32},
        "hog": {"out_dir": str(root / "hog"), "image_size": 32},
        "folds": {"out_file": str(root / "folds.csv"), "n_splits": 2},
        "models": {
            "baseline": {"arch": "baseline", "backbone": "resnet10t", "extra_filters": 8},
            "hog_linear": {"arch": "hog_linear"},
        },
        "train": {
            "out_dir": str(root / name / "train"),
            "checkpoint_dir": str(root / name / "checkpoints"),
            "folds": [0],
            "batch_size": 8,
            "device": "cpu",
            **train,
        },
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def root(sample_competition, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    cfg = config_from_dict(yaml.safe_load(_params(root, sample_competition, "prep", {}).read_text()))
    for stage in (prepare, hog, folds):
        stage.main(cfg)
    return root


def _stage_command(params: Path, model: str, fold: int) -> str:
    """The train stage's command as the dvc.yaml generated for `params` spells it, for one model and fold."""
    from mlic.config import load_config
    from mlic.pipeline import generate

    stages = yaml.safe_load(generate(load_config(params), REPO))["stages"]
    return stages[f"train-{model}-{fold}"]["cmd"]


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600, **kw)


def _outputs(params: Path, model: str) -> dict:
    fold_dir = Path(yaml.safe_load(params.read_text())["train"]["out_dir"]) / model / "fold_0"
    with np.load(fold_dir / "oof.npz") as oof:
        probs = oof["probs"]
    weights = torch.load(fold_dir / "model.pt", weights_only=True)["state_dict"]  # tensors and plain types only
    curves = (fold_dir / "live/plots/metrics/train_loss.tsv").read_text().splitlines()
    return {"oof": probs, "test": np.load(fold_dir / "test.npy"), "weights": weights, "curves": curves}


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(root, sample_competition):
    train = {"epochs": 3, "warmup_epochs": 1, "ema_decay": 0.9, "early_stopping_patience": 5, "clip_grad_norm": 5.0,
             "accumulate_steps": 2, "sampler": "stratified", "augment": "satellite", "tta": "dihedral"}  # fmt: skip
    straight = _params(root, sample_competition, "straight", train)
    killed = _params(root, sample_competition, "killed", train)
    command = ["train", "--model", "baseline", "--fold", "0", "--resume"]
    done = _run(["-m", "mlic.cli", "--params", str(straight), *command])
    assert done.returncode == 0, done.stderr[-3000:]

    checkpoint = root / "killed/checkpoints/baseline/fold_0/last.pt"
    crash = _run(["-c", KILLER, str(checkpoint), "8", "--params", str(killed), *command])
    assert crash.returncode == -signal.SIGKILL, crash.stderr[-3000:]
    assert torch.load(checkpoint, weights_only=True)["train_state"]["epoch"] == 1  # died inside epoch 2
    assert not (root / "killed/train/baseline/fold_0").exists()  # no half-written outputs

    resumed = _run(["-m", "mlic.cli", "--params", str(killed), *command])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed after epoch 1" in resumed.stdout
    assert not checkpoint.exists()  # resume state is removed once the fold is written
    a, b = _outputs(straight, "baseline"), _outputs(killed, "baseline")
    assert np.array_equal(a["oof"], b["oof"]) and np.array_equal(a["test"], b["test"])
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    assert a["curves"] == b["curves"] and len(a["curves"]) == 4  # header + 3 epochs, replayed on resume


# train.models lists it: dvc.yaml has stages for the listed models only
ONE_LINEAR_MODEL = {"models": ["hog_linear"], "epochs": 2, "warmup_epochs": 0, "batch_size": 8, "augment": "none"}


@pytest.fixture(scope="module")
def single_process(root, sample_competition) -> tuple[Path, str]:
    """`mlic train --resume` of hog_linear on one process, over a resume checkpoint another config left: its params
    and its output. The resume test reads the output; the DDP test compares two processes' outputs with its own."""
    params = _params(root, sample_competition, "single", ONE_LINEAR_MODEL)
    checkpoint = root / "single/checkpoints/hog_linear/fold_0/last.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"fingerprint": "from another run"}, checkpoint)
    command = ["train", "--model", "hog_linear", "--fold", "0", "--resume"]
    result = _run(["-m", "mlic.cli", "--params", str(params), *command])
    assert result.returncode == 0, result.stderr[-3000:]
    return params, result.stdout


def test_resume_ignores_a_checkpoint_from_another_config(single_process):
    _, output = single_process
    assert "from another config or code version; starting afresh" in output


def test_ddp_on_two_gloo_processes_matches_one_process(root, sample_competition, single_process):
    """Each process takes half of every batch and DDP averages the gradients: a linear model ends where one
    process would (up to float rounding), and only rank 0 writes outputs."""
    single, _ = single_process
    ddp = _params(root, sample_competition, "ddp", {**ONE_LINEAR_MODEL, "nproc_per_node": 2})
    # exactly what `dvc repro train-hog_linear-0` runs, in a project whose params.yaml asks for 2 processes
    project = root / "ddp_project"
    project.mkdir()
    (project / "params.yaml").write_text(ddp.read_text())
    two = subprocess.run(_stage_command(ddp, "hog_linear", 0), shell=True, cwd=project, capture_output=True, text=True,
                         env={**tool_env(), "PYTHONUNBUFFERED": "1"}, timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert "launching 2 processes" in two.stdout
    assert "x 2 process(es)" in two.stdout and two.stdout.count("val F2 with TTA") == 1  # rank 0 reports
    a, b = _outputs(single, "hog_linear"), _outputs(ddp, "hog_linear")
    assert np.allclose(a["oof"], b["oof"], atol=1e-5) and np.allclose(a["test"], b["test"], atol=1e-5)
    assert all(torch.allclose(a["weights"][k], b["weights"][k], atol=1e-5) for k in a["weights"])


def test_ddp_trains_a_cnn_with_batch_norm(root, sample_competition):
    params = _params(root, sample_competition, "ddp_cnn", {"epochs": 1, "warmup_epochs": 0})
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "mlic.cli"]
    result = _run([*torchrun, "--params", str(params), "train", "--model", "baseline", "--fold", "0"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("val F2 with TTA") == 1  # rank 0 alone writes and reports
    out = _outputs(params, "baseline")
    assert np.isfinite(out["oof"]).all() and out["oof"].shape[0] == 20
    running = {k: v for k, v in out["weights"].items() if k.endswith(("running_mean", "running_var"))}
    assert running and all(torch.isfinite(v).all() for v in running.values())
    means = [v for k, v in running.items() if k.endswith("running_mean")]
    assert any(v.abs().sum() > 0 for v in means)  # batch norm saw the data (its running means left their zeros)
