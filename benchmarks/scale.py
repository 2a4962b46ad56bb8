"""Every stage's cost against the dataset's size: wall time, peak memory and disk at each N, and the fitted exponents.

Two datasets, generated once into --cache (outside the repo) at the largest size asked for; smaller sizes read a
prefix of the training rows (`limited_root`: a train CSV of the first N rows beside links to the image folders):
- `imet`: iMet-shaped photos: --labels attributes (1,103: 398 culture::, 705 tag::, frequencies falling to a long
  tail), width and height drawn in --sides (300-800 px, as iMet's), saved as JPEG, read as a `folder` dataset; the
  test set is --test photos (7,443, as iMet's stage-1 test).
- `planet`: the synthetic Planet chips of `mlic sample` at --raw-side (256 px), in Kaggle's layout.

For each N a project folder holds its params.yaml (the repo's, with the keys below) and runs each stage as
`python -m mlic.cli <stage>` in a process of its own (its peak RSS from `os.wait4`, which counts the pages of the
memory-mapped files it touched, and its process tree's peak anonymous memory, sampled from /proc): `prepare`
(--image-size, --crop-views, --crop-store; also with the other store up to --other-store-max-n rows, for its disk),
`folds`, `hog`, `train` of `hog_linear` on every fold (one epoch: the full-size OOF the later stages read),
`ensemble`, `thresholds` (auto: global and per_class_exact, nested and out of sample), `submit`, `evaluate`; then
`thresholds-optuna` (method optuna alone, up to --optuna-max-n rows) and one epoch of the baseline on fold 0 of a
--subset-row subset (the loader's and the stage's overhead; rows outside the subset are in no fold).
Disk: the bytes of each stage's outputs. Exponents: the slope of log(value) on log(N) over the sizes, per stage
(about 1 for a linear stage; N log N fits about 1.1 over 10k..109k).

Prints JSON and writes it to benchmarks/results/scale_<dataset>.json (--out).

Usage:
    .venv/bin/python benchmarks/scale.py --dataset imet --sizes 10000 30000 109237
    .venv/bin/python benchmarks/scale.py --dataset planet --sizes 40000 100000 --crop-views 0
    .venv/bin/python benchmarks/scale.py --sizes 200 400 --test 50 --labels 40 --sides 48 96 --image-size 32 \\
        --subset 100 --cache /tmp/scale --in-process                                       # smoke run, a minute
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml

from mlic.config import config_from_dict
from mlic.data.synthetic.imet import ImetSpec, imet_image_id, make_imet_image

REPO = Path(__file__).resolve().parents[1]
IMET_CULTURES = 398  # of the real 1,103 attributes (labels.csv)
JPEG_QUALITY = 90


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["imet", "planet"], default="imet")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 109_237], help="training rows")
    p.add_argument("--test", type=int, default=7_443, help="test images")
    p.add_argument("--labels", type=int, default=1_103, help="imet: attributes")
    p.add_argument("--sides", type=int, nargs=2, default=[300, 800], help="imet: smallest and largest side")
    p.add_argument("--raw-side", type=int, default=256, help="planet: chip side")
    p.add_argument("--image-size", type=int, default=128, help="prepare.image_size")
    p.add_argument("--crop-views", type=int, help="prepare.crop_views (default: 5 for imet, 0 for planet)")
    p.add_argument("--crop-store", choices=["views", "source"], default="source", help="prepare.crop_store")
    p.add_argument(
        "--other-store-max-n",
        type=int,
        default=30_000,
        help="largest N at which prepare also runs with the other crop_store (with crops), for its disk",
    )
    p.add_argument("--subset", type=int, default=2_000, help="rows of the baseline's one-epoch train (0: none)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--optuna-max-n", type=int, default=10_000, help="largest N at which thresholds-optuna runs")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="generation and stage workers")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mlic-scale")
    p.add_argument("--in-process", action="store_true", help="stages in this process (no per-stage RSS): tests")
    p.add_argument("--out", type=Path, help="JSON file (default: benchmarks/results/scale_<dataset>.json)")
    p.add_argument("--merge", action="store_true", help="keep the other sizes of an earlier --out of the same setup")
    p.add_argument("--only", nargs="+", metavar="STAGE", help="remeasure these stages of an earlier run (with --merge)")
    p.add_argument("--table", action="store_true", help="print --out as the README's markdown table, measure nothing")
    p.add_argument("--generate-only", action="store_true", help="make the data for the largest size, measure nothing")
    args = p.parse_args(argv)
    if args.crop_views is None:
        args.crop_views = 5 if args.dataset == "imet" else 0
    args.out = args.out or REPO / "benchmarks" / "results" / f"scale_{args.dataset}.json"
    if args.only and not args.merge:
        p.error("--only remeasures stages of an earlier run: pass --merge too")
    return args


# --- data, generated once ---------------------------------------------------------------------------------------


def imet_labels(n_labels: int, seed: int = 0) -> ImetSpec:
    """`n_labels` attributes in iMet's proportion of cultures to tags, ranks shuffled, a long tail (1/500)."""
    cultures = max(1, round(n_labels * IMET_CULTURES / 1103))
    names = [f"culture::c{i:03d}" for i in range(cultures)] + [f"tag::t{i:03d}" for i in range(n_labels - cultures)]
    rng = np.random.default_rng(seed)
    ranks = [*rng.permutation(cultures), *rng.permutation(n_labels - cultures)]
    return ImetSpec(tuple(names), cultures, tuple(int(r) for r in ranks), 0.002)


