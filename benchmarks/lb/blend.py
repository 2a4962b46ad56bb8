"""The leaderboard's `blend` row: the best blend of the rows that ran, chosen on their OOF, scored like every row.

The members are chosen on the trained fold's OOF rows only (`mlic.predict.ensemble.select_models`: greedy forward
selection by the nested F2 of their mean, a model added only if it gains more than `ensemble.auto_margin_se`
standard errors of the paired per-row difference). The chosen rows' trained folds are linked into
`rows/blend/train/` (nothing is retrained), and the row runs the same stages as every other row on them:
`ensemble` with `method: auto` (mean, geometric, global weights or per-class weights, by nested score), then
`thresholds`, `submit`, `evaluate`, and `mlic score` against solution.csv. The test rows play no part in the choice.

The row is cheap (no training) and is rebuilt on every run from the rows of that run, so it always blends the
current table.
"""

from __future__ import annotations

import argparse
import copy
import functools
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from .params import BLEND_STAGES, FOLD, row_params
from .stages import progress, run_stage, score_output

if TYPE_CHECKING:
    from mlic.predict.ensemble import ModelSelection

BLEND = "blend"


def member_dirs(rows: Sequence[dict], shared: dict) -> dict[str, Path]:
    """Scored row -> its trained fold (relative to the work folder), for the rows whose fold still has its
    predictions (a cached row's folder may have been removed)."""
    from mlic.layout import OOF_FILE

    dirs = {}
    for r in rows:
        if r["status"] == "ok" and r["arch"] != BLEND and r.get("entry"):
            params = row_params(shared, r["arch"], r["entry"])
            dirs[r["arch"]] = Path(params["train"]["out_dir"]) / r["arch"] / f"fold_{FOLD}"
    return {name: d for name, d in dirs.items() if (d / OOF_FILE).is_file()}


def blend_params(shared: dict, entries: dict[str, dict]) -> dict:
    """The blend row's params: the shared ones, the members' entries, `ensemble.method: auto`, outputs in rows/blend."""
    params, out = copy.deepcopy(shared), f"rows/{BLEND}"
    params["models"] = copy.deepcopy(entries)
    params["train"] |= {"models": list(entries), "out_dir": f"{out}/train", "checkpoint_dir": f"{out}/checkpoints",
                        "teacher_dir": f"{out}/teachers"}  # fmt: skip
    params["ensemble"] |= {"method": "auto", "out_dir": f"{out}/ensemble"}
    params["thresholds"] |= {"out_file": f"{out}/thresholds.json", "metrics_file": f"{out}/reports/thresholds.json",
                             "optuna_storage": f"{out}/optuna.db"}  # fmt: skip
    params["submit"] |= {"out_file": f"{out}/submission.csv", "predictions_dir": f"{out}/submit"}
    params["evaluate"]["out_dir"] = f"{out}/reports"
    return params


def choose_members(params: dict, dirs: dict[str, Path]) -> ModelSelection:
    """Forward selection of the members on the fold's OOF rows (`select_models`, by the nested F2 of their mean).

    Args:
        params: The blend row's params with every candidate listed (its thresholds and ensemble sections are used).
        dirs: Candidate name -> its trained fold folder.

    Returns:
        The `ModelSelection`.
    """
    from mlic.config import config_from_dict
    from mlic.layout import assemble_oof, load_fold_predictions, load_prepared
    from mlic.predict.ensemble import BlendScoring, blend_parts, select_models

    cfg = config_from_dict(params)
    prep = load_prepared(cfg.prepare.out_dir)
    folds = {name: load_fold_predictions(d, FOLD, name) for name, d in dirs.items()}
    rows = np.sort(next(iter(folds.values())).val_rows)
    oofs = {name: assemble_oof([f], len(prep.train_ids))[0][rows] for name, f in folds.items()}
    labels = prep.labels[rows]
    parts = blend_parts(np.full(len(rows), FOLD), labels, cfg.thresholds)
    return select_models(oofs, labels, parts, cfg.ensemble, BlendScoring.of(cfg.thresholds))


