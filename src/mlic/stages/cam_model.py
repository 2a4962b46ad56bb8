"""Stage `cam_model`: the model whose class activation maps give the `cam` proposals, trained on one fold.

`mlic cam-model --fold K` trains `models.<proposals.cam.model>` on fold K's training rows into
`<proposals.cam.run_dir>/fold_K/` when `proposals.method` is cam, and writes a marker otherwise (without importing
torch: a second). It is its own stage, not `train@<model>-K`, because every train stage depends on the proposals
(DVC has no per-item dependencies), which would make a cycle.
"""

from __future__ import annotations

from pathlib import Path

from mlic.config import Config
from mlic.layout import save_marker


def main(cfg: Config, fold: int) -> None:
    """Train the CAM model on fold `fold`, or write the marker when proposals are not `cam`."""
    cam = cfg.proposals.cam
    out = Path(cam.run_dir) / f"fold_{fold}"
    if cfg.proposals.method != "cam":
        save_marker(out, f"proposals.method is {cfg.proposals.method}, not cam")
        print(f"cam_model fold {fold}: not needed -> {out}")
        return
    from mlic.train.auxiliary import train_auxiliary  # torch, only when there is something to train

    train_auxiliary(cfg, f"{cam.model}-cam", cfg.model(cam.model), fold, out)  # its own resume folder
    print(f"cam_model fold {fold}: {cam.model} trained -> {out}")
