"""The leaderboard's params: each row's `models` entry at the budget, and the params files its stages read.

Every row starts from the same shared params (data, the image cache, HOG, folds, the budget, the threshold methods;
`shared_params`) and keeps its own outputs under `rows/<row>/` (`row_params`). What a row's params resolve to (the
architecture, whether it has a teacher, whether it decodes sets) is read here too, through `mlic`'s own config.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlic.models.registry import ResolvedModel

FOLD = 0
UPSTREAM_STAGES = ("prepare", "hog", "folds", "proposals")  # run once, shared by every row
# after `train`, every row blends, fits thresholds, submits and evaluates
BLEND_STAGES = ("ensemble", "thresholds", "submit", "evaluate")
# each row's stages, after the shared ones; `teacher` runs only for a distilled row (its entry names a teacher)
TRAIN_STAGES = ("proposals", "teacher", "train")  # what a row's trained fold depends on (`cache.train_key`)
ROW_STAGES = ("teacher", "train", *BLEND_STAGES)
# Rows beside one per arch: name -> (arch, keys over its entry). The distilled student's control: the same student
# at the same budget without its teacher; ML-Decoder with BCE, the control of its default ASL (the paper's loss).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "kd_wsd_plain": ("kd_wsd", {"distill": False}),
    "ml_decoder_bce": ("ml_decoder", {"loss": "bce", "loss_options": {}}),
}
# Rows with proposals of their own (the shared ones are `windows`): the two-branch network's pseudo-objects are the
# `cam` boxes of the baseline row's trained fold (Planet has no boxes), so that row must run (or be cached) first.
CAM_RUN = "rows/baseline/train/baseline"
ROW_PROPOSALS: dict[str, dict[str, Any]] = {"sca": {"method": "cam", "cam": {"model": "baseline", "run_dir": CAM_RUN}}}
COMPARE_METHODS = ["global", "per_class_exact"]  # auto's candidates; optuna's search is left out for speed
PHASE_KEY = "phase_epochs"  # a list-valued entry key whose lengths must add up to train.epochs
# Entry keys that give the side of a feature map, with that map's stride in the undilated backbone: set to the side
# at the budget's image size and output stride (SRN's X is the map one stage before the last, stride 16)
MAP_SIZE_KEYS: dict[str, int] = {"sr_map_size": 16}


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


def arch_entry(
    arch: str, models: dict[str, dict], backbone: str, epochs: int, output_stride: int = 32, image_size: int = 64
) -> dict[str, Any]:
    """The row's models entry: params.yaml's entry of that arch (or its defaults) on the budget's backbone.

    The entry keyed by the arch's name is preferred, then the first entry with that arch. Where the arch's config has
    them, `backbone` is the budget's, `pretrained` false, `pretrained_file` null and `output_stride` the budget's; a
    list-valued `phase_epochs` (the entry's, else the config's default) is rescaled to the budget's epochs, and a
    map-side key (`MAP_SIZE_KEYS`) is set to that map's side at the budget's image size and output stride.
    """
    from mlic.models.registry import get_arch

    same = [key for key, e in models.items() if isinstance(e, dict) and e.get("arch") == arch]
    key = arch if arch in same else (same[0] if same else None)
    entry = copy.deepcopy(models[key]) if key else {"arch": arch}
    fields = {f.name: f for f in dataclasses.fields(get_arch(arch).config)}
    overrides = {"backbone": backbone, "pretrained": False, "pretrained_file": None, "output_stride": output_stride}
    entry.update({k: v for k, v in overrides.items() if k in fields})
    sides = {k: max(1, image_size // min(stride, output_stride)) for k, stride in MAP_SIZE_KEYS.items()}
    entry.update({k: side for k, side in sides.items() if k in fields})
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
    params["train"] |= args.train_keys  # the budget's (precision, loader workers)
    params["thresholds"] |= {"method": "auto", "compare_methods": COMPARE_METHODS}
    return params


def row_params(shared: dict, arch: str, entry: dict) -> dict:
    """One row's params: its entry alone (keyed by the arch's name) and every output under `rows/<arch>/`."""
    params, out = copy.deepcopy(shared), f"rows/{arch}"
    params["models"] = {arch: entry}
    params["train"] |= {"models": [arch], "out_dir": f"{out}/train", "checkpoint_dir": f"{out}/checkpoints",
                        "teacher_dir": f"{out}/teachers"}  # fmt: skip
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


def select_archs(names: Sequence[str] | None) -> list[str]:
    """The rows to run: `names` (each checked), or every registered architecture and its `VARIANTS`."""
    from mlic.models.registry import discover_archs, get_arch

    if not names:
        archs = discover_archs()
        return archs + [name for name, (arch, _) in VARIANTS.items() if arch in archs]
    for name in names:
        get_arch(VARIANTS.get(name, (name, {}))[0])  # an unknown name fails here, listing the registered ones
    return list(dict.fromkeys(names))


def resolve_row(arch: str, params: dict) -> ResolvedModel:
    """The row's models entry, resolved by its architecture's config class.

    Raises:
        mlic.errors.ConfigError: A bad key of the params or of the entry.
    """
    from mlic.config import config_from_dict
    from mlic.models.registry import resolve_model

    return resolve_model(config_from_dict(params), arch)


def decodes_sets(arch: str, params: dict) -> bool:
    """Whether the row's task decodes label sets itself (a sequence decoder: `decode_step`)."""
    return hasattr(resolve_row(arch, params).task(), "decode_step")


def has_teacher(arch: str, params: dict) -> bool:
    """Whether the row's entry names a teacher (a distilled student's), which stage `teacher` trains first."""
    return resolve_row(arch, params).config.teacher_entry() is not None


def budget(shared: dict, args: argparse.Namespace) -> dict:
    """The budget every row shares, as the result JSON records it."""
    t = shared["train"]
    return {"epochs": args.epochs, "image_size": args.image_size, "backbone": args.backbone, "fold": FOLD,
            "n_splits": args.n_splits, "batch_size": t["batch_size"], "lr": t["lr"], "seed": t["seed"],
            "warmup_epochs": t["warmup_epochs"], "name": args.budget, "output_stride": args.output_stride,
            "limit": args.limit, "train_keys": args.train_keys,
            "tta": t["tta"], "hog_image_size": shared["hog"]["image_size"]}  # fmt: skip
