"""Leaderboard: every registered architecture trained at one equal budget on planet-32px, through the real stages.

Each architecture that `mlic.models.registry.discover_archs()` finds (or each of `--archs`) becomes one row: its
`models` entry from params.yaml (or its config's defaults) on the same backbone, not pretrained, trained for the same
epochs on fold 0, then `ensemble`, `thresholds` (auto: global against per_class_exact), `submit` and `evaluate`,
and the submission scored against solution.csv with `mlic score`. The stages are the `mlic` commands themselves
(`mlic.cli.main`), run in this process inside the work directory, so torch is imported once; their output goes to
a log per stage (`<work>/rows/<arch>/logs/`), and one progress line per stage (and per epoch) to stderr.

Region rows: every row runs `code` and `teacher` before `train` (a marker for all but `kd_wsd`, whose WSDDN teacher
it trains on the fold's training rows); `kd_wsd_plain` (`VARIANTS`) is the same student at the same budget without
its teacher; `sca` (`ROW_PROPOSALS`) reads `cam` proposals made from the baseline row's trained fold instead of the
shared `windows`, so the baseline row runs first (it does: rows run in registry order).

Shared by every row and reused while their params and code are unchanged: `prepare` (images cached at
`--image-size`, upsampled from 32 px), `hog`, `folds` and `proposals` (`<work>/upstream/<key>/`). Each row's result
is cached as `<work>/cache/<arch>-<key>.json`, the key hashing the row's resolved params, the source files of the
stages it runs and of its architecture (`mlic.deps`), the solution file, torch's version and the device kind: adding an
architecture runs only its row, and editing one architecture's module reruns only that row.

Prints the result as JSON to stdout, and writes a markdown table (`--out`) with the JSON beside it.

The default budget (5 epochs at 64 px, fold 0 of 4: 12,000 training and 4,000 OOF rows, 4,000 test rows) was sized
on 2 idle CPU cores from `benchmarks/train.py`-style throughput at 64 px, resnet10t, batch 64 (training / eval
images per second): baseline 196 / 768, hourglass 186 / 701, csra 182 / 824, ml_decoder 124 / 470, srn about 95 /
310 (from its one-thread cost). Measured through this script (`--archs baseline hourglass --epochs 1`), one epoch
with its validation pass took 67 s for baseline (179 training images/s) and 73 s for hourglass (165/s), and their
whole train stages, with the dihedral TTA prediction of OOF and test (64,000 forward passes), 168 s and 177 s. All
seven rows come to about 530 s per epoch plus about 850 s of prediction and overhead: 5 epochs, about an hour.

Usage:
    .venv/bin/python benchmarks/leaderboard.py                       # every architecture, the default budget
    .venv/bin/python benchmarks/leaderboard.py --archs baseline hog_linear --epochs 1 --limit 2000  # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import functools
import hashlib
import io
import json
import math
import os
import platform
import re
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "planet-32px"
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_EPOCHS = 5  # sized in the module doc: all seven rows in about an hour on 2 CPU cores
DEFAULT_IMAGE_SIZE = 64  # upsampled from 32 px, so the backbone's last map is 2 x 2 and the earlier ones larger
FOLD = 0
UPSTREAM_STAGES = ("prepare", "hog", "folds", "proposals")
# each row's stages, after the shared ones; `teacher` trains a distilled row's teacher (a marker for the others),
# named in the row's `code` record
ROW_STAGES = ("code", "teacher", "train", "ensemble", "thresholds", "submit", "evaluate")
# Rows beside one per arch: name -> (arch, keys over its entry). The distilled student's control: the same student
# at the same budget without its teacher.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"kd_wsd_plain": ("kd_wsd", {"distill": False})}
# Rows with proposals of their own (the shared ones are `windows`): the two-branch network's pseudo-objects are the
# `cam` boxes of the baseline row's trained fold (Planet has no boxes), so that row must run (or be cached) first.
CAM_RUN = "rows/baseline/train/baseline"
ROW_PROPOSALS: dict[str, dict[str, Any]] = {"sca": {"method": "cam", "cam": {"model": "baseline", "run_dir": CAM_RUN}}}
COMPARE_METHODS = ["global", "per_class_exact"]  # auto's candidates; optuna's search is left out for speed
PHASE_KEY = "phase_epochs"  # a list-valued entry key whose lengths must add up to train.epochs
COLUMNS = ("arch", "status", "cached", "test_f2", "oof_f2_nested", "oof_f2", "oof_map", "oof_cf1", "oof_of1",
           "threshold_method", "parameters", "head_parameters", "epochs_run", "train_seconds", "train_images_per_s",
           "train_stage_seconds", "row_seconds", "entry", "key")  # fmt: skip


class StageFailed(Exception):
    """A stage of a row exited with an error; the message ends with its log's last lines."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", help="architectures to run (default: every registered one)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="epochs of every row (default: %(default)s)")
    p.add_argument("--backbone", default="resnet10t", help="timm backbone of every image arch (default: %(default)s)")
    p.add_argument(
        "--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="prepare.image_size (default: %(default)s)"
    )
    p.add_argument("--n-splits", type=int, default=4, help="folds.n_splits; fold 0 is trained (default: %(default)s)")
    p.add_argument("--limit", type=int, help="use this many training rows (seeded sample), for a quick smoke run")
    p.add_argument("--params", type=Path, default=REPO / "params.yaml", help="base params and models entries")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA, help="a Planet-layout competition folder")
    p.add_argument("--solution", type=Path, help="true test labels (default: <data-root>/solution.csv)")
    p.add_argument("--work", type=Path, default=RESULTS / "cache", help="work folder and caches (default: %(default)s)")
    p.add_argument("--out", type=Path, default=RESULTS / "leaderboard.md", help="markdown table; .json beside it")
    args = p.parse_args(argv)
    if args.epochs < 1 or (args.limit is not None and args.limit < 2 * args.n_splits):
        p.error("--epochs must be >= 1 and --limit at least 2 rows per fold")
    args.data_root, args.work, args.out = args.data_root.resolve(), args.work.resolve(), args.out.resolve()
    args.solution = (args.solution or args.data_root / "solution.csv").resolve()
    return args


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries only the final JSON)."""
    print(f"leaderboard: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Models entries and params


def rescale_phases(lengths: Sequence[int], total: int) -> list[int]:
    """Phase lengths scaled to add up to `total`, by largest remainder; each >= 1 when `total` allows.

    Args:
        lengths: The entry's phase lengths (their proportions are kept).
        total: The budget's epochs.

    Returns:
        Integers adding up to `total`.
    """
    weights = [max(0.0, float(x)) for x in lengths]
    if sum(weights) == 0:
        weights = [1.0] * len(weights)
    quotas = [w * total / sum(weights) for w in weights]
    out = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(out)), key=lambda i: (-(quotas[i] - out[i]), i))
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    if total >= len(out):  # a phase of 0 epochs is refused by the engine: take one from the longest phase
        for i in range(len(out)):
            while out[i] < 1:
                longest = max(range(len(out)), key=lambda k: (out[k], -k))
                out[longest] -= 1
                out[i] += 1
    return out


def field_default(field: dataclasses.Field) -> Any:
    """A dataclass field's default value (None when it has none)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def arch_entry(arch: str, models: dict[str, dict], backbone: str, epochs: int) -> dict[str, Any]:
    """The row's models entry: params.yaml's entry of that arch (or its defaults) on the budget's backbone.

    The entry keyed by the arch's name is preferred, then the first entry with that arch. Where the arch's config has
    them, `backbone` is the budget's, `pretrained` false and `pretrained_file` null; a list-valued `phase_epochs`
    (the entry's, else the config's default) is rescaled to the budget's epochs.
    """
    from mlic.models.registry import get_arch

    same = [key for key, e in models.items() if isinstance(e, dict) and e.get("arch") == arch]
    key = arch if arch in same else (same[0] if same else None)
    entry = copy.deepcopy(models[key]) if key else {"arch": arch}
    fields = {f.name: f for f in dataclasses.fields(get_arch(arch).config)}
    overrides = {"backbone": backbone, "pretrained": False, "pretrained_file": None}
    entry.update({k: v for k, v in overrides.items() if k in fields})
    for nested in entry.values():  # a distilled student's student and teacher get the budget's backbone too
        if isinstance(nested, dict) and "arch" in nested:
            nested_fields = {f.name for f in dataclasses.fields(get_arch(nested["arch"]).config)}
            nested.update({k: v for k, v in overrides.items() if k in nested_fields})
    phases = entry.get(PHASE_KEY, field_default(fields[PHASE_KEY]) if PHASE_KEY in fields else None)
    if isinstance(phases, (list, tuple)) and phases:
        entry[PHASE_KEY] = rescale_phases(phases, epochs)
    return entry


