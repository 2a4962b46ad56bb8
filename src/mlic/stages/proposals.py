"""Stage `proposals`: exactly `proposals.max_boxes` region proposals for every cached view of every image.

`mlic proposals` writes `<proposals.out_dir>/`: `train_boxes.npy` and `test_boxes.npy` (N, views, R, 5) float32 boxes
(x, y, w, h, score) in pixels of the cached image, and the resolved `proposals` section. `windows` and
`selective_search` look at one image at a time. `cam` reads the folds of stage `cam_model`
(`proposals.cam.run_dir`): a training row's boxes come from the fold model that did not train on it, a test
image's from the mean of the folds' maps.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mlic.config import Config, save_config
from mlic.errors import ConfigError, MlicError
from mlic.features.proposal_store import (
    StoredProposals,
    cam_proposals_of_views,
    proposals_of_views,
    save_proposals,
)
from mlic.io import atomic_path
from mlic.layout import CHECKPOINT, CONFIG_FILE, Prepared, load_folds, load_prepared


def class_maps_of(fold_models):
    """(B, S, S, 3) uint8 views -> ((B, C, h, w) class maps, (B, C) scores), averaged over `fold_models`."""
    import torch

    def run(views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = 0.0, 0.0
        image = torch.from_numpy(np.ascontiguousarray(views.transpose(0, 3, 1, 2)))
        for fm in fold_models:
            x = fm.runtime.inputs({"image": image})["image"]
            with torch.no_grad():
                m, logits = fm.net.class_maps(x)
            maps, scores = maps + m.float().cpu().numpy(), scores + torch.sigmoid(logits.float()).cpu().numpy()
        return maps / len(fold_models), scores / len(fold_models)

    return run


def cam_proposals_of_run(cfg: Config, prep: Prepared) -> StoredProposals:
    """Boxes of every view from the CAM model's folds (out-of-fold for training rows, the fold mean for test)."""
    import torch

    from mlic.loop.fold_model import load_fold_model

    run_dir, device = Path(cfg.proposals.cam.run_dir), torch.device("cpu")
    folds = load_folds(cfg.folds.out_file, prep.train_ids)
    models = {}
    for fold in cfg.train.folds:
        if not (run_dir / f"fold_{fold}" / CHECKPOINT).is_file():
            raise MlicError(f"no trained CAM model for fold {fold}", path=run_dir / f"fold_{fold}",
                            fix="run stage cam_model (`dvc repro cam_model`) with proposals.method: cam")  # fmt: skip
        models[fold] = load_fold_model(run_dir / f"fold_{fold}", device)
        if not hasattr(models[fold].net, "class_maps"):
            raise ConfigError(f"proposals.cam.model: the arch of {models[fold].model!r} has no class activation maps",
                              fix="name a baseline entry in proposals.cam.model")  # fmt: skip
    batch, p = cfg.proposals.cam.batch_size, cfg.proposals
    every = class_maps_of(list(models.values()))
    train = np.zeros((*prep.train_images.shape[:2], p.max_boxes, 5), dtype=np.float32)
    for fold in np.unique(folds):
        rows = np.flatnonzero(folds == fold)
        maps = class_maps_of([models[fold]]) if fold in models else every
        train[rows] = cam_proposals_of_views(np.asarray(prep.train_images[rows]), maps, p, batch)
    test = cam_proposals_of_views(np.asarray(prep.test_images), every, p, batch)
    return StoredProposals(train, test)


def main(cfg: Config) -> None:
    """Write `<proposals.out_dir>/`: the boxes of every train and test view, and the resolved config."""
    prep, p = load_prepared(cfg.prepare.out_dir), cfg.proposals
    start = time.perf_counter()
    if p.method == "cam":
        stored = cam_proposals_of_run(cfg, prep)
    else:
        train = proposals_of_views(prep.train_images, p, f"{p.method} train")
        stored = StoredProposals(train, proposals_of_views(prep.test_images, p, f"{p.method} test"))
    seconds = time.perf_counter() - start
    with atomic_path(p.out_dir, is_dir=True) as out:
        save_proposals(out, stored)
        save_config(cfg, out / CONFIG_FILE, sections=("proposals",) if p.method != "cam" else ("proposals", "folds"))
    views = stored.train.shape[0] * stored.train.shape[1] + stored.test.shape[0] * stored.test.shape[1]
    print(f"proposals: {p.method}, {p.max_boxes} boxes for each of {views} views in {seconds:.1f} s "
          f"({1000 * seconds / max(views, 1):.2f} ms per view) -> {p.out_dir}")  # fmt: skip
