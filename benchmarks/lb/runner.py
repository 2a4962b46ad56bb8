"""The leaderboard's rows: the shared stages run once, then each row's stages, its scores, sizes and timings.

A row trains its architecture on fold 0, then runs `ensemble`, `thresholds` (auto: global against
per_class_exact), `submit` and `evaluate`, and scores the submission against solution.csv with `mlic score`
(`lb.stages` runs each). A distilled row (`kd_wsd`) first trains its WSDDN teacher on the fold's training rows
(stage `teacher`); `sca` makes its own `cam` proposals from the baseline row's trained fold. A row whose key
(`lb.cache`) matches a stored result is not run again.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from mlic.layout import read_json

from . import cache
from .params import (
    BLEND_STAGES,
    FOLD,
    ROW_PROPOSALS,
    UPSTREAM_STAGES,
    VARIANTS,
    arch_entry,
    decodes_sets,
    has_teacher,
    row_params,
    shared_params,
)
from .stages import device_kind, fit_span, progress, run_stage, score_output
from .table import plural


def limited_root(source: Path, dest: Path, limit: int, train_csv: str) -> None:
    """A competition folder holding `limit` training rows (a seeded sample, in file order) and links to the rest."""
    header, *rows = (source / train_csv).read_text().splitlines(keepends=True)
    keep = np.sort(np.random.default_rng(0).choice(len(rows), min(limit, len(rows)), replace=False))
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for item in source.iterdir():
        if item.name != train_csv:
            (dest / item.name).symlink_to(item)
    (dest / train_csv).write_text(header + "".join(rows[i] for i in keep))


def upstream_params(base: dict, args: argparse.Namespace) -> tuple[str, dict]:
    """The shared stages' folder (relative to the work folder; `cache.upstream_folder`) and the params every row
    starts from."""
    upstream = cache.upstream_folder(shared_params(base, args, "upstream", str(args.data_root)), args.limit)
    data_root = f"{upstream}/data" if args.limit else str(args.data_root)
    return upstream, shared_params(base, args, upstream, data_root)


def run_upstream(upstream: str, shared: dict, args: argparse.Namespace) -> dict:
    """Run prepare, hog, folds and proposals once into `upstream` (in the work folder), or reuse a finished run."""
    from mlic.config import config_from_dict
    from mlic.data.competitions import get_competition

    folder = Path(upstream)
    done = cache.upstream_done(folder)
    if done is not None:
        progress(f"shared stages reused from {args.work / upstream}")
        return done | {"reused": True}
    folder.mkdir(parents=True, exist_ok=True)
    if args.limit:
        train_csv = get_competition(config_from_dict(shared).data).train_csv
        limited_root(args.data_root, folder / "data", args.limit, train_csv)
    (folder / "params.yaml").write_text(yaml.safe_dump(shared, sort_keys=False))
    seconds = {s: run_stage(folder / "params.yaml", folder / "logs", s, s)[0] for s in UPSTREAM_STAGES}
    cache.mark_upstream_done(folder, seconds)
    return {"seconds": seconds, "reused": False}


def data_summary(shared: dict, args: argparse.Namespace) -> dict:
    """Training and test rows of the prepared data, and the rows of the trained fold."""
    stats = json.loads((Path(shared["prepare"]["out_dir"]) / "stats.json").read_text())
    folds = [line.rsplit(",", 1)[-1].strip() for line in Path(shared["folds"]["out_file"]).read_text().splitlines()[1:]]
    oof = folds.count(str(FOLD))
    return {"root": str(args.data_root), "limit": args.limit, "n_train": stats["n_train"], "n_test": stats["n_test"],
            "fold": FOLD, "n_splits": args.n_splits, "fold_train_rows": len(folds) - oof, "fold_oof_rows": oof,
            "solution": str(args.solution)}  # fmt: skip


def count_parameters(fold_dir: Path) -> tuple[int, int]:
    """Parameters of the fold's network, rebuilt from its checkpoint, and those outside its `backbone` submodule."""
    import torch

    from mlic.loop.fold_model import load_fold_model

    net = load_fold_model(fold_dir, torch.device("cpu")).net
    named = list(net.named_parameters())
    head = sum(p.numel() for n, p in named if "backbone" not in n.split("."))  # a student's too
    return sum(p.numel() for _, p in named), head