def shared_params(base: dict, args: argparse.Namespace, upstream: str, data_root: str) -> dict:
    """The params every row shares: data, the image cache, HOG, folds, the budget and the threshold methods.

    `upstream` is the folder of the shared stage outputs, relative to the work folder (the stages run there).
    """
    params = copy.deepcopy(base)
    params.pop("tune", None)  # `mlic tune`'s space may name entries of `models` that a row's params leave out
    params["data"] |= {"competition": "planet", "root": data_root}
    params["prepare"] |= {"image_size": args.image_size, "out_dir": f"{upstream}/prepare"}
    params["hog"]["out_dir"] = f"{upstream}/hog"
    params["proposals"]["out_dir"] = f"{upstream}/proposals"
    params["folds"] |= {"n_splits": args.n_splits, "out_file": f"{upstream}/folds.csv"}
    # train.warmup_epochs must stay below the epochs: a short (smoke) budget warms up for half of it at most
    warmup = min(float(params["train"].get("warmup_epochs", 1.0)), args.epochs / 2)
    params["train"] |= {"epochs": args.epochs, "warmup_epochs": warmup, "folds": [FOLD], "nproc_per_node": 1}
    params["thresholds"] |= {"method": "auto", "compare_methods": COMPARE_METHODS}
    return params


