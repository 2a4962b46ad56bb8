"""The `mlic` command: `mlic <stage>` runs one pipeline stage (dvc.yaml calls exactly these), and a few tools.

Stages: sample, prepare, hog, folds, cam-model --fold N, proposals, teacher --model M --fold N,
train --model M --fold N [--resume], ensemble, thresholds, submit, evaluate.
Multi-GPU: train.nproc_per_node: N in params.yaml, or torchrun --nproc_per_node N -m mlic.cli train --model M
--fold K.
Tools: check, validate-submission, score, download, kaggle-submit, predict, export-onnx, decode, pipeline, tune.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mlic.config import DEFAULT_PARAMS, Config, load_config
from mlic.errors import ConfigError, MlicError


def _train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fold", type=int, required=True, help="validation fold to train (0..folds.n_splits-1)")
    parser.add_argument("--model", help="entry of the `models` section to train (default: the first of train.models)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last epoch checkpoint when it comes from the same config and code",
    )


def _fold_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fold", type=int, required=True, help="validation fold (0..folds.n_splits-1)")


def _teacher_args(parser: argparse.ArgumentParser) -> None:
    _fold_args(parser)
    parser.add_argument("--model", help="entry of the `models` section whose teacher to train (default: the first "
                        "of train.models)")  # fmt: skip


# Stage name -> (module under mlic.stages, help, extra arguments). Modules import lazily, so that stages and
# tools without a model never pay for importing torch.
STAGES: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "sample": ("sample", "generate the embedded synthetic competition (Planet-like, or iMet-layout)", None),
    "prepare": ("prepare", "read and check the data, build the label matrix and image cache", None),
    "hog": ("hog", "HOG features of every cached image view", None),
    "folds": ("folds", "multilabel-stratified k-fold split", None),
    "cam-model": ("cam_model", "train the model of the cam proposals on one fold (proposals.method: cam)", _fold_args),
    "proposals": ("proposals", "region proposals of every cached image view (windows, selective_search, cam)", None),
    "teacher": ("teacher", "train a distilled model's teacher on one fold", _teacher_args),
    "train": ("train", "train one model on one fold and write OOF and test predictions", _train_args),
    "ensemble": ("ensemble", "blend the models' out-of-fold and test predictions", None),
    "thresholds": ("thresholds", "fit per-class thresholds on out-of-fold predictions", None),
    "submit": ("submit", "write the Kaggle submission CSV", None),
    "evaluate": ("evaluate", "out-of-fold metrics, baseline and plots", None),
}


def _tools() -> dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]]:
    """The tools' table (`mlic.tools.TOOLS`), imported by name: no stage depends on the tools' code or help."""
    return importlib.import_module("mlic.tools").TOOLS


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per stage and tool."""
    parser = argparse.ArgumentParser(prog="mlic", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, add_args) in {**STAGES, **_tools()}.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if add_args:
            add_args(command)
    return parser


def check_dvc_stage(cfg: Config, command: str) -> None:
    """Under `dvc repro`/`dvc exp run`: fail unless dvc.yaml's running stage is what the params need for it.

    `mlic.pipeline` is imported by name: the check can stop a stage, never change what it writes, so it is not one
    of the stage's code deps (editing the generator reruns nothing).
    """
    pipeline = importlib.import_module("mlic.pipeline")
    running = pipeline.running_stage()
    if running is not None:
        pipeline.check_running_stage(cfg, command, *running)


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; returns the exit status."""
    extra = {k: v for k, v in vars(args).items() if k not in ("params", "command")}
    # params first: a typo fails in a second, before the stage's imports (torch: 20-50 s) and before any work
    if args.command in STAGES:
        cfg = load_config(args.params)
        check_dvc_stage(cfg, args.command)
        module = importlib.import_module(f"mlic.stages.{STAGES[args.command][0]}")
        if "params" in inspect.signature(module.main).parameters:  # a stage that relaunches itself (train)
            extra["params"] = args.params
        module.main(cfg, **extra)
        return 0
    cfg = load_config(args.params) if Path(args.params).is_file() else Config()
    tool = getattr(importlib.import_module("mlic.tools"), _tools()[args.command][0])
    if "params" in inspect.signature(tool).parameters:  # a tool that works in the params file's project (tune)
        extra["params"] = args.params
    return tool(cfg, **extra)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mlic` console script; user errors print one message and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except MlicError as exc:
        if isinstance(exc, ConfigError) and str(exc.path) == DEFAULT_PARAMS:  # raised by code that knows no file
            exc.path = args.params
        print(f"mlic {args.command}: error: {exc.format()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlic {args.command}: interrupted; no partial output was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