TRAINED = "trained.json"  # in the row's folder: the key of its trained fold, with the train stage's timings


def train_row(arch: str, params: dict, stage: Callable) -> dict:
    """The row's stages up to `train` (its own proposals, its teacher, the fold), or their record if still valid.

    Returns:
        The record: `key` (`cache.train_key`), the stages' `seconds`, the fit's `fit_seconds` and `images`, and
        whether it was `reused` (its seconds are then those of the run that trained it).
    """
    record_file, key = Path("rows") / arch / TRAINED, cache.train_key(params, arch)
    if record_file.is_file() and (record := json.loads(record_file.read_text()))["key"] == key:
        progress(f"{arch}: trained fold reused ({record_file}: same params and code up to train)")
        return record | {"reused": True}
    record_file.unlink(missing_ok=True)  # a run killed below leaves no record of a fold it half rewrote
    seconds = {}
    if arch in ROW_PROPOSALS:
        seconds["proposals"] = stage("proposals", "proposals")[0]
    if has_teacher(arch, params):  # a distilled student's teacher, trained on the fold's training rows
        seconds["teacher"] = stage("teacher", "teacher", "--model", arch, "--fold", str(FOLD))[0]
    # --resume: a row killed mid-training continues from its last epoch (the checkpoint's fingerprint guards it)
    seconds["train"], train_log = stage("train", "train", "--model", arch, "--fold", str(FOLD), "--resume")
    fit_seconds, images = fit_span(train_log)
    record = {"key": key, "seconds": seconds, "fit_seconds": fit_seconds, "images": images}
    record_file.write_text(json.dumps(record, indent=2))
    return record | {"reused": False}


def run_row(arch: str, params: dict, args: argparse.Namespace) -> dict:
    """Train the row's architecture on the fold, then ensemble, thresholds, submit, evaluate and score it."""
    folder = Path("rows") / arch
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage = functools.partial(run_stage, folder / "params.yaml", folder / "logs", prefix=f"{arch}: ")
    start = time.perf_counter()
    trained = train_row(arch, params, stage)
    seconds = dict(trained["seconds"])
    for name in BLEND_STAGES:
        seconds[name] = stage(name, name)[0]
    stage("score", "score", params["submit"]["out_file"], "--solution", str(args.solution))
    row = row_metrics(arch, params, score_output(folder / "logs" / "score.log"))
    if decodes_sets(arch, params):
        row["decoded"] = decoded_sets(arch, folder, stage, args)
    fit_seconds, images = trained["fit_seconds"], trained["images"]
    row |= {"train_seconds": fit_seconds, "train_stage_seconds": seconds["train"], "stage_seconds": seconds,
            "row_seconds": round(time.perf_counter() - start + (sum(trained["seconds"].values()) if trained["reused"]
                                                                else 0.0), 2), "train_reused": trained["reused"],
            "train_images_per_s": round(images / fit_seconds, 1) if fit_seconds and images else None}  # fmt: skip
    return row


