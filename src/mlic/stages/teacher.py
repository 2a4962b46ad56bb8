"""Stage `teacher`: the teacher of a distilled model (kd_wsd), trained on one fold's training rows.

`mlic teacher --model M --fold K` writes `<train.teacher_dir>/M/fold_K/` (a fold folder: checkpoint, predictions,
config). dvc.yaml has this stage only for the models whose entry names a teacher, and `train-M-K` depends on its
folder; the student checks the teacher's recorded training rows against its own, so no validation label of fold K
reaches the student through its teacher.
"""

from __future__ import annotations

from mlic.config import Config
from mlic.errors import ConfigError
from mlic.models.registry import resolve_model
from mlic.train.auxiliary import train_auxiliary


def main(cfg: Config, fold: int, model: str | None = None) -> None:
    """Train model `model`'s teacher (default: the first of train.models) on fold `fold`.

    Raises:
        ConfigError: If the model's entry names no teacher.
    """
    model = model or cfg.train.models[0]
    entry = resolve_model(cfg, model).config.teacher_entry()
    if entry is None:
        raise ConfigError(f"models.{model} names no teacher", fix="train a distilled model's teacher (e.g. kd_wsd)")
    out = cfg.teacher_dir(model, fold)
    train_auxiliary(cfg, f"{model}-teacher", entry, fold, out)
    print(f"teacher {model} fold {fold}: {entry.arch} trained on the fold's training rows -> {out}")