def row_params(shared: dict, arch: str, entry: dict) -> dict:
    """One row's params: its entry alone (keyed by the arch's name) and every output under `rows/<arch>/`."""
    params, out = copy.deepcopy(shared), f"rows/{arch}"
    params["models"] = {arch: entry}
    params["train"] |= {"models": [arch], "out_dir": f"{out}/train", "checkpoint_dir": f"{out}/checkpoints",
                        "code_dir": f"{out}/code", "teacher_dir": f"{out}/teachers"}  # fmt: skip
    if arch in ROW_PROPOSALS:
        own = ROW_PROPOSALS[arch]
        params["proposals"] |= {**own, "cam": params["proposals"]["cam"] | own.get("cam", {}),
                                "out_dir": f"{out}/proposals"}  # fmt: skip
    params["ensemble"]["out_dir"] = f"{out}/ensemble"
    params["thresholds"] |= {"out_file": f"{out}/thresholds.json", "metrics_file": f"{out}/reports/thresholds.json",
                             "optuna_storage": f"{out}/optuna.db"}  # fmt: skip
    params["submit"] |= {"out_file": f"{out}/submission.csv", "predictions_dir": f"{out}/submit"}
    params["evaluate"]["out_dir"] = f"{out}/reports"
    return params


# ---------------------------------------------------------------------------------------------------------------
# Cache keys


def digest(data: Any) -> str:
    """SHA-256 of a JSON-able value, keys sorted."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def code_hashes(stages: Sequence[str], arch: str | None = None, extra: Sequence[str] = ()) -> dict[str, str]:
    """SHA-256 of every `mlic` source file the stages import (with `mlic score` for a row), the arch's, and those of
    the `extra` modules with everything they import."""
    from mlic import deps

    root = deps.source_root(REPO)
    modules = {m for stage in stages for m in deps.stage_modules(stage, root)} | set(deps.closure(list(extra), root))
    if arch is not None:
        modules |= set(deps.closure(["mlic.tools"], root))
        if deps.module_file(deps.arch_module(arch), root) is not None:
            modules |= set(deps.arch_modules(arch, root))
        else:  # an arch registered outside mlic/models/<arch>.py: its code is unknown, so hash the whole package
            modules |= {".".join(p.relative_to(root).with_suffix("").parts) for p in (root / "mlic").rglob("*.py")}
    files = {m: deps.module_file(m, root) for m in sorted(modules)}
    return {m: hashlib.sha256(path.read_bytes()).hexdigest() for m, path in files.items() if path is not None}


def device_kind() -> str:
    """What `train.device: auto` trains on here: the GPU's name, or cpu."""
    import torch

    return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"


