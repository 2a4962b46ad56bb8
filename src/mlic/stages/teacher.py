"""Stage `teacher`: the teacher of a distilled model (kd_wsd), trained on one fold's training rows.

`mlic teacher --model M --fold K` writes `<train.teacher_dir>/M/fold_K/`: the teacher's fold folder when the entry
names a teacher, else a marker. Whether it does is read from the model's code record (stage `code@M`, which resolved
the entry with its architecture's config class), so a marker costs no torch import. `train@M-K` depends on that
folder, and the student checks the teacher's recorded training rows against its own (`mlic.models.kd_wsd`), so no
validation label of fold K reaches the student through its teacher.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlic.config import Config, ModelEntry, model_entry
from mlic.errors import MlicError
from mlic.layout import save_marker


def teacher_of(cfg: Config, model: str) -> ModelEntry | None:
    """The teacher entry recorded by stage `code@<model>`, or None.

    Raises:
        MlicError: If the record is missing (run the code stage first).
    """
    record = Path(cfg.train.code_dir) / f"{model}.json"
    if not record.is_file():
        raise MlicError("no code record of the model", path=record, fix=f"run `mlic code --model {model}` first")
    teacher = json.loads(record.read_text()).get("teacher")
    return None if teacher is None else model_entry(f"{record}: teacher", teacher)


def main(cfg: Config, fold: int, model: str | None = None) -> None:
    """Train model `model`'s teacher (default: the first of train.models) on fold `fold`, or write the marker."""
    model = model or cfg.train.models[0]
    entry = teacher_of(cfg, model)
    out = cfg.teacher_dir(model, fold)
    if entry is None:
        save_marker(out, f"models.{model} has no teacher")
        print(f"teacher {model} fold {fold}: none needed -> {out}")
        return
    from mlic.train.auxiliary import train_auxiliary  # torch, only when there is something to train

    train_auxiliary(cfg, f"{model}-teacher", entry, fold, out)
    print(f"teacher {model} fold {fold}: {entry.arch} trained on the fold's training rows -> {out}")
