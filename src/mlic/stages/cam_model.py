"""Stage `cam_model`: the model whose class activation maps give the `cam` proposals, trained on one fold.

`mlic cam-model --fold K` trains `models.<proposals.cam.model>` on fold K's training rows into
`<proposals.cam.run_dir>/fold_K/`. dvc.yaml has these stages only with `proposals.method: cam`. It is its own stage,
not `train-<model>-K`, because every region model's train stage depends on the proposals, which would make a cycle.
"""

from __future__ import annotations

from pathlib import Path

from mlic.config import Config
from mlic.errors import ConfigError
from mlic.train.auxiliary import train_auxiliary


def main(cfg: Config, fold: int) -> None:
    """Train the CAM model on fold `fold`.

    Raises:
        ConfigError: If proposals.method is not cam (nothing reads the model).
    """
    cam = cfg.proposals.cam
    if cfg.proposals.method != "cam":
        raise ConfigError(
            f"proposals.method is {cfg.proposals.method}, not cam: no CAM model to train",
            fix="set proposals.method: cam, or leave this stage out (`mlic pipeline --write`)",
        )
    out = Path(cam.run_dir) / f"fold_{fold}"
    train_auxiliary(cfg, f"{cam.model}-cam", cfg.model(cam.model), fold, out)  # its own resume folder
    print(f"cam_model fold {fold}: {cam.model} trained -> {out}")