def row_key(params: dict, arch: str, solution: Path) -> str:
    """The row's cache key: its resolved params and entry, its code, its solution file, torch's version, the device."""
    import torch

    from mlic.config import config_from_dict
    from mlic.models.registry import resolve_model

    cfg = config_from_dict(params)  # a bad entry fails here, before anything runs
    model = resolve_model(cfg, arch)
    resolved = dataclasses.asdict(model.config)
    # a row that decodes sets also runs mlic.predict.decoding, scored beside the thresholds; a distilled row also
    # builds its student's and teacher's archs
    extra = [f"mlic.models.{name}" for name in model.arch_names()[1:]]
    extra += ["mlic.predict.decoding"] if decodes_sets(arch, params) else []
    code = code_hashes(ROW_STAGES, model.spec.name, extra)
    material = {"params": cfg.to_dict(), "entry": resolved, "code": code,
                "solution": hashlib.sha256(solution.read_bytes()).hexdigest()}  # fmt: skip
    if arch in ROW_PROPOSALS:  # its boxes come from another row's trained model: that model is part of the key
        cam_model = Path(cfg.proposals.cam.run_dir) / f"fold_{FOLD}" / "model.pt"
        material["cam_model"] = hashlib.sha256(cam_model.read_bytes()).hexdigest() if cam_model.is_file() else None
    return digest(material | {"torch": torch.__version__, "device": device_kind()})


# ---------------------------------------------------------------------------------------------------------------
# Running stages


