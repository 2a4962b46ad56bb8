"""Prediction throughput of a finished run: `mlic predict` on image files, and the exported ONNX model.

On the run's own test images (the files of `data.root`, in the pipeline's test order), times:
  * predict: decode + views + (HOG) + every fold of every model with TTA + blend, as `mlic predict` runs it
    (images per second, whole path from JPEG to probabilities), and its max difference from the pipeline's
    test probabilities;
  * onnx: the first model of train.models exported with all its folds (`mlic export-onnx`), run by onnxruntime
    on the cached uint8 test images, against the same model's folds in torch on the same arrays (images per
    second of each, after one warm-up batch), and their max difference.
Prints JSON. Usage: .venv/bin/python benchmarks/predict.py [--run .] [--batch-size 64] [--limit 0] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mlic.data.competitions import get_competition
from mlic.layout import average_test
from mlic.loop.fold_model import load_fold_model
from mlic.predict.export import export_onnx
from mlic.predict.inference import load_predictor, predict_files
from mlic.run import open_run


def time_predict(run, paths: list[Path], batch_size: int, device: torch.device) -> dict:
    predictor = load_predictor(run, device)
    start = time.perf_counter()
    result = predict_files(predictor, paths, batch_size)
    seconds = time.perf_counter() - start
    reference = run.ensemble().test[: len(paths)]
    return {
        "images": len(paths),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(paths) / seconds, 1),
        "fold_models": sum(len(f) for f in predictor.members.values()),
        "max_abs_diff_vs_pipeline": float(np.abs(result.probs - reference).max()),
    }


def time_onnx(run, n: int, batch_size: int) -> dict:
    import onnxruntime as ort

    model = run.cfg.train.models[0]
    folds = [load_fold_model(run.fold_dir(model, f), torch.device("cpu")) for f in run.cfg.train.folds]
    if folds[0].sources != ("image",):
        return {"skipped": f"{model} reads {folds[0].sources}; the benchmark feeds images only"}
    images = np.array(run.prepared().test_images[:n, 0])  # a writable copy of the memory map
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_onnx(folds, Path(tmp) / "model.onnx")
        session = ort.InferenceSession(str(Path(tmp) / "model.onnx"))
    batches = [images[i : i + batch_size] for i in range(0, n, batch_size)]
    session.run(None, {"image": batches[0]})
    start = time.perf_counter()
    onnx_probs = np.concatenate([session.run(None, {"image": b})[0] for b in batches])
    onnx_s = time.perf_counter() - start
    with torch.no_grad():
        exported(torch.from_numpy(batches[0]))
        start = time.perf_counter()
        torch_probs = np.concatenate([exported(torch.from_numpy(b)).numpy() for b in batches])
        torch_s = time.perf_counter() - start
    pipeline = average_test(run.fold_predictions()[model])[:n]
    return {
        "model": model,
        "folds": len(folds),
        "tta_views": len(exported.views),
        "onnxruntime_images_per_s": round(n / onnx_s, 1),
        "torch_images_per_s": round(n / torch_s, 1),
        "max_abs_diff_onnx_vs_torch": float(np.abs(onnx_probs - torch_probs).max()),
        "max_abs_diff_onnx_vs_pipeline": float(np.abs(onnx_probs - pipeline).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=".", help="project folder of a finished run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=0, help="first N test images (0: all)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    run = open_run(args.run)
    raw = get_competition(run.cfg.data).scan(run.path(run.cfg.data.root), decode_images=False).raw
    paths = list(raw.test_paths)[: args.limit or None]
    report = {
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "predict": time_predict(run, paths, args.batch_size, torch.device(args.device)),
        "onnx": time_onnx(run, len(paths), args.batch_size),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
