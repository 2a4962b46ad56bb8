"""Stage `code`: check one trained model's entry against its architecture, and record that architecture's sources.

`mlic code --model M` resolves `models.M` with its architecture's config class, so an unknown or mistyped key fails
here, naming the entry, the arch and the key, before any data is read. It then writes `<train.code_dir>/M.json`: the
arch and every source file its module imports (`mlic.deps`), with their hashes, and for a distilled model its
teacher's entry (what stage `teacher` trains). `train@M-<fold>` depends on that file
rather than on every model's code, so adding or editing another architecture leaves M's training alone: this stage
reruns (seconds), writes the same bytes, and DVC skips the training.
"""

from __future__ import annotations

from pathlib import Path

from mlic import deps
from mlic.config import Config
from mlic.io import write_json
from mlic.models.registry import resolve_model


def main(cfg: Config, model: str | None = None) -> None:
    """Write `<train.code_dir>/<model>.json` (default model: the first of train.models)."""
    model = model or cfg.train.models[0]
    resolved = resolve_model(cfg, model)
    arch, root = resolved.spec.name, deps.source_root()
    modules = [m for name in resolved.arch_names() for m in deps.arch_modules(name, root)]  # nested ones too
    files = deps.relative_files(sorted(set(modules)), root)
    out = Path(cfg.train.code_dir) / f"{model}.json"
    teacher = resolved.config.teacher_entry()  # a distilled model's: stage teacher reads it here
    record = {"arch": arch, "files": deps.file_hashes(files)}
    write_json(out, record | ({"teacher": teacher.to_dict()} if teacher is not None else {}))
    print(f"code {model}: arch {arch}, {len(files)} source files -> {out}")