class StageLog(io.TextIOBase):
    """A stage's stdout and stderr: written to its log file, each line timestamped, epoch lines echoed to stderr."""

    def __init__(self, path: Path, echo: TextIO, prefix: str):
        self.file, self.echo, self.prefix = path.open("w"), echo, prefix
        self.lines: list[tuple[float, str]] = []
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.file.write(text)
        *complete, self.pending = (self.pending + text).split("\n")
        for raw in complete:
            line = raw.rsplit("\r", 1)[-1].strip()  # after a progress bar's carriage returns
            self.lines.append((time.perf_counter(), line))
            if line.startswith("epoch "):
                print(f"leaderboard: {self.prefix}{line}", file=self.echo, flush=True)
        return len(text)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        super().close()  # flushes first
        self.file.close()

    def tail(self, n: int = 15) -> str:
        return "\n".join(line for _, line in self.lines[-n:] if line)


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """Run inside `path` (the stages read relative paths from their params), then return."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_stage(params: Path, logs: Path, name: str, *args: str, prefix: str = "") -> tuple[float, StageLog]:
    """Run `mlic --params <params> <args>` in this process; returns its wall seconds and its log.

    Raises:
        StageFailed: The command exited non-zero or raised; the message has its log's last lines.
    """
    from mlic.cli import main as mlic

    logs.mkdir(parents=True, exist_ok=True)
    log, echo = StageLog(logs / f"{name}.log", sys.stderr, prefix), sys.stderr
    start = time.perf_counter()
    with log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            code = mlic(["--params", str(params), *args])
        except Exception:  # noqa: BLE001 - a crashed stage fails its row, not the leaderboard
            traceback.print_exc()
            code = 1
        log.write("\n")
    seconds = round(time.perf_counter() - start, 2)
    if code != 0:
        raise StageFailed(f"mlic {' '.join(args)} failed (exit {code}, log {logs / name}.log):\n{log.tail()}")
    print(f"leaderboard: {prefix}{name} {seconds:.1f} s", file=echo, flush=True)
    return seconds, log


def fit_span(log: StageLog) -> tuple[float | None, int | None]:
    """The train stage's fit: seconds from its start line to its last epoch line, and the images it trained on.

    The span holds the epochs and their validation passes, not the data loading before nor the TTA prediction after.
    """
    start = next(((t, line) for t, line in log.lines if re.match(r"train \S+ fold \d+: \d+ train / ", line)), None)
    epochs = [t for t, line in log.lines if line.startswith("epoch ")]
    if start is None or not epochs:
        return None, None
    rows, views = re.search(r"(\d+) train / \d+ val rows x (\d+) view", start[1]).groups()
    return round(epochs[-1] - start[0], 2), int(rows) * int(views) * len(epochs)  # epochs run here (not resumed)


# ---------------------------------------------------------------------------------------------------------------
# Shared upstream: prepare, hog, folds


def limited_root(source: Path, dest: Path, limit: int, train_csv: str) -> None:
    """A competition folder holding `limit` training rows (a seeded sample, in file order) and links to the rest."""
    import shutil

    header, *rows = (source / train_csv).read_text().splitlines(keepends=True)
    keep = np.sort(np.random.default_rng(0).choice(len(rows), min(limit, len(rows)), replace=False))
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for item in source.iterdir():
        if item.name != train_csv:
            (dest / item.name).symlink_to(item)
    (dest / train_csv).write_text(header + "".join(rows[i] for i in keep))


def upstream_params(base: dict, args: argparse.Namespace) -> tuple[str, dict]:
    """The shared stages' folder (relative to the work folder) and the params every row starts from.

    The folder is named by a hash of what the shared stages read (data, prepare, hog and folds without their output
    paths, the --limit) and of their code, so a changed param or module makes a new one and an unchanged one reuses.
    """
    probe = shared_params(base, args, "upstream", str(args.data_root))
    sections = {s: {k: v for k, v in probe[s].items() if k not in ("out_dir", "out_file")} for s in UPSTREAM_STAGES}
    material = {
        "sections": sections | {"data": probe["data"]},
        "limit": args.limit,
        "code": code_hashes(UPSTREAM_STAGES),
    }
    upstream = f"upstream/{digest(material)[:16]}"
    data_root = f"{upstream}/data" if args.limit else str(args.data_root)
    return upstream, shared_params(base, args, upstream, data_root)


def run_upstream(upstream: str, shared: dict, args: argparse.Namespace) -> dict:
    """Run prepare, hog and folds once into `upstream` (in the work folder), or reuse a finished run of them."""
    from mlic.config import config_from_dict
    from mlic.data.competitions import get_competition

    folder, done = Path(upstream), Path(upstream) / "done.json"
    if done.is_file():
        progress(f"shared stages reused from {args.work / upstream}")
        return json.loads(done.read_text()) | {"reused": True}
    folder.mkdir(parents=True, exist_ok=True)
    if args.limit:
        train_csv = get_competition(config_from_dict(shared).data).train_csv
        limited_root(args.data_root, folder / "data", args.limit, train_csv)
    (folder / "params.yaml").write_text(yaml.safe_dump(shared, sort_keys=False))
    seconds = {s: run_stage(folder / "params.yaml", folder / "logs", s, s)[0] for s in UPSTREAM_STAGES}
    done.write_text(json.dumps({"seconds": seconds}, indent=2))
    return {"seconds": seconds, "reused": False}


def data_summary(shared: dict, args: argparse.Namespace) -> dict:
    """Training and test rows of the prepared data, and the rows of the trained fold."""
    stats = json.loads((Path(shared["prepare"]["out_dir"]) / "stats.json").read_text())
    folds = [line.rsplit(",", 1)[-1].strip() for line in Path(shared["folds"]["out_file"]).read_text().splitlines()[1:]]
    oof = folds.count(str(FOLD))
    return {"root": str(args.data_root), "limit": args.limit, "n_train": stats["n_train"], "n_test": stats["n_test"],
            "fold": FOLD, "n_splits": args.n_splits, "fold_train_rows": len(folds) - oof, "fold_oof_rows": oof,
            "solution": str(args.solution)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Rows


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def count_parameters(fold_dir: Path) -> tuple[int, int]:
    """Parameters of the fold's network, rebuilt from its checkpoint, and those outside its `backbone` submodule."""
    import torch

    from mlic.predict.inference import load_fold_model

    net = load_fold_model(fold_dir, torch.device("cpu")).net
    named = list(net.named_parameters())
    head = sum(p.numel() for n, p in named if "backbone" not in n.split("."))  # a student's too
    return sum(p.numel() for _, p in named), head


