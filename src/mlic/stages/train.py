"""Stage `train`: fit one model on one fold, then write its checkpoint, out-of-fold and test predictions (TTA).

`mlic train --model M --fold K [--resume]`; under `torchrun --nproc_per_node N` it trains with DDP, and with
`train.nproc_per_node: N` (N > 1) it relaunches itself so (what the DVC stage uses). While it runs,
the resume state lives in `<train.checkpoint_dir>/<model>/fold_<k>/` (updated every epoch, removed at the end);
the outputs appear in `<train.out_dir>/<model>/fold_<k>/` only once the fold has finished.
"""

from __future__ import annotations

import os
import subprocess
import sys

from mlic.config import DEFAULT_PARAMS, Config
from mlic.errors import MlicError
from mlic.train.fold import train_fold_into


def torchrun_command(nproc: int, params: str, model: str, fold: int, resume: bool) -> list[str]:
    """This stage's command under torchrun on one node: N processes of `python -m mlic.cli train ...`."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    train = ["-m", "mlic.cli", "--params", params, "train", "--model", model, "--fold", str(fold)]
    return [*launcher, *train, *(["--resume"] if resume else [])]


def relaunch_under_torchrun(cfg: Config, params: str, model: str, fold: int, resume: bool) -> None:
    """Run this stage again as `train.nproc_per_node` DDP processes and wait for them; their failure is ours."""
    command = torchrun_command(cfg.train.nproc_per_node, params, model, fold, resume)
    print(f"train {model} fold {fold}: launching {cfg.train.nproc_per_node} processes: {' '.join(command[1:])}",
          flush=True)  # fmt: skip
    code = subprocess.run(command, check=False).returncode
    if code != 0:
        raise MlicError(
            f"torchrun with {cfg.train.nproc_per_node} processes failed (exit status {code}); the output above shows "
            "which rank failed and why",
            fix="set train.nproc_per_node: 1 to train in one process, or fix the error above",
        )


def main(cfg: Config, fold: int, model: str | None = None, resume: bool = False, params: str = DEFAULT_PARAMS) -> None:
    """Train `model` (default: the first of train.models) on fold `fold` and write its fold directory.

    With `train.nproc_per_node` > 1 and not already under torchrun, it relaunches itself under torchrun with
    that many processes (reading the same `params` file) and waits for them.
    """
    model = model or cfg.train.models[0]
    cfg.model(model)  # an unknown entry fails before anything loads
    if cfg.train.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        relaunch_under_torchrun(cfg, params, model, fold, resume)
        return
    summary = train_fold_into(cfg, model, fold, resume, cfg.fold_dir(model, fold))
    if summary is not None:  # rank 0
        epochs, beta = summary["epochs_run"], cfg.thresholds.beta
        print(f"train {model} fold {fold}: best epoch {summary['best_epoch']}/{epochs}, val F{beta:g} "
              f"with TTA {summary[f'val_f{beta:g}_tta']:.4f} -> {cfg.fold_dir(model, fold)}")  # fmt: skip
