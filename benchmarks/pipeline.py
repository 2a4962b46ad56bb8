"""Time every stage of the pipeline on the repo's params.yaml (or --params), in a scratch directory.

Prints JSON: seconds per stage, total, the out-of-fold metrics with the all-prior baseline, and training
throughput. Usage: .venv/bin/python benchmarks/pipeline.py [--params params.yaml] [--keep DIR]
[--set train.models=[hourglass]] [--set models.hourglass.pooling=lse] ...
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mlic.run import method_reports

REPO = Path(__file__).resolve().parents[1]


def run_stage(workdir: Path, *args: str) -> float:
    """Run `mlic <args>` in `workdir`; returns wall seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlic.cli", *args], cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - start, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a param")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="mlic-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load(args.params.read_text())
    for override in args.set:
        key, value = override.split("=", 1)
        *parents, name = key.split(".")  # nested: models.hourglass.backbone=resnet18
        node = params
        for part in parents:
            node = node[part]
        node[name] = yaml.safe_load(value)
    root = Path(params["data"]["root"])
    if params["data"]["root"] != params["sample"]["out_dir"] and not root.is_absolute():
        params["data"]["root"] = str((REPO / root).resolve())  # relative to the repo, not the scratch directory
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    seconds = {}
    solution = Path(params["data"]["root"]) / "solution.csv"
    for stage in ("sample", "prepare", "hog", "folds"):
        seconds[stage] = run_stage(workdir, stage)
    for model in params["train"]["models"]:
        for fold in params["train"]["folds"]:
            seconds[f"train-{model}-{fold}"] = run_stage(workdir, "train", "--model", model, "--fold", str(fold))
    for stage in ("ensemble", "thresholds", "submit", "evaluate"):
        seconds[stage] = run_stage(workdir, stage)
    metrics = json.loads((workdir / params["evaluate"]["out_dir"] / "metrics.json").read_text())
    stats = json.loads((workdir / params["prepare"]["out_dir"] / "stats.json").read_text())
    train_seconds = sum(v for k, v in seconds.items() if k.startswith("train-"))
    fraction = 1 - 1 / params["folds"]["n_splits"]
    fold_metrics = [
        json.loads((workdir / params["train"]["out_dir"] / m / f"fold_{f}" / "metrics.json").read_text())
        for m in params["train"]["models"]
        for f in params["train"]["folds"]
    ]
    seen = stats["n_train"] * stats["views"] * fraction * sum(m["epochs_run"] for m in fold_metrics)
    scores_file = workdir / params["thresholds"]["metrics_file"]
    result = {
        "params": str(args.params),
        "overrides": args.set,
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 2),
        "train_seconds": round(train_seconds, 2),
        "train_images_seen_per_second": round(seen / train_seconds, 1),
        "metrics": metrics,
        "folds": fold_metrics,
        "thresholds": {
            method: {"in_sample": r["in_sample"]["f2_samples"], "nested": r["nested"].get("f2_samples")}
            for method, r in method_reports(json.loads(scores_file.read_text())).items()
        },
    }
    submission = workdir / params["submit"]["out_file"]
    if solution.is_file():  # an offline competition: score the test submission as Kaggle would
        scored = subprocess.run(
            [sys.executable, "-m", "mlic.cli", "score", str(submission), "--solution", str(solution)],
            cwd=workdir,
            check=True,
            capture_output=True,
            text=True,
        )
        result["test_score"] = json.loads(scored.stdout)
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