def decoded_sets(arch: str, folder: Path, stage: Callable, args: argparse.Namespace) -> dict:
    """The decoder's own label sets (END rule, fitted stop rule; `mlic.predict.decoding`), each scored with
    `mlic score`: OOF and test F2, set beside the row's scores + thresholds in the decoded-sets table."""
    from mlic.config import load_config
    from mlic.loop.runtime import resolve_device
    from mlic.predict.decoding import decode_run, write_decoded
    from mlic.run import Run

    cfg = load_config(folder / "params.yaml")
    run = Run(Path("."), cfg)
    start = time.perf_counter()
    summary = write_decoded(run, decode_run(run, arch, resolve_device(cfg.train), 256, None), folder, arch)
    summary["decode_seconds"] = round(time.perf_counter() - start, 2)
    key = f"f{cfg.thresholds.beta:g}_samples"
    for rule in ("end", "stop_rule"):
        stage(f"score_{rule}", "score", summary[rule]["submission"], "--solution", str(args.solution))
        summary[rule]["test_f2"] = score_output(folder / "logs" / f"score_{rule}.log")[key]
    progress(f"{arch}: decoded sets, test F2 END rule {summary['end']['test_f2']:.4f}, stop rule "
             f"{summary['stop_rule']['test_f2']:.4f} (tau {summary['stop_rule']['tau']:g})")  # fmt: skip
    return summary


def row_metrics(arch: str, params: dict, score: dict) -> dict:
    """The row's scores from the stages' outputs: test F2, OOF F2 (nested and in-sample), mAP, CF1, OF1, sizes."""
    key = f"f{params['thresholds']['beta']:g}_samples"
    oof = read_json(Path(params["evaluate"]["out_dir"]) / "metrics.json")["oof"]
    chosen = read_json(Path(params["thresholds"]["out_file"]))
    fold_dir = Path(params["train"]["out_dir"]) / arch / f"fold_{FOLD}"
    fold = read_json(fold_dir / "metrics.json")
    total, head = count_parameters(fold_dir)
    shrink = f", shrink {chosen['shrink']:g}" if chosen.get("shrink") else ""
    return {"arch": arch, "status": "ok", "cached": False, "test_f2": score[key],
            "oof_f2_nested": chosen["nested_fbeta"], "oof_f2": oof[key], "oof_map": oof["map"],
            "oof_cf1": oof["cf1"], "oof_of1": oof["of1"], "threshold_method": chosen["method"] + shrink,
            "parameters": total, "head_parameters": head, "epochs_run": fold["epochs_run"],
            "best_epoch": fold["best_epoch"], "test_score": score}  # fmt: skip


def leaderboard_row(arch: str, base: dict, shared: dict, args: argparse.Namespace) -> dict:
    """One row: from the cache when its key matches a stored result, else run and stored; a failure is a row too."""
    try:
        of, overrides = VARIANTS.get(arch, (arch, {}))
        entry = arch_entry(of, base.get("models") or {}, args.backbone, args.epochs, args.output_stride,
                           args.image_size) | overrides  # fmt: skip
        params = row_params(shared, arch, entry)
        key = cache.row_key(params, arch, args.solution)
        stored = cache.load_row(arch, key)
        if stored is not None:
            progress(f"{arch}: cached result {args.work / cache.row_file(arch, key)} (same params and code)")
            return stored | {"cached": True}
        progress(f"{arch}: running ({plural(args.epochs, 'epoch')}, entry {json.dumps(entry)})")
        row = run_row(arch, params, args) | {"entry": entry, "key": key, "ran_at": now(), "machine": machine()}
    except Exception as exc:  # noqa: BLE001 - a broken arch (one being written, say) fails its row, not the others
        progress(f"{arch}: FAILED: {exc}")
        return {"arch": arch, "status": "failed", "cached": False, "error": f"{type(exc).__name__}: {exc}"}
    cache.store_row(arch, key, row)
    progress(f"{arch}: test F2 {row['test_f2']:.4f}, OOF F2 nested {row['oof_f2_nested']}, {row['row_seconds']} s")
    return row


def now() -> str:
    """Now, in UTC to the minute, as the table and each row record it."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine() -> dict:
    """Where the rows ran: CPU count, torch's version and threads, the training device."""
    import torch

    return {"cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": device_kind(), "processor": platform.processor() or platform.machine()}  # fmt: skip