def link_members(folder: Path, dirs: dict[str, Path]) -> None:
    """Link each member's trained model folder into `<folder>/train/` (relative links: the work folder can move).

    `folder` and `dirs` are relative to the work folder.
    """
    train = folder / "train"
    train.mkdir(parents=True)
    for name, d in dirs.items():
        (train / name).symlink_to(Path(*[".."] * len(train.parts)) / d.parent)


def run_blend(rows: Sequence[dict], shared: dict, args: argparse.Namespace) -> dict:
    """Choose the members among the scored rows, blend them through the stages, score the submission.

    Runs in the work folder.

    Args:
        rows: The leaderboard's rows of this run (each scored one with its `entry`).
        shared: The params every row shares.
        args: The command line (the solution file).

    Returns:
        The blend row (the columns of every row, with `members`, `selection` and the `ensemble` choice).
    """
    from mlic.layout import read_json

    dirs = member_dirs(rows, shared)
    folder = Path("rows") / BLEND
    shutil.rmtree(folder, ignore_errors=True)  # links and outputs of a previous run's members
    folder.mkdir(parents=True)
    start = time.perf_counter()
    by_name = {r["arch"]: r for r in rows if r["arch"] in dirs}
    entries = {name: by_name[name]["entry"] for name in dirs}
    selection = choose_members(blend_params(shared, entries), dirs)
    progress(f"{BLEND}: members {', '.join(selection.models)} chosen on OOF ({selection.reason})")
    params = blend_params(shared, {name: entries[name] for name in selection.models})
    link_members(folder, {name: dirs[name] for name in selection.models})
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage = functools.partial(run_stage, folder / "params.yaml", folder / "logs", prefix=f"{BLEND}: ")
    seconds = {name: stage(name, name)[0] for name in BLEND_STAGES}
    stage("score", "score", params["submit"]["out_file"], "--solution", str(args.solution))
    score = score_output(folder / "logs" / "score.log")
    chosen, blend = read_json(Path(params["thresholds"]["out_file"])), read_json(folder / "ensemble" / "blend.json")
    oof = read_json(folder / "reports" / "metrics.json")["oof"]
    key = f"f{params['thresholds']['beta']:g}_samples"
    shrink = f", shrink {chosen['shrink']:g}" if chosen.get("shrink") else ""
    return {"arch": BLEND, "status": "ok", "cached": False, "test_f2": score[key],
            "oof_f2_nested": chosen["nested_fbeta"], "oof_f2": oof[key], "oof_map": oof["map"],
            "oof_cf1": oof["cf1"], "oof_of1": oof["of1"], "threshold_method": chosen["method"] + shrink,
            "parameters": sum(by_name[m].get("parameters") or 0 for m in selection.models),
            "head_parameters": sum(by_name[m].get("head_parameters") or 0 for m in selection.models),
            "members": selection.models, "candidates": list(dirs), "selection_scores": selection.scores,
            "selection": selection.reason, "ensemble": {k: blend[k] for k in ("method", "reason", "nested_fbeta")},
            "stage_seconds": seconds, "row_seconds": round(time.perf_counter() - start, 2),
            "test_score": score}  # fmt: skip


def blend_row(rows: Sequence[dict], shared: dict, args: argparse.Namespace) -> dict | None:
    """The blend row, a failed row saying why (it never stops the leaderboard), or None with fewer than 2 rows."""
    try:
        if len(member_dirs(rows, shared)) < 2:
            progress(f"{BLEND}: left out: fewer than 2 scored rows with their trained fold")
            return None
        row = run_blend(rows, shared, args)
    except Exception as exc:  # noqa: BLE001 - like any row, a failed blend is reported, not raised
        progress(f"{BLEND}: FAILED: {exc}")
        return {"arch": BLEND, "status": "failed", "cached": False, "error": f"{type(exc).__name__}: {exc}"}
    progress(f"{BLEND}: test F2 {row['test_f2']:.4f} ({row['ensemble']['method']} of {', '.join(row['members'])})")
    return row