def write_imet_photo(job: tuple[int, str], spec: ImetSpec, sides: tuple[int, int]) -> str:
    """Render photo number `job[0]` to the JPEG `job[1]`; its labels, space-separated."""
    index, path = job
    attributes, image = make_imet_image(spec, 0, index, *sides)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    Path(path).write_bytes(data.tobytes())
    return " ".join(spec.names[a] for a in attributes)


def generate_imet(root: Path, n_train: int, args: argparse.Namespace) -> None:
    """train/ and test/ JPEGs with train.csv (`id,tags`) and solution.csv, unless `root` holds them already."""
    if (root / "train.csv").is_file() and len(pd.read_csv(root / "train.csv")) >= n_train:
        return
    shutil.rmtree(root, ignore_errors=True)
    spec = imet_labels(args.labels)
    for split, first, count in (("train", 0, n_train), ("test", n_train, args.test)):
        (root / split).mkdir(parents=True)
        ids = [imet_image_id(0, first + i) for i in range(count)]
        jobs = [(first + i, str(root / split / f"{name}.jpg")) for i, name in enumerate(ids)]
        work = (jobs, [spec] * count, [tuple(args.sides)] * count)
        if args.workers > 1:
            with ProcessPoolExecutor(args.workers) as pool:
                tags = list(pool.map(write_imet_photo, *work, chunksize=64))
        else:  # in this process: also what a test that loads this file by path can do (its pool cannot import it)
            tags = list(map(write_imet_photo, *work))
        name = "train.csv" if split == "train" else "solution.csv"
        pd.DataFrame({"id": ids, "tags": tags}).to_csv(root / name, index=False)


def generate_planet(root: Path, n_train: int, args: argparse.Namespace) -> None:
    """Planet's Kaggle layout from `mlic sample` at --raw-side, unless `root` holds enough rows already."""
    if (root / "train_v2.csv").is_file() and len(pd.read_csv(root / "train_v2.csv")) >= n_train:
        return
    shutil.rmtree(root, ignore_errors=True)
    sample = {"competition": "planet", "out_dir": str(root), "n_train": n_train, "n_test": args.test,
              "image_size": args.raw_side, "num_workers": args.workers}  # fmt: skip
    params = root.parent / "sample-params.yaml"
    root.parent.mkdir(parents=True, exist_ok=True)
    params.write_text(yaml.safe_dump({"sample": sample}))
    subprocess.run([sys.executable, "-m", "mlic.cli", "--params", str(params), "sample"], check=True)


