"""Decoding throughput of the attention CNN-RNN (`arch: cnn_rnn`): greedy against beam search, at C=17 and C=1,103.

What is timed: `CnnRnn.decode(images, beam)` itself (h0/c0 from v_prob, and
`mlic.models.beam_search.beam_search` calling the real `CnnRnn.step`), at a fixed batch, on the decoder built at
its `CnnRnnConfig` sizes (embed 256, hidden 512, attention 512, gate on). The encoder is left out: the backbone's
feature map V is precomputed random features (N, P, D), D=2048 by default (resnet50, the config's default backbone;
512 for resnet18/34), P=49 (a 7x7 map), and `encode` is replaced on the instance by one returning V, its attention
keys W_v V and v_prob's logits, all computed once by the real `encode` before timing.

Every configuration runs exactly --steps decoder steps (default 10: Planet's longest label set, 9 tags, + 1; iMet's
would be 12). With random weights a path may emit END early and the search stop early, so a wrapper around
`CnnRnn.step` sets END's logit to -inf on every step but the last, where `beam_search` itself allows only END: no path
finishes before the last step, the early stop never fires, and the search stops right after it. The wrapper counts
its calls; the steps run per decode are reported (and checked). This forcing changes the probabilities, not the work
of a step (same shapes, same operations, plus one (N*B, C+1) copy per step for the END mask).

Per (C, B): the median (and min) of --repeats timed decodes, after one untimed warm-up decode, under
`torch.inference_mode()`; images/s, ms per decode, ms per step (the decode / steps), and the per-step cost relative
to the baseline (the smallest C with the smallest B: C=17, greedy, by default) against the C*B ratio. The verdict
`sublinear_in_c_times_b` is true when every other configuration's time ratio is below its C*B ratio.

Prints JSON to stdout and a markdown table to stderr.

Usage:
    Default (CPU, batch 32, C=17 and 1,103, beams 1 3 5):  .venv/bin/python benchmarks/decode.py
    resnet18-like features, one thread:                    .venv/bin/python benchmarks/decode.py --channels 512 \
                                                               --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn

from mlic.models.cnn_rnn import CnnRnn, CnnRnnConfig

DEFAULTS = CnnRnnConfig()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32, help="images per decode (N)")
    p.add_argument("--positions", type=int, default=49, help="positions of the feature map (P; 49 = 7x7)")
    p.add_argument("--channels", type=int, default=2048, help="feature channels (D; 2048 resnet50, 512 resnet18/34)")
    p.add_argument("--classes", type=int, nargs="+", default=[17, 1103], help="label counts C (Planet, iMet)")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5], help="beam sizes B (1: greedy)")
    p.add_argument("--steps", type=int, default=10, help="decoder steps of every decode, END included")
    p.add_argument("--repeats", type=int, default=5, help="timed decodes per configuration (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--embed-dim", type=int, default=DEFAULTS.embed_dim)
    p.add_argument("--hidden-size", type=int, default=DEFAULTS.hidden_size)
    p.add_argument("--attention-dim", type=int, default=DEFAULTS.attention_dim)
    p.add_argument("--no-gate", action="store_true", help="no sigmoid(f_beta(h)) gate on the context")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for key in ("batch", "positions", "channels", "steps", "repeats"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be >= 1")
    if min(args.beams) < 1 or min(args.classes) < 1 or args.threads < 0:
        p.error("--beams and --classes must be >= 1, --threads >= 0")
    if args.steps - 1 > min(args.classes):
        p.error(f"--steps {args.steps} needs {args.steps - 1} labels before END, more than C={min(args.classes)}")
    return args


class FeatureMap(nn.Module):
    """A backbone stand-in: `num_features` channels, and `forward_features` returning its input (a feature map)."""

    def __init__(self, channels: int):
        super().__init__()
        self.num_features = channels

    def forward_features(self, fmap: torch.Tensor) -> torch.Tensor:
        return fmap


class FixedLength:
    """A wrapper of `CnnRnn.step` that forbids END before the last of `steps` steps, and counts its calls."""

    def __init__(self, model: CnnRnn, steps: int):
        self.model, self.steps, self.calls = model, steps, 0

    def __call__(self, tokens, h, c, positions, keys):
        logits, h, c = CnnRnn.step(self.model, tokens, h, c, positions, keys)
        if self.calls % self.steps != self.steps - 1:  # not the last step: END impossible
            end = torch.tensor([self.model.end], device=logits.device)
            logits = logits.index_fill(1, end, float("-inf"))
        self.calls += 1
        return logits, h, c


def build(args: argparse.Namespace, num_classes: int, device: torch.device) -> tuple[CnnRnn, FixedLength, torch.Tensor]:
    """The decoder for C labels (seeded), its step wrapper, and a dummy image batch (decode reads its N and device).

    The model's `encode` returns the precomputed V (N, P, D), keys and v_prob's logits from here on.
    """
    cfg = CnnRnnConfig(embed_dim=args.embed_dim, hidden_size=args.hidden_size, attention_dim=args.attention_dim,
                       gate=not args.no_gate)  # fmt: skip
    torch.manual_seed(args.seed)
    model = CnnRnn(FeatureMap(args.channels), num_classes, cfg).to(device).eval()
    model.max_steps.fill_(args.steps)
    model.refresh_export_steps()
    g = torch.Generator().manual_seed(args.seed + 1)
    fmap = torch.randn(args.batch, args.channels, args.positions, 1, generator=g).relu().to(device)  # post-ReLU map
    with torch.inference_mode():
        encoded = model.encode(fmap)
    model.encode = lambda images: encoded  # the encoder's cost left out: decode starts from V
    wrapper = FixedLength(model, args.steps)
    model.step = wrapper  # decode's step closure calls self.step
    return model, wrapper, fmap


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace, model: CnnRnn, wrapper: FixedLength, images, beam: int) -> dict:
    """Time `repeats` decodes at beam B after one warm-up; the steps each ran, checked against --steps."""
    device = images.device
    seconds = []
    with torch.inference_mode():
        wrapper.calls = 0
        _, paths = model.decode(images, beam)  # warm-up
        if paths.tokens.shape != (args.batch, args.steps) or wrapper.calls != args.steps:
            raise RuntimeError(f"warm-up decode ran {wrapper.calls} steps, expected {args.steps}")
        wrapper.calls = 0
        for _ in range(args.repeats):
            sync(device)
            start = time.perf_counter()
            model.decode(images, beam)
            sync(device)
            seconds.append(time.perf_counter() - start)
    steps, rem = divmod(wrapper.calls, args.repeats)
    if rem or steps != args.steps:
        raise RuntimeError(f"decodes ran {wrapper.calls} steps in all over {args.repeats}, expected {args.steps} each")
    median = statistics.median(seconds)
    return {
        "classes": model.num_classes,
        "beam": beam,
        "images_per_s": round(args.batch / median, 1),
        "ms_per_decode": round(1000 * median, 3),
        "ms_per_decode_min": round(1000 * min(seconds), 3),
        "ms_per_step": round(1000 * median / steps, 3),
        "steps": steps,
        "seconds": median,  # unrounded, for the ratios (dropped from the JSON)
    }


def verdict(results: list[dict]) -> tuple[dict, list[dict], bool | None]:
    """The baseline (smallest C, smallest B), each other configuration's time and C*B ratios, and the verdict."""
    base = min(results, key=lambda r: (r["classes"], r["beam"]))
    base_cb = base["classes"] * base["beam"]
    ratios = []
    for r in results:
        r["time_ratio"] = round(r["seconds"] / base["seconds"], 3)
        r["c_times_b_ratio"] = round(r["classes"] * r["beam"] / base_cb, 3)
        if r is not base:
            r["sublinear"] = r["seconds"] / base["seconds"] < r["classes"] * r["beam"] / base_cb
            ratios.append({k: r[k] for k in ("classes", "beam", "time_ratio", "c_times_b_ratio", "sublinear")})
    sublinear = all(x["sublinear"] for x in ratios) if ratios else None  # None: only the baseline was measured
    return {"classes": base["classes"], "beam": base["beam"]}, ratios, sublinear


