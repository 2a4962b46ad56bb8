"""The one finished pipeline run of the tests: a temporary git + DVC project, tiny sample, baseline and hourglass.

Built once per session (the `finished_run` fixture, about a minute): the end-to-end tests of `dvc repro` read its
first repro's log, and every test that needs trained folds (notebooks, the report, `mlic predict`, `mlic export-onnx`,
the stages' checks of their inputs, DVC's view of code edits, `mlic tune`) reads it, or edits a copy (`copy_run`).
It also holds one DVC experiment, outside the workspace, so that the comparison notebook has `dvc exp show` rows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_RUN = {
    "sample": {"n_train": 120, "n_test": 30, "image_size": 32},
    "prepare": {"image_size": 32},
    "hog": {"image_size": 32},
    "folds": {"n_splits": 2},
    "models": {"baseline": {"extra_filters": 16}, "hourglass": {"feature_indices": [2, 3, 4]}},
    "train": {"models": ["baseline", "hourglass"], "folds": [0, 1], "epochs": 2, "batch_size": 32},
    "thresholds": {"grid_step": 0.05, "optuna_trials": 10},
}


def merge(base: dict, override: dict) -> dict:
    """`base` with `override`'s keys replaced, recursively."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) and key in base else value
    return merged


def tool_env() -> dict[str, str]:
    """The environment with this interpreter's bin folder (dvc, mlic) first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def run_tool(project: Path, *args: str) -> str:
    """Run a command in the project; fail with its output when it fails."""
    result = subprocess.run(list(args), cwd=project, env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def write_params(root: Path, params: dict) -> None:
    """Write a project's params.yaml and dvc.yaml (dvc.lock pruned), as `mlic pipeline --write` would, in process."""
    from mlic.config import load_config
    from mlic.pipeline import write_pipeline

    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_pipeline(load_config(root / "params.yaml"), root)


def edit_params(root: Path, override: dict) -> None:
    """Merge `override` into a project's params.yaml and regenerate its dvc.yaml."""
    write_params(root, merge(yaml.safe_load((root / "params.yaml").read_text()), override))


def copy_pipeline(root: Path, override: dict) -> Path:
    """The repo's src/ in `root`, with its params.yaml merged with `override`, and the dvc.yaml those params need."""
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    write_params(root, merge(yaml.safe_load((REPO / "params.yaml").read_text()), override))
    return root


def build_finished_run(root: Path) -> str:
    """Copy the pipeline into `root`, run it on the tiny sample with git + DVC, then one experiment.

    Returns:
        The log of the `dvc repro` (the stages it ran, in order).
    """
    copy_pipeline(root, TINY_RUN)
    run_tool(root, "git", "init", "-q")
    run_tool(root, "git", "config", "user.email", "ci@mlic.invalid")
    run_tool(root, "git", "config", "user.name", "mlic ci")
    run_tool(root, "dvc", "init", "-q")
    # the Optuna studies are resume aids, not outputs: git (and so `dvc exp run`) leaves them alone
    (root / ".gitignore").write_text("/data/processed/optuna.db\n/data/processed/tune.db\n/data/processed/tune-logs/\n")
    run_tool(root, "git", "add", "-A")
    run_tool(root, "git", "commit", "-q", "-m", "tiny run")
    log = run_tool(root, "dvc", "repro")
    run_tool(root, "git", "add", "-A")
    run_tool(root, "git", "commit", "-q", "-m", "tiny run outputs")
    # an experiment that reruns only thresholds, submit and evaluate (seconds), in a temporary copy: the workspace
    # stays the first repro's, which the end-to-end tests check
    run_tool(root, "dvc", "exp", "run", "--temp", "-q", "-n", "global-cut", "-S", "thresholds.method=global")
    return log


def copy_run(run: Path, dest: Path, *, outputs_only: bool = False) -> Path:
    """A private copy of a finished project (the session's `finished_run`), for a test that edits or breaks it.

    Args:
        run: The project to copy.
        dest: Where the copy goes (must not exist).
        outputs_only: Copy a plain run folder, as `mlic predict --run` and the stages read it: no git history, DVC
            cache or src/ (quicker). Otherwise everything, so that git, `dvc status` and `dvc repro` work in the copy
            as in the original (DVC's cache and run cache included).
    """
    ignore = shutil.ignore_patterns(".git", ".dvc", "src") if outputs_only else None
    return Path(shutil.copytree(run, dest, symlinks=True, ignore=ignore))