def limited_root(full: Path, n: int, dataset: str) -> Path:
    """A dataset folder of the first `n` training rows of `full`: its own train CSV, links to the rest."""
    root = full.parent / f"first-{n}"
    csv = "train.csv" if dataset == "imet" else "train_v2.csv"
    if not (root / csv).is_file():
        root.mkdir(parents=True, exist_ok=True)
        for entry in full.iterdir():
            if entry.name != csv and not (root / entry.name).exists():
                (root / entry.name).symlink_to(entry.resolve())
        pd.read_csv(full / csv).head(n).to_csv(root / csv, index=False)
    return root


# --- one project per size ---------------------------------------------------------------------------------------


def project_params(root: Path, n: int, args: argparse.Namespace) -> dict:
    """The repo's params.yaml with the benchmark's data, sizes and stages."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"] |= {"root": str(root), "competition": "folder" if args.dataset == "imet" else "planet"}
    if args.dataset == "imet":
        params["data"]["folder"] |= {"train_csv": "train.csv", "tags_column": "tags", "image_ext": ".jpg"}
    workers = {"num_workers": args.workers}
    views = {"crop_views": args.crop_views, "crop_store": args.crop_store}
    params["prepare"] |= {"image_size": args.image_size} | views | workers
    params["hog"] |= workers
    params["train"] |= {"models": ["hog_linear"], "epochs": args.epochs, "warmup_epochs": 0.0, "tta": "none"}
    params["thresholds"] |= {"compare_methods": ["global", "per_class_exact"]}  # optuna: a stage of its own
    return params


def stages(cfg) -> list[tuple[str, list[str], list[str]]]:
    """(name, `mlic` arguments, output paths) of each measured stage, in the order they run."""
    t = cfg.train
    trains = [(f"train-hog_linear-{k}", ["train", "--model", "hog_linear", "--fold", str(k)],
               [str(cfg.fold_dir("hog_linear", k))]) for k in t.folds]  # fmt: skip
    return [
        ("prepare", ["prepare"], [cfg.prepare.out_dir]),
        ("folds", ["folds"], [cfg.folds.out_file]),
        ("hog", ["hog"], [cfg.hog.out_dir]),
        *trains,
        ("ensemble", ["ensemble"], [cfg.ensemble.out_dir]),
        ("thresholds", ["thresholds"], [cfg.thresholds.out_file, cfg.thresholds.metrics_file]),
        ("submit", ["submit"], [cfg.submit.out_file, cfg.submit.predictions_dir]),
        ("evaluate", ["evaluate"], [cfg.evaluate.out_dir]),
    ]


def disk_bytes(paths: list[str], project: Path) -> int:
    """Bytes of the files at or under `paths` (relative to the project)."""
    total = 0
    for path in (project / p for p in paths):
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else []
        total += sum(f.stat().st_size for f in files)
    return total


def process_tree(root: int) -> list[int]:
    """`root` and its live descendants (DataLoader workers, decoding pools), from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # a process that ended while we read
            continue
    tree, frontier = [root], [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        tree += children
        frontier += children
    return tree


def anon_kb(pid: int) -> int:
    """Anonymous memory (KB) of one process, its proportional share (Pss_Anon): heap and arrays, not the pages of
    files it maps, and the pages a forked DataLoader worker still shares with its parent counted once in all."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith("Pss_Anon:")), 0)


class AnonPeak(threading.Thread):
    """The peak of a process tree's anonymous memory, sampled every `every` seconds until `stop`.

    `ru_maxrss` also counts the pages of memory-mapped files the stage read or wrote (the image cache), which the
    kernel reclaims at will; this is the memory that would run out.
    """

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak_kb, self.done = pid, every, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.peak_kb = max(self.peak_kb, sum(map(anon_kb, process_tree(self.pid))))

    def stop(self) -> float:
        """The peak in MB."""
        self.done.set()
        self.join()
        return self.peak_kb / 1024


def run_stage(
    project: Path, params: str, argv: list[str], in_process: bool
) -> tuple[float, float | None, float | None]:
    """Seconds, peak RSS and peak anonymous memory (MB; None in process) of `mlic <argv>` in the project.

    Its failure stops the benchmark.
    """
    start = time.perf_counter()
    if in_process:
        from mlic.cli import main

        cwd = Path.cwd()
        os.chdir(project)
        try:
            code = main(["--params", params, *argv])
        finally:
            os.chdir(cwd)
        if code:
            raise SystemExit(f"mlic {' '.join(argv)} failed in {project} (exit {code})")
        return time.perf_counter() - start, None, None
    log = project / "logs" / f"{'-'.join(argv[:4:2])}.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "mlic.cli", "--params", params, *argv], cwd=project,
                                   stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        sampler = AnonPeak(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        anon = sampler.stop()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"mlic {' '.join(argv)} failed in {project}: see {log}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, anon  # Linux: KB


def subset_folds(project: Path, cfg, rows: int) -> str:
    """A folds file where only the first `rows` rows (by position) keep their fold; the rest are in none (-1)."""
    folds = pd.read_csv(project / cfg.folds.out_file)
    folds.loc[folds.index >= rows, "fold"] = -1
    path = "subset_folds.csv"
    folds.to_csv(project / path, index=False)
    return path


def measure_size(n: int, root: Path, args: argparse.Namespace) -> dict:
    """Every stage's seconds, peak RSS and output bytes on the first `n` rows (--only: those stages, again)."""
    project = args.cache / args.dataset / "runs" / f"n{n}"
    params = project_params(root, n, args)
    cfg = config_from_dict(params)
    if args.only:  # the project of an earlier run, its other stages' outputs in place
        if not (project / "params.yaml").is_file():
            raise SystemExit(f"--only: no earlier run at N = {n} in {project}; run every stage first")
        return {name: measure_stage(project, "params.yaml", argv, outs, args)
                for name, argv, outs in stages(cfg) if name in args.only}  # fmt: skip
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    record = {}
    for name, argv, outs in stages(cfg):
        record[name] = measure_stage(project, "params.yaml", argv, outs, args)
    if args.crop_views and n <= args.other_store_max_n:  # the other store's disk (and time), for comparison
        other = "views" if args.crop_store == "source" else "source"
        out_dir = f"data/processed/prepare-{other}"
        other_params = params | {"prepare": params["prepare"] | {"crop_store": other, "out_dir": out_dir}}
        record[f"prepare-{other}"] = side_stage(project, f"{other}.yaml", other_params, ["prepare"], [out_dir], args)
    if n <= args.optuna_max_n:  # TPE over one threshold per label: minutes per fit at iMet's 1,103 labels
        optuna = {"method": "optuna", "compare_methods": ["optuna"], "out_file": "data/processed/optuna.json",
                  "metrics_file": "reports/thresholds-optuna.json"}  # fmt: skip
        optuna_params = params | {"thresholds": params["thresholds"] | optuna}
        argv, outs = ["thresholds"], [optuna["out_file"]]
        record["thresholds-optuna"] = side_stage(project, "optuna.yaml", optuna_params, argv, outs, args)
    if not args.subset:  # --subset 0: no baseline epoch (it costs the same at every N)
        return record
    subset = params | {
        "folds": params["folds"] | {"out_file": subset_folds(project, cfg, args.subset)},
        "train": params["train"] | {"models": ["baseline"], "out_dir": "data/processed/subset"},
    }
    outs = [str(config_from_dict(subset).fold_dir("baseline", 0))]
    argv = ["train", "--model", "baseline", "--fold", "0"]
    record[f"train-baseline-{args.subset}rows"] = side_stage(project, "subset.yaml", subset, argv, outs, args)
    return record


def measure_stage(project: Path, params_file: str, argv: list[str], outs: list[str], args) -> dict:
    """`mlic <argv>` with the project's `params_file`: its seconds, peak RSS (MB) and its outputs' MB."""
    seconds, rss, anon = run_stage(project, params_file, argv, args.in_process)
    record = {"seconds": round(seconds, 2), "rss_mb": rss and round(rss, 1), "anon_mb": anon and round(anon, 1),
              "disk_mb": round(disk_bytes(outs, project) / 2**20, 2)}  # fmt: skip
    print(f"scale: {project.name} {' '.join(argv)} ({params_file}): {record}", file=sys.stderr, flush=True)
    return record


def side_stage(project: Path, name: str, params: dict, argv: list[str], outs: list[str], args) -> dict:
    """A stage run with its own params file `name`, written beside the project's (`measure_stage`)."""
    (project / name).write_text(yaml.safe_dump(params, sort_keys=False))
    return measure_stage(project, name, argv, outs, args)


def exponents(sizes: list[int], records: list[dict]) -> dict:
    """Per stage and quantity, the slope of log(value) on log(N) (None with fewer than 2 positive values)."""
    fitted = {}
    for stage in records[0]:
        fitted[stage] = {}
        for key in ("seconds", "rss_mb", "anon_mb", "disk_mb"):
            values = [r[stage][key] if stage in r else None for r in records]
            ok = [(n, v) for n, v in zip(sizes, values, strict=True) if v]
            slope = np.polyfit(np.log([n for n, _ in ok]), np.log([v for _, v in ok]), 1)[0] if len(ok) > 1 else None
            fitted[stage][key] = None if slope is None else round(float(slope), 3)
    return fitted


def markdown_table(result: dict) -> str:
    """The README's table of a result: per stage, seconds / peak anonymous MB / output MB at each N, and exponents."""
    sizes = result["sizes"]
    head = ["stage", *(f"N = {n:,}: s / MB / disk MB" for n in sizes), "exponent: time, memory, disk"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(sizes) + 1)]
    for stage, fitted in result["exponents"].items():
        cells = []
        for n in sizes:
            r = result["stages"][str(n)].get(stage)
            mem = r and (r.get("anon_mb") or r.get("rss_mb"))
            cells.append("" if r is None else f"{r['seconds']:,.1f} / {mem or 0:,.0f} / {r['disk_mb']:,.1f}")
        slopes = ", ".join("-" if fitted[k] is None else f"{fitted[k]:.2f}" for k in ("seconds", "anon_mb", "disk_mb"))
        lines.append(f"| `{stage}` | " + " | ".join(cells) + f" | {slopes} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(args.out.read_text())))
        return {}
    sizes = sorted(args.sizes)
    full = args.cache / args.dataset / "data"
    started = time.perf_counter()
    (generate_imet if args.dataset == "imet" else generate_planet)(full, sizes[-1], args)
    generated = time.perf_counter() - started
    if args.generate_only:
        return {"generate_seconds": round(generated, 1)}
    setup = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("out", "sizes")}
    setup |= {"cpu_count": os.cpu_count(), "generate_seconds": round(generated, 1),
              "raw_data_mb": round(disk_bytes(["."], full) / 2**20, 1)}  # fmt: skip
    done = earlier_sizes(args) if args.merge else {}
    for n in sizes:  # written after each size: a run stopped at the largest keeps the smaller ones
        done[str(n)] = done.get(str(n), {}) | measure_size(n, limited_root(full, n, args.dataset), args)
        out = results(setup, done)
        write_atomic(args.out, json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return out


def earlier_sizes(args: argparse.Namespace) -> dict:
    """The per-size records of an earlier run's --out, when its setup matches this run's (--merge)."""
    if not args.out.is_file():
        return {}
    earlier = json.loads(args.out.read_text())
    keys = ("dataset", "test", "labels", "sides", "raw_side", "image_size", "crop_views", "crop_store", "subset")
    mismatched = [k for k in keys if earlier["setup"].get(k) != getattr(args, k)]
    if mismatched:
        raise SystemExit(f"--merge: {args.out} ran with another {', '.join(mismatched)}; drop --merge or match it")
    return earlier["stages"]


def results(setup: dict, done: dict) -> dict:
    """The JSON of the sizes measured so far, in increasing N, with their fitted exponents."""
    sizes = sorted(map(int, done))
    records = [done[str(n)] for n in sizes]
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return {"setup": setup | {"self_peak_rss_mb": peak}, "sizes": sizes,
            "stages": {str(n): r for n, r in zip(sizes, records, strict=True)},
            "exponents": exponents(sizes, records)}  # fmt: skip


def write_atomic(path: Path, text: str) -> None:
    """`text` to `path` through a temporary file beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


if __name__ == "__main__":
    main()
