"""The `mlic` command: `mlic <stage>` runs one pipeline stage (dvc.yaml calls exactly these), and a few tools.

Stages: sample, code --model M, prepare, hog, folds, cam-model --fold N, proposals, teacher --model M --fold N,
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


def _code_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="entry of the `models` section (default: the first of train.models)")


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
    "code": ("code", "check a models entry and record its architecture's source files", _code_args),
    "prepare": ("prepare", "read and check the data, build the label matrix and image cache", None),
    "hog": ("hog", "HOG features of every cached image view", None),
    "folds": ("folds", "multilabel-stratified k-fold split", None),
    "cam-model": ("cam_model", "train the model of the cam proposals on one fold (a marker unless cam)", _fold_args),
    "proposals": ("proposals", "region proposals of every cached image view (windows, selective_search, cam)", None),
    "teacher": ("teacher", "train a distilled model's teacher on one fold (a marker for other models)", _teacher_args),
    "train": ("train", "train one model on one fold and write OOF and test predictions", _train_args),
    "ensemble": ("ensemble", "blend the models' out-of-fold and test predictions", None),
    "thresholds": ("thresholds", "fit per-class thresholds on out-of-fold predictions", None),
    "submit": ("submit", "write the Kaggle submission CSV", None),
    "evaluate": ("evaluate", "out-of-fold metrics, baseline and plots", None),
}


def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="dataset folder (default: data.root)")
    p.add_argument("--competition", help="reader (default: data.competition)")
    p.add_argument("--quick", action="store_true", help="check image bytes only, without decoding every image")


def _validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="submission CSV to check")
    p.add_argument("--competition", help="format (default: data.competition)")
    p.add_argument("--root", help="folder holding the sample submission (default: data.root)")
    p.add_argument("--allow-empty", action="store_true", help="accept rows without labels")


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="submission CSV to score")
    p.add_argument("--solution", type=Path, required=True, help="CSV of the true labels, in the submission format")
    p.add_argument("--competition", help="format (default: data.competition)")


def _download_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("competition", help="planet or imet2019")
    p.add_argument("--dest", type=Path, help="target folder (default: data/raw/<competition>)")


def _kaggle_submit_args(p: argparse.ArgumentParser) -> None:
    _validate_args(p)  # the same checks as validate-submission, which run first
    p.add_argument("-m", "--message", required=True, help="submission description shown on Kaggle")
    p.add_argument("--slug", help="Kaggle competition (kaggle.com/c/<slug>; default: the reader's, none for folder)")


RUN_HELP = "project folder of a finished run, whose params.yaml is read (default: .)"


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files and/or folders of images")
    p.add_argument("--run", type=Path, default=Path("."), help=RUN_HELP)
    p.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default: %(default)s)")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument(
        "--skip-unreadable", action="store_true", help="leave unreadable images out, listed, instead of failing"
    )


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, default=Path("."), help=RUN_HELP)
    p.add_argument("--model", help="entry of train.models to export (default: the first)")
    p.add_argument("--fold", default="all", help="a trained fold id, or all to average the folds (default: all)")
    p.add_argument("--out", type=Path, help="ONNX file to write (default: <model>_fold<fold>.onnx)")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")


def _decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, default=Path("."), help=RUN_HELP)
    p.add_argument("--model", help="a cnn_rnn entry of train.models (default: the first)")
    p.add_argument("--beam", type=int, help="beam width (default: the entry's beam_size; 1 is greedy)")
    p.add_argument("--out-dir", type=Path, default=Path("submissions"), help="folder to write (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default: %(default)s)")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N or auto (default: cpu)")


def _pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", type=Path, default=Path("dvc.yaml"), help="pipeline file (default: %(default)s)")
    p.add_argument("--write", action="store_true", help="rewrite it instead of only reporting what differs")


def _tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=int, help="trials the study holds at the end, counting those it has (default: "
                   "tune.trials)")  # fmt: skip


# Tool name -> (function name in mlic.tools, help, arguments). A tool taking `params` gets the params file's path.
TOOLS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = {
    "check": ("check", "scan a dataset and list every problem", _check_args),
    "validate-submission": ("validate_submission", "check a submission against the sample submission", _validate_args),
    "score": ("score", "score a submission against a solution file, as Kaggle would", _score_args),
    "download": (
        "download",
        "download competition files with the kaggle package, or say where to put them",
        _download_args,
    ),
    "kaggle-submit": (
        "kaggle_submit",
        "validate a submission, then upload it to the Kaggle competition with the kaggle package",
        _kaggle_submit_args,
    ),
    "predict": ("predict", "predict tags of new images with a finished run's folds and thresholds", _predict_args),
    "export-onnx": ("export_onnx", "export a trained model (its folds, TTA and normalisation) to ONNX", _export_args),
    "decode": (
        "decode",
        "write the label sets a sequence decoder (cnn_rnn) decodes, END rule and fitted stop rule, with OOF F-beta",
        _decode_args,
    ),
    "pipeline": (
        "pipeline",
        "check (or --write) dvc.yaml against what the params need: its stages, their code deps, the curve plots",
        _pipeline_args,
    ),
    "tune": (
        "tune",
        "run (or resume) an Optuna study of tune.space, each trial a DVC experiment; apply the best to the workspace",
        _tune_args,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per stage and tool."""
    parser = argparse.ArgumentParser(prog="mlic", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, add_args) in {**STAGES, **TOOLS}.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if add_args:
            add_args(command)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; returns the exit status."""
    extra = {k: v for k, v in vars(args).items() if k not in ("params", "command")}
    # params first: a typo fails in a second, before the stage's imports (torch: 20-50 s) and before any work
    if args.command in STAGES:
        cfg = load_config(args.params)
        module = importlib.import_module(f"mlic.stages.{STAGES[args.command][0]}")
        if "params" in inspect.signature(module.main).parameters:  # a stage that relaunches itself (train)
            extra["params"] = args.params
        module.main(cfg, **extra)
        return 0
    cfg = load_config(args.params) if Path(args.params).is_file() else Config()
    tool = getattr(importlib.import_module("mlic.tools"), TOOLS[args.command][0])
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