def score_output(log: Path) -> dict:
    """The JSON `mlic score` printed (the first object in its log)."""
    text = log.read_text()
    return json.JSONDecoder().raw_decode(text[text.index("{") :])[0]


def run_row(arch: str, params: dict, args: argparse.Namespace) -> dict:
    """Train the row's architecture on the fold, then ensemble, thresholds, submit, evaluate and score it."""
    folder = Path("rows") / arch
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage = functools.partial(run_stage, folder / "params.yaml", folder / "logs", prefix=f"{arch}: ")
    start, seconds = time.perf_counter(), {}
    # --resume: a row killed mid-training continues from its last epoch (the checkpoint's fingerprint guards it)
    if arch in ROW_PROPOSALS:
        seconds["proposals"] = stage("proposals", "proposals")[0]
    seconds["code"] = stage("code", "code", "--model", arch)[0]  # its record names the teacher, if any
    seconds["teacher"] = stage("teacher", "teacher", "--model", arch, "--fold", str(FOLD))[0]
    seconds["train"], train_log = stage("train", "train", "--model", arch, "--fold", str(FOLD), "--resume")
    for name in ROW_STAGES[3:]:
        seconds[name] = stage(name, name)[0]
    stage("score", "score", params["submit"]["out_file"], "--solution", str(args.solution))
    row = row_metrics(arch, params, score_output(folder / "logs" / "score.log"))
    if decodes_sets(arch, params):
        row["decoded"] = decoded_sets(arch, folder, stage, args)
    fit_seconds, images = fit_span(train_log)
    row |= {"train_seconds": fit_seconds, "train_stage_seconds": seconds["train"], "stage_seconds": seconds,
            "row_seconds": round(time.perf_counter() - start, 2),
            "train_images_per_s": round(images / fit_seconds, 1) if fit_seconds and images else None}  # fmt: skip
    return row


def decodes_sets(arch: str, params: dict) -> bool:
    """Whether the row's task decodes label sets itself (a sequence decoder: `decode_step`)."""
    from mlic.config import config_from_dict
    from mlic.models.registry import resolve_model

    return hasattr(resolve_model(config_from_dict(params), arch).task(), "decode_step")


def decoded_sets(arch: str, folder: Path, stage: Callable, args: argparse.Namespace) -> dict:
    """The decoder's own label sets (END rule, fitted stop rule; `mlic.predict.decoding`), each scored with
    `mlic score`: OOF and test F2, set beside the row's scores + thresholds in the decoded-sets table."""
    from mlic.config import load_config
    from mlic.predict.decoding import decode_run, write_decoded
    from mlic.run import Run
    from mlic.train.runtime import resolve_device

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
        entry = arch_entry(of, base.get("models") or {}, args.backbone, args.epochs) | overrides
        params = row_params(shared, arch, entry)
        key = row_key(params, arch, args.solution)
        stored = Path("cache") / f"{arch}-{key[:16]}.json"
        if stored.is_file():
            progress(f"{arch}: cached result {args.work / stored} (same params and code)")
            return read_json(stored) | {"cached": True}
        progress(f"{arch}: running ({plural(args.epochs, 'epoch')}, entry {json.dumps(entry)})")
        row = run_row(arch, params, args) | {"entry": entry, "key": key, "ran_at": now(), "machine": machine()}
    except Exception as exc:  # noqa: BLE001 - a broken arch (one being written, say) fails its row, not the others
        progress(f"{arch}: FAILED: {exc}")
        return {"arch": arch, "status": "failed", "cached": False, "error": f"{type(exc).__name__}: {exc}"}
    stored.parent.mkdir(exist_ok=True)
    stored.write_text(json.dumps(row, indent=2))
    progress(f"{arch}: test F2 {row['test_f2']:.4f}, OOF F2 nested {row['oof_f2_nested']}, {row['row_seconds']} s")
    return row


