"""Stage `code`: check one trained model's entry against its architecture, and record that architecture's sources.

`mlic code --model M` resolves `models.M` with its architecture's config class, so an unknown or mistyped key fails
here, naming the entry, the arch and the key, before any data is read. It then writes `<train.code_dir>/M.json`: the
arch and every source file its module imports (`mlic.deps`), with their hashes, the digest of each feature folder
M (or its teacher) reads (HOG, proposals), and for a distilled model its teacher's entry (what stage `teacher`
trains). `train@M-<fold>` depends on that file rather than on every model's code and every feature folder, so
adding or editing another architecture, or a feature only other models read, leaves M's training alone: this stage
reruns (seconds), writes the same bytes, and DVC skips the training. It also checks that dvc.yaml has the stages
the params need (`mlic.pipeline.check_stage_list`).
"""

from __future__ import annotations

from pathlib import Path

from mlic import deps
from mlic.config import Config
from mlic.io import write_json
from mlic.models.registry import resolve_model
from mlic.pipeline import check_stage_list, feature_digests


def main(cfg: Config, model: str | None = None) -> None:
    """Write `<train.code_dir>/<model>.json` (default model: the first of train.models)."""
    model = model or cfg.train.models[0]
    resolved = resolve_model(cfg, model)
    check_stage_list(cfg)  # a dvc.yaml generated for other params lacks a stage this model (or another) needs
    arch, root = resolved.spec.name, deps.source_root()
    modules = [m for name in resolved.arch_names() for m in deps.arch_modules(name, root)]  # nested ones too
    files = deps.relative_files(sorted(set(modules)), root)
    out = Path(cfg.train.code_dir) / f"{model}.json"
    teacher = resolved.config.teacher_entry()  # a distilled model's: stage teacher reads it here
    features = feature_digests(cfg, resolved)  # the train stage's dep on exactly the features its model reads
    record = {"arch": arch, "files": deps.file_hashes(files)} | ({"features": features} if features else {})
    write_json(out, record | ({"teacher": teacher.to_dict()} if teacher is not None else {}))
    print(f"code {model}: arch {arch}, {len(files)} source files, features {sorted(features) or 'image only'} -> {out}")