def markdown(result: dict) -> str:
    """A short table: one line per (C, B)."""
    s = result["setup"]
    lines = [
        f"Decoding, batch {s['batch']}, P={s['positions']}, D={s['channels']}, {s['steps']} steps, "
        f"{s['device']} ({s['torch_threads']} threads); baseline C={result['baseline']['classes']}, "
        f"B={result['baseline']['beam']}",
        "",
        "| C | B | images/s | ms/decode | ms/step | steps | time ratio | C*B ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["results"]:
        lines.append(f"| {r['classes']} | {r['beam']} | {r['images_per_s']} | {r['ms_per_decode']} | "
                     f"{r['ms_per_step']} | {r['steps']} | {r['time_ratio']} | {r['c_times_b_ratio']} |")  # fmt: skip
    lines += ["", f"sublinear in C*B: {result['sublinear_in_c_times_b']}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; prints its JSON to stdout and the table to stderr, and returns the JSON."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device)
    results = []
    for num_classes in args.classes:
        model, wrapper, images = build(args, num_classes, device)
        results.extend(measure(args, model, wrapper, images, beam) for beam in args.beams)
    baseline, ratios, sublinear = verdict(results)
    for r in results:
        del r["seconds"]
    setup = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "batch": args.batch,
        "positions": args.positions,
        "channels": args.channels,
        "embed_dim": args.embed_dim,
        "hidden_size": args.hidden_size,
        "attention_dim": args.attention_dim,
        "gate": not args.no_gate,
        "steps": args.steps,
        "repeats": args.repeats,
    }
    result = {"setup": setup, "baseline": baseline, "results": results, "ratios": ratios,
              "sublinear_in_c_times_b": sublinear}  # fmt: skip
    print(json.dumps(result, indent=2))
    print(markdown(result), file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