def select_archs(names: Sequence[str] | None) -> list[str]:
    """The rows to run: `names` (each checked), or every registered architecture and its `VARIANTS`."""
    from mlic.models.registry import discover_archs, get_arch

    if not names:
        archs = discover_archs()
        return archs + [name for name, (arch, _) in VARIANTS.items() if arch in archs]
    for name in names:
        get_arch(VARIANTS.get(name, (name, {}))[0])  # an unknown name fails here, listing the registered ones
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------------------
# Output


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def machine() -> dict:
    """Where the rows ran: CPU count, torch's version and threads, the training device."""
    import torch

    return {"cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "device": device_kind(), "processor": platform.processor() or platform.machine()}  # fmt: skip


def sort_rows(rows: list[dict]) -> list[dict]:
    """Scored rows by test F2, best first, then the failed ones; each with every column (None where it has none)."""
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: -r["test_f2"])
    return [{c: r.get(c) for c in COLUMNS} | r for r in ok + [r for r in rows if r["status"] != "ok"]]


def count(n: int | None) -> str:
    """A parameter count: millions with two decimals, else the number with thousands separators."""
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n:,}"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def cell(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_lines(rows: list[dict]) -> list[str]:
    """The markdown table: one line per row, best test F2 first, failed rows last."""
    lines = ["| # | arch | test F2 | OOF F2 (nested) | OOF F2 (in-sample) | OOF mAP | OOF CF1 | OOF OF1 | thresholds "
             "| params | head params | train s | train img/s |", "|" + "---|" * 13]  # fmt: skip
    for rank, r in enumerate(rows, 1):
        name = f"{r['arch']}" + (" (cached)" if r.get("cached") else "")
        if r["status"] != "ok":
            lines.append(f"| - | {name} | failed |" + " - |" * 10)
            continue
        scores = [cell(r.get(k)) for k in ("test_f2", "oof_f2_nested", "oof_f2", "oof_map", "oof_cf1", "oof_of1")]
        speed = [cell(r.get("train_seconds"), 1), cell(r.get("train_images_per_s"), 1)]
        sizes = [r["threshold_method"], count(r.get("parameters")), count(r.get("head_parameters"))]
        lines.append(f"| {rank} | **{name}** |" if rank == 1 else f"| {rank} | {name} |")
        lines[-1] += " " + " | ".join(scores + sizes + speed) + " |"
    return lines


def verdict_lines(rows: list[dict]) -> list[str]:
    """Which row wins, and every other row listed plainly as behind it (or failed)."""
    ok, failed = [r for r in rows if r["status"] == "ok"], [r for r in rows if r["status"] != "ok"]
    lines = []
    if ok:
        win = ok[0]
        lead = f", {win['test_f2'] - ok[1]['test_f2']:.4f} ahead of {ok[1]['arch']}" if len(ok) > 1 else ""
        lines.append(f"**Winner: {win['arch']}**, test F2 {win['test_f2']:.4f}{lead}.")
        behind = [f"{r['arch']} ({r['test_f2']:.4f}, {r['test_f2'] - win['test_f2']:+.4f})" for r in ok[1:]]
        if behind:
            lines.append(f"**Losers**, best first: {', '.join(behind)}.")
    for r in failed:
        lines.append(f"**Failed** (no score): {r['arch']}: {r['error'].splitlines()[0]}")
    return lines


NOTES = (
    "Test F2: `mlic score` of the row's submission against `solution.csv` (sample-averaged F2, as Kaggle scores it). "
    "OOF F2 (nested): the thresholds method that auto chose, fitted on all but one of the `thresholds.nested_splits` "
    "parts of the fold's OOF rows and scored on the part left out, round-robin. OOF F2 (in-sample): the same method "
    "fitted and scored on all of them, as are mAP, CF1 (per-class macro F1) and OF1 (overall micro F1), all from "
    "`mlic evaluate`. Params: the network's; head params: those outside its `backbone` submodule. Train s: the fit "
    "(the epochs with their validation passes, without the TTA prediction after them); train img/s: training images "
    "per second of it. A row marked (cached) reused the stored result of the same params and code; its timings are "
    "from its own run."
)


