"""Training throughput (images/s) of the real engine (`mlic.train.engine.run_epoch`), with the data pipeline on and off.

"on": batches come from a uint8 image cache through `CachedSamples`, the satellite augmentation, the configured
sampler and a DataLoader with --num-workers processes, then move to the device, as in `mlic train`.
"off": the same number of batches, made once and kept on the device, so only the model's forward, backward and
optimizer step are timed. When "on" is much slower than "off", the GPU is starved by the input pipeline.

The cache is random pixels of the requested size (throughput does not depend on the pixel values). Each
measurement runs --warmup-steps untimed steps first (cudnn autotuning, torch.compile), then times --steps steps.
Prints JSON, one record per (model, pipeline).

Usage:
    CPU, tiny size:   .venv/bin/python benchmarks/train.py
    GPU, study size:  python benchmarks/train.py --models baseline hourglass --backbone resnet50 --image-size 256 \
                          --batch-size 64 --num-workers 8 --steps 50
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import numpy as np
import torch

from mlic.config import ModelEntry, TrainConfig
from mlic.loop.batches import CachedSamples
from mlic.loop.runtime import loader_options, make_runtime
from mlic.models.registry import ModelDims, get_arch, resolve_entry
from mlic.train.augment import create_augmentation
from mlic.train.engine import make_engine, run_epoch
from mlic.train.sampling import make_train_loader

NUM_CLASSES = 17  # Planet's tags


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["baseline", "hourglass"], help="registered architectures")
    p.add_argument("--backbone", default="resnet10t")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--output-stride", type=int, default=32, help="8 or 16 dilate the backbone's last stages")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--num-workers", default="auto", help="data-loader processes, or auto (train.num_workers)")
    p.add_argument("--pipeline", choices=["on", "off", "both"], default="both")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    return p.parse_args()


def train_config(args: argparse.Namespace, epochs: int = 2) -> TrainConfig:
    return TrainConfig(
        epochs=epochs, warmup_epochs=0, batch_size=args.batch_size, device=args.device,
        num_workers=args.num_workers if args.num_workers == "auto" else int(args.num_workers),
        amp=not args.no_amp, channels_last=not args.no_channels_last, compile=args.compile, augment="satellite",
    )  # fmt: skip


def real_loader(args: argparse.Namespace, cfg: TrainConfig, n_batches: int) -> torch.utils.data.DataLoader:
    """The training input pipeline of `mlic train`, over a random uint8 cache of n_batches full batches."""
    n = n_batches * args.batch_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 1, args.image_size, args.image_size, 3), dtype=np.uint8)
    labels = (rng.random((n, NUM_CLASSES)) < 0.2).astype(np.uint8)
    transform = create_augmentation(cfg.augment, args.image_size, 0)
    dataset = CachedSamples({"image": images}, np.arange(n), np.zeros(n, dtype=int), labels, transform)
    return make_train_loader(dataset, labels, cfg, **loader_options(cfg))


def device_batches(args: argparse.Namespace, n_batches: int, device: torch.device) -> list[dict]:
    """Pre-made uint8 batches already on the device: the model's cost without the input pipeline."""
    g = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g).to(device)
    target = (torch.rand(args.batch_size, NUM_CLASSES, generator=g) < 0.2).float().to(device)
    return [{"image": image, "target": target}] * n_batches


IMAGE_STATS = {"image": {"mean": torch.full((3,), 0.5), "std": torch.full((3,), 0.25)}}


def build(arch: str, backbone: str, output_stride: int = 32, image_size: int = 32):
    """The registered architecture's network (seeded) and task, on `backbone` (at `output_stride`) when it takes one.

    SRN's `sr_map_size` is set to its X's side at `image_size` (the map one stage before the last: stride 16, or the
    output stride when that is smaller).
    """
    keys = {f.name for f in dataclasses.fields(get_arch(arch).config)}
    wanted = {"backbone": backbone, "output_stride": output_stride,
              "sr_map_size": max(1, image_size // min(16, output_stride))}  # fmt: skip
    options = {k: v for k, v in wanted.items() if k in keys}
    resolved = resolve_entry(arch, ModelEntry(arch, options))
    task = resolved.task()
    if task.sources != ("image",):
        raise SystemExit(f"{arch} reads {task.sources}; this benchmark feeds images only")
    task.setup((np.random.default_rng(0).random((64, NUM_CLASSES)) < 0.2).astype(np.uint8))
    torch.manual_seed(0)
    return resolved.build(ModelDims(NUM_CLASSES, {"image": 3})), task


def measure(args: argparse.Namespace, arch: str, pipeline: str) -> dict:
    """Images per second of `run_epoch` for one model and one pipeline setting."""
    cfg = train_config(args)
    rt = make_runtime(cfg, IMAGE_STATS)
    model, task = build(arch, args.backbone, args.output_stride, args.image_size)
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if cfg.compile and rt.device.type == "cuda" else model
    engine, seconds = make_engine(model, net, cfg, rt, args.steps, lr_multiplier=task.lr_multiplier), {}
    for phase, steps in (("warmup", args.warmup_steps), ("timed", args.steps)):
        batches = real_loader(args, cfg, steps) if pipeline == "on" else device_batches(args, steps, rt.device)
        sync(rt.device)
        start = time.perf_counter()
        run_epoch(engine, batches, task, cfg, rt)
        sync(rt.device)
        seconds[phase] = time.perf_counter() - start
    return {
        "model": arch,
        "backbone": args.backbone,
        "pipeline": pipeline,
        "images_per_s": round(args.steps * args.batch_size / seconds["timed"], 1),
        "ms_per_step": round(1000 * seconds["timed"] / args.steps, 1),
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    args = parse_args()
    rt = make_runtime(train_config(args), IMAGE_STATS)
    pipelines = ["on", "off"] if args.pipeline == "both" else [args.pipeline]
    results = [measure(args, arch, pipeline) for arch in args.models for pipeline in pipelines]
    setup = {
        "device": torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "image_size": args.image_size,
        "output_stride": args.output_stride,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "amp": str(rt.amp_dtype) if rt.amp_dtype else None,
        "channels_last": rt.channels_last,
        "compile": args.compile and rt.device.type == "cuda",
        "steps": args.steps,
    }
    print(json.dumps({"setup": setup, "results": results}, indent=2))


if __name__ == "__main__":
    main()
