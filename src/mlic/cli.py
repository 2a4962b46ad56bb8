"""The `mlic` command: `mlic <stage> [options]` runs one pipeline stage (dvc.yaml calls exactly these)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from mlic.config import DEFAULT_PARAMS, load_config
from mlic.errors import MlicError


def _fold_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fold", type=int, required=True, help="validation fold to train (0..folds.n_splits-1)")


# Stage name -> (module under mlic.stages, help text, extra arguments). Modules import lazily, so that stages
# without a model never pay for importing torch.
STAGES: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "sample": ("sample", "generate the embedded synthetic Planet-like competition", None),
    "prepare": ("prepare", "read and check the data, build the label matrix and image cache", None),
    "folds": ("folds", "multilabel-stratified k-fold split", None),
    "train": ("train", "train one fold and write OOF and test predictions", _fold_arg),
    "thresholds": ("thresholds", "fit per-class thresholds on out-of-fold predictions", None),
    "submit": ("submit", "write the Kaggle submission CSV", None),
    "evaluate": ("evaluate", "out-of-fold metrics, baseline and plots", None),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per stage."""
    parser = argparse.ArgumentParser(prog="mlic", description=__doc__)
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, add_args) in STAGES.items():
        stage = sub.add_parser(name, help=help_text, description=help_text)
        if add_args:
            add_args(stage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mlic` console script; user errors print one message and exit with status 2."""
    args = build_parser().parse_args(argv)
    extra = {k: v for k, v in vars(args).items() if k not in ("params", "command")}
    try:
        cfg = load_config(args.params)
        module = importlib.import_module(f"mlic.stages.{STAGES[args.command][0]}")
        module.main(cfg, **extra)
    except MlicError as exc:
        print(f"mlic {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlic {args.command}: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
