"""Leaderboard: every registered architecture trained at one equal budget on planet-32px, through the real stages.

`--budget` names what every row shares (`lb/budgets.py`): `default` (5 epochs at 64 px, resnet10t, every
architecture), `spatial` (the same with the backbone dilated to an 8 x 8 last map, for the heads that attend over
positions) and `gpu` (224 px, resnet50, 10 epochs, bf16, sized for one H100-class GPU). Each budget has its own
table and work folder.

Each architecture that `mlic.models.registry.discover_archs()` finds (or each of `--archs`) becomes one row: its
`models` entry from params.yaml (or its config's defaults) on the same backbone, not pretrained, trained for the same
epochs on fold 0, then `ensemble`, `thresholds` (auto: global against per_class_exact), `submit` and `evaluate`,
and the submission scored against solution.csv with `mlic score`. The stages are the `mlic` commands themselves
(`mlic.cli.main`), run in this process inside the work directory, so torch is imported once; their output goes to
a log per stage (`<work>/rows/<arch>/logs/`), and one progress line per stage (and per epoch) to stderr.

Region rows: `kd_wsd` trains its WSDDN teacher on the fold's training rows (stage `teacher`) before `train`;
`kd_wsd_plain` (`VARIANTS`) is the same student at the same budget without its teacher; `sca` (`ROW_PROPOSALS`)
reads `cam` proposals made from the baseline row's trained fold instead of the shared `windows`, so the baseline row
runs first (it does: rows run in registry order).

The `blend` row (`--no-blend` leaves it out) blends the rows of this run that scored: members chosen on the fold's
OOF rows by greedy forward selection (`mlic.predict.ensemble.select_models`), their trained folds linked, then
`ensemble` (method auto), `thresholds`, `submit`, `evaluate` and `mlic score` like any row (`lb/blend.py`). It is
ranked in the table with the rest; the `winner` is the best single row.

Shared by every row and reused while their params and code are unchanged: `prepare` (images cached at
`--image-size`, upsampled from 32 px), `hog`, `folds` and `proposals` (`<work>/upstream/<key>/`). Each row's result
is cached as `<work>/cache/<arch>-<key>.json`, the key hashing the row's resolved params, the source files of the
stages it runs and of its architecture (`mlic.deps`), the solution file, torch's version and the device kind: adding an
architecture runs only its row, and editing one architecture's module reruns only that row (`lb/cache.py` says why
this is a cache of its own rather than DVC experiments).

Prints the result as JSON to stdout, and writes a markdown table (`--out`) with the JSON beside it. The parts live in
`benchmarks/lb/`: `budgets` (what rows share), `params` (entries and params), `stages` (one stage in-process),
`cache` (keys and stored results), `runner` (the rows), `blend` (the blend row) and `table` (markdown).

The default budget (5 epochs at 64 px, fold 0 of 4: 12,000 training and 4,000 OOF rows, 4,000 test rows) was sized
on 2 idle CPU cores from `benchmarks/train.py`-style throughput at 64 px, resnet10t, batch 64 (training / eval
images per second): baseline 196 / 768, hourglass 186 / 701, csra 182 / 824, ml_decoder 124 / 470, srn about 95 /
310 (from its one-thread cost). Measured through this script (`--archs baseline hourglass --epochs 1`), one epoch
with its validation pass took 67 s for baseline (179 training images/s) and 73 s for hourglass (165/s), and their
whole train stages, with the dihedral TTA prediction of OOF and test (64,000 forward passes), 168 s and 177 s. All
seven rows come to about 530 s per epoch plus about 850 s of prediction and overhead: 5 epochs, about an hour.

Usage:
    .venv/bin/python benchmarks/leaderboard.py                       # every architecture, the default budget
    .venv/bin/python benchmarks/leaderboard.py --budget spatial      # the spatial heads on an 8 x 8 map
    python benchmarks/leaderboard.py --budget gpu                    # on one GPU
    .venv/bin/python benchmarks/leaderboard.py --archs baseline hog_linear --epochs 1 --limit 2000  # smoke run
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from lb.blend import BLEND, blend_row
from lb.budgets import BUDGETS, budget_train_keys
from lb.params import budget, select_archs
from lb.runner import data_summary, leaderboard_row, machine, now, run_upstream, upstream_params
from lb.stages import StageFailed, progress, working_dir
from lb.table import markdown, sort_rows

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "planet-32px"
RESULTS = REPO / "benchmarks" / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (`sys.argv` when `argv` is None) over the chosen budget, its paths resolved.

    A bad budget exits with usage.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=list(BUDGETS), default="default", help="what every row shares (lb/budgets.py)")
    p.add_argument("--archs", nargs="+", help="rows to run (default: the budget's, or every registered arch)")
    p.add_argument("--epochs", type=int, help="epochs of every row (default: the budget's)")
    p.add_argument("--backbone", help="timm backbone of every image arch (default: the budget's)")
    p.add_argument("--image-size", type=int, help="prepare.image_size (default: the budget's)")
    p.add_argument("--n-splits", type=int, help="folds.n_splits; fold 0 is trained (default: the budget's)")
    p.add_argument("--limit", type=int, help="use this many training rows (seeded sample; default: the budget's)")
    p.add_argument("--params", type=Path, default=REPO / "params.yaml", help="base params and models entries")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="a Planet-layout competition folder")
    p.add_argument("--solution", type=Path, help="true test labels (default: <data-root>/solution.csv)")
    p.add_argument("--work", type=Path, help="work folder and caches (default: benchmarks/results/cache[-<budget>])")
    p.add_argument("--out", type=Path, help="markdown table; .json beside it (default: the budget's)")
    p.add_argument("--no-blend", dest="blend", action="store_false", help="leave out the blend row (lb/blend.py)")
    args = p.parse_args(argv)
    chosen = BUDGETS[args.budget]
    for name in ("epochs", "backbone", "image_size", "n_splits", "limit", "archs"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(chosen, name))
    args.output_stride, args.train_keys = chosen.output_stride, budget_train_keys(chosen)
    if args.epochs < 1 or (args.limit is not None and args.limit < 2 * args.n_splits):
        p.error("--epochs must be >= 1 and --limit at least 2 rows per fold")
    work = RESULTS / ("cache" if args.budget == "default" else f"cache-{args.budget}")
    args.work, args.out = (args.work or work).resolve(), (args.out or RESULTS / chosen.table).resolve()
    args.data_root = args.data_root.resolve()
    args.solution = (args.solution or args.data_root / "solution.csv").resolve()
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the leaderboard; prints its JSON, writes the markdown table and the JSON beside it, returns the JSON."""
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/leaderboard.py", *(sys.argv[1:] if argv is None else argv)])
    base = yaml.safe_load(args.params.resolve().read_text())
    archs = select_archs(args.archs)
    progress(f"{len(archs)} rows: {', '.join(archs)}; work folder {args.work}")
    args.work.mkdir(parents=True, exist_ok=True)
    with working_dir(args.work):
        upstream, shared = upstream_params(base, args)
        shared_run = run_upstream(upstream, shared, args)
        rows = [leaderboard_row(arch, base, shared, args) for arch in archs]
        blend = blend_row(rows, shared, args) if args.blend else None
        rows = sort_rows(rows + ([blend] if blend else []))
        data = data_summary(shared, args)
    singles = [r for r in rows if r["status"] == "ok" and r["arch"] != BLEND]
    result = {"command": command, "date": now(), "machine": machine(), "data": data, "budget": budget(shared, args),
              "upstream": shared_run | {"folder": str(args.work / upstream)}, "rows": rows,
              "winner": singles[0]["arch"] if singles else None}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(result))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    progress(f"table -> {args.out}, JSON -> {args.out.with_suffix('.json')}")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    from mlic.errors import MlicError

    try:
        outcome = main()
    except (MlicError, StageFailed) as error:
        print(f"leaderboard: error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(1 if any(r["status"] != "ok" for r in outcome["rows"]) else 0)
