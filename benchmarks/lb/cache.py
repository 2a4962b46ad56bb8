"""The leaderboard's cache: a row's result, and the shared stages' outputs, reused while what they read is unchanged.

Each row's result is stored as `cache/<row>-<key>.json` in the work folder, the key hashing the row's resolved
params and entry, the source files of the stages it runs and of its architectures (`mlic.deps`), the solution file,
torch's version and the device kind: adding an architecture runs only its row, and editing one architecture's module
reruns only that row. Within a row, its trained fold is kept under `train_key` (what the stages up to `train` read):
an edit to the blending or threshold code reruns the stages after `train` alone. The shared stages (prepare, hog,
folds, proposals) run once into `upstream/<key>/`, the key hashing their params (without output paths), `--limit`
and their code. Every digest is `mlic.hashing`'s.

Why a cache of its own rather than DVC experiments (or DVC's run cache), which key stages the same way:

- A row is not an experiment of this repository's pipeline. Its params differ in `train.models` and its output
  paths, and dvc.yaml is generated from the params (`mlic pipeline --write`): `dvc exp run -S train.models=[...]`
  cannot add the row's stages. Each row would need a DVC project (and a git repository) of its own.
- The key holds what DVC does not track: torch's version and the device kind (a CUDA row and a CPU row train
  different weights), and `solution.csv`, which `mlic score` reads outside any stage.
- The stages run in this process, so torch is imported once for all rows; DVC runs each stage's command as a
  process of its own (20-50 s of imports each, about fifty stages).
- What is reused is a row's summary (scores, timings, sizes, decoded sets), one small JSON, not every stage's outputs:
  DVC's cache would hold each row's checkpoints and predictions as well.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlic.hashing import file_digest, file_digests, value_digest
from mlic.io import write_text

from .params import BLEND_STAGES, FOLD, ROW_PROPOSALS, ROW_STAGES, TRAIN_STAGES, UPSTREAM_STAGES, decodes_sets
from .stages import device_kind

REPO = Path(__file__).resolve().parents[2]
ROWS = Path("cache")  # in the work folder: one JSON per row and key
UPSTREAM_DONE = "done.json"  # written into the shared stages' folder once they have all finished


def code_digests(stages: Sequence[str], arch: str | None = None, extra: Sequence[str] = ()) -> dict[str, str]:
    """Module -> digest of every `mlic` source file the stages import (with `mlic score` for a row), the arch's, and
    those of the `extra` modules with everything they import."""
    from mlic import deps

    root = deps.source_root(REPO)
    modules = {m for stage in stages for m in deps.stage_modules(stage, root)} | set(deps.closure(list(extra), root))
    if arch is not None:
        modules |= set(deps.closure(["mlic.tools"], root))
        if deps.module_file(deps.arch_module(arch), root) is not None:
            modules |= set(deps.arch_modules(arch, root))
        else:  # an arch registered outside mlic/models/<arch>.py: its code is unknown, so hash the whole package
            modules |= {".".join(p.relative_to(root).with_suffix("").parts) for p in (root / "mlic").rglob("*.py")}
    files = {m: deps.module_file(m, root) for m in modules}
    return file_digests({m: path for m, path in files.items() if path is not None})


def row_key(params: dict, arch: str, solution: Path) -> str:
    """The row's key: its resolved params and entry, its code, its solution file, torch's version, the device kind.

    Raises:
        mlic.errors.ConfigError: A bad key of the params or of the entry (before anything runs).
    """
    import dataclasses

    import torch

    from mlic.config import config_from_dict
    from mlic.models.registry import resolve_model

    cfg = config_from_dict(params)
    model = resolve_model(cfg, arch)
    # a row that decodes sets also runs mlic.predict.decoding, scored beside the thresholds; a distilled row also
    # builds its student's and teacher's archs
    extra = [f"mlic.models.{name}" for name in model.arch_names()[1:]]
    extra += ["mlic.predict.decoding"] if decodes_sets(arch, params) else []
    code = code_digests(ROW_STAGES, model.spec.name, extra)
    material = {"params": cfg.to_dict(), "entry": dataclasses.asdict(model.config), "code": code,
                "solution": file_digest(solution)}  # fmt: skip
    if arch in ROW_PROPOSALS:  # its boxes come from another row's trained model: that model is part of the key
        cam_model = Path(cfg.proposals.cam.run_dir) / f"fold_{FOLD}" / "model.pt"
        material["cam_model"] = file_digest(cam_model) if cam_model.is_file() else None
    return value_digest(material | {"torch": torch.__version__, "device": device_kind()})


def train_key(params: dict, arch: str) -> str:
    """The key of the row's trained fold: what its `proposals`, `teacher` and `train` stages read, nothing after.

    A row whose result key changed only through the blending, threshold or scoring code (or those sections of its
    params) keeps its trained fold: `runner.run_row` reruns the cheap stages after `train` alone.
    """
    import dataclasses

    import torch

    from mlic.config import config_from_dict
    from mlic.models.registry import resolve_model

    cfg = config_from_dict(params)
    model = resolve_model(cfg, arch)
    extra = [f"mlic.models.{name}" for name in model.arch_names()[1:]]
    sections = {k: v for k, v in cfg.to_dict().items() if k not in BLEND_STAGES}
    material = {"params": sections, "entry": dataclasses.asdict(model.config),
                "code": code_digests(TRAIN_STAGES, model.spec.name, extra)}  # fmt: skip
    if arch in ROW_PROPOSALS:
        cam_model = Path(cfg.proposals.cam.run_dir) / f"fold_{FOLD}" / "model.pt"
        material["cam_model"] = file_digest(cam_model) if cam_model.is_file() else None
    return value_digest(material | {"torch": torch.__version__, "device": device_kind()})


def row_file(arch: str, key: str) -> Path:
    """Where the row's result under `key` is stored, relative to the work folder."""
    return ROWS / f"{arch}-{key[:16]}.json"


def load_row(arch: str, key: str) -> dict | None:
    """The stored result of the row under `key`, or None when it has none (never run with these params and code)."""
    stored = row_file(arch, key)
    return json.loads(stored.read_text()) if stored.is_file() else None


def store_row(arch: str, key: str, row: dict) -> None:
    """Store the row's result under `key`, atomically: a killed run leaves no half-written result to load."""
    write_text(row_file(arch, key), json.dumps(row, indent=2))


def upstream_folder(probe: dict, limit: int | None) -> str:
    """The shared stages' folder, relative to the work folder, named by a digest of what they read.

    Args:
        probe: The shared params (`params.shared_params`); their output paths are left out of the key.
        limit: `--limit`: the number of training rows sampled, or None for all.

    Returns:
        `upstream/<key>`: a changed param or module makes a new folder, an unchanged one reuses the old.
    """
    sections = {s: {k: v for k, v in probe[s].items() if k not in ("out_dir", "out_file")} for s in UPSTREAM_STAGES}
    material = {
        "sections": sections | {"data": probe["data"]},
        "limit": limit,
        "code": code_digests(UPSTREAM_STAGES),
    }
    return f"upstream/{value_digest(material)[:16]}"


def upstream_done(folder: Path) -> dict[str, Any] | None:
    """What the finished shared stages in `folder` recorded (their seconds), or None if they have not all finished."""
    done = folder / UPSTREAM_DONE
    return json.loads(done.read_text()) if done.is_file() else None


def mark_upstream_done(folder: Path, seconds: dict[str, float]) -> None:
    """Record that the shared stages in `folder` have all finished, with their seconds."""
    (folder / UPSTREAM_DONE).write_text(json.dumps({"seconds": seconds}, indent=2))