def decoded_lines(rows: list[dict]) -> list[str]:
    """For the rows that decode label sets: their sets (END rule, stop rule) against their scores + thresholds."""
    decoding = [r for r in rows if r.get("decoded")]
    if not decoding:
        return []
    header = "| arch | route | test F2 | OOF F2 (in-sample) | test labels / row |"
    lines = ["", "## Decoded sets against scores + thresholds", "", header, "|---|---|---|---|---|"]
    for r in decoding:
        d = r["decoded"]
        lines.append(f"| {r['arch']} | scores + thresholds ({r['threshold_method']}) | {cell(r['test_f2'])} | "
                     f"{cell(r['oof_f2'])} | - |")  # fmt: skip
        for rule, name in (
            ("end", "decoded set, END rule"),
            ("stop_rule", f"decoded set, stop rule (tau {d['stop_rule']['tau']:g})"),
        ):
            f2 = next(v for k, v in d[rule].items() if k.startswith("oof_f"))
            lines.append(f"| {r['arch']} | {name} | {cell(d[rule]['test_f2'])} | {cell(f2)} | "
                         f"{d[rule]['labels_per_row_test']:.2f} |")  # fmt: skip
    lines += [
        "",
        "The END rule keeps the labels on the beam's best path before END. The stop rule (the iMet study's) "
        "cuts the path where its geometric-mean probability falls below tau and keeps a label whose step "
        "probability reaches its tau_c; tau and tau_c are fitted on the fold's OOF rows (so its OOF F2 is "
        "in-sample, as is the thresholds' one here). Sets are decoded from the plain view, without TTA.",
    ]
    return lines


def markdown(result: dict) -> str:
    """The leaderboard as markdown: a header (command, data, budget, machine, date), the table, the verdict."""
    d, b, m = result["data"], result["budget"], result["machine"]
    limit = " (a seeded sample of the training rows, --limit)" if d["limit"] else ""
    lines = [
        "# Leaderboard: every registered architecture at one budget",
        "",
        f"- Command: `{result['command']}`, {result['date']}",
        f"- Data: {Path(d['root']).name} (`{d['root']}`): {d['n_train']:,} labelled chips{limit}, fold {d['fold']} of "
        f"{d['n_splits']} ({d['fold_train_rows']:,} train / {d['fold_oof_rows']:,} OOF rows); {d['n_test']:,} test "
        "chips scored against `solution.csv`",
        f"- Budget, the same for every row: {plural(b['epochs'], 'epoch')}, images {b['image_size']} px "
        "(upsampled from 32 px), "
        f"backbone {b['backbone']} (not pretrained) for every image arch, batch {b['batch_size']}, lr {b['lr']}, "
        f"seed {b['seed']}, TTA {b['tta']}; HOG at {b['hog_image_size']} px; thresholds auto "
        f"({' vs '.join(COMPARE_METHODS)}); {len(result['rows'])} rows",
        f"- Machine: {m['cpu_count']} CPUs ({m['processor']}), torch {m['torch']}, device {m['device']}",
        "",
        *table_lines(result["rows"]),
        "",
        *verdict_lines(result["rows"]),
        "",
        NOTES,
        *decoded_lines(result["rows"]),
    ]
    return "\n".join(lines) + "\n"


def budget(shared: dict, args: argparse.Namespace) -> dict:
    t = shared["train"]
    return {"epochs": args.epochs, "image_size": args.image_size, "backbone": args.backbone, "fold": FOLD,
            "n_splits": args.n_splits, "batch_size": t["batch_size"], "lr": t["lr"], "seed": t["seed"],
            "warmup_epochs": t["warmup_epochs"],
            "tta": t["tta"], "hog_image_size": shared["hog"]["image_size"]}  # fmt: skip


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
        rows = sort_rows([leaderboard_row(arch, base, shared, args) for arch in archs])
        data = data_summary(shared, args)
    result = {"command": command, "date": now(), "machine": machine(), "data": data, "budget": budget(shared, args),
              "upstream": shared_run | {"folder": str(args.work / upstream)}, "rows": rows,
              "winner": next((r["arch"] for r in rows if r["status"] == "ok"), None)}  # fmt: skip
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
