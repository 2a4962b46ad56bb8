"""The task contract, proved by an architecture that exists only in this test.

`probe` is registered from here with its own config class, an extra batch source (each view's channel means), two
phases (the first freezes the backbone), an auxiliary loss, and a `predict_step` that is not a plain sigmoid. It runs
through `mlic train`, `mlic predict` and `mlic export-onnx` untouched, and the test checks that:
- the frozen parameters (and batch-norm statistics) are bit-identical after phase 1, and train in phase 2;
- both loss parts are logged per epoch, and the second phase runs at its LR scale;
- `predict_step` is what validation, the OOF and test predictions, `mlic predict` and the ONNX graph compute.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import mlic.train.fold
from mlic.cli import main
from mlic.config import Config, load_config
from mlic.layout import Prepared, load_prepared, load_training_curves
from mlic.loop.batches import CachedSamples, expand_views
from mlic.loop.fold_model import load_fold_model
from mlic.loop.tta import predict_loader, tta_views
from mlic.models.backbones import BackboneConfig, create_backbone, feature_channels, feature_map
from mlic.models.registry import ARCHS, ArchSpec, ModelDims
from mlic.sources import SOURCES, Source, SourceData, Standardise
from mlic.tasks.base import Phase, StepOutput, Task
from mlic.thresholds import best_global_threshold

pytestmark = pytest.mark.slow
EPOCHS, HEAD_EPOCHS, LR = 3, 2, 0.01


def channel_means(views: np.ndarray) -> np.ndarray:
    """(N, V, S, S, 3) uint8 views -> (N, V, 3) float32 channel means in [0, 1]: the extra source."""
    return (np.asarray(views, dtype=np.float32).mean(axis=(2, 3)) / 255.0).astype(np.float32)


def _load_probe(cfg: Config, root: Path, prep: Prepared) -> SourceData:
    train = channel_means(prep.train_images)
    return SourceData(train, channel_means(prep.test_images), {"mean": train.mean(axis=(0, 1)),
                                                                "std": train.std(axis=(0, 1)) + 1e-3})  # fmt: skip


PROBE_SOURCE = Source(
    name="probe",
    load=_load_probe,
    sample=lambda item, transform: torch.from_numpy(np.asarray(item, dtype=np.float32)),
    normaliser=lambda stats: Standardise(stats["mean"], stats["std"]),
    from_views=lambda views, cfg: channel_means(views),
    example=lambda batch, cfg, stats: torch.rand(batch, 3, generator=torch.Generator().manual_seed(0)),
)


@dataclasses.dataclass(frozen=True)
class ProbeConfig(BackboneConfig):
    head_epochs: int = 1  # phase 1: the heads alone
    aux_weight: float = 0.5
    temperature: float = 2.0  # predict_step's sigmoid(logits / temperature): a mapping no default would guess


class ProbeNet(nn.Module):
    """Backbone features and the probe vector into one head; an auxiliary head on the probe vector alone."""

    def __init__(self, cfg: ProbeConfig, dims: ModelDims):
        super().__init__()
        self.backbone = create_backbone(cfg)
        width = dims.dim("probe")
        self.head = nn.Linear(feature_channels(self.backbone) + width, dims.num_classes)
        self.aux = nn.Linear(width, dims.num_classes)

    def forward(self, image: torch.Tensor, probe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = feature_map(self.backbone, image).mean(dim=(2, 3))
        return self.head(torch.cat([pooled, probe], dim=1)), self.aux(probe)


class ProbeTask(Task):
    sources = ("image", "probe")

    def phases(self, epochs: int) -> list[Phase]:
        head = self.cfg.head_epochs
        return [Phase("heads", head, trainable=("head.", "aux.")), Phase("all", epochs - head, lr_scale=0.5)]

    def training_step(self, net, batch):
        logits, aux_logits = net(*self.inputs(batch))
        main = F.binary_cross_entropy_with_logits(logits.float(), batch["target"])
        aux = self.cfg.aux_weight * F.binary_cross_entropy_with_logits(aux_logits.float(), batch["target"])
        return StepOutput(main + aux, {"main": main.detach(), "aux": aux.detach()})

    def predict_step(self, net, batch):
        return torch.sigmoid(net(*self.inputs(batch))[0].float() / self.cfg.temperature)


@pytest.fixture(scope="module", autouse=True)
def probe_registered():
    """The probe source and architecture, registered from this module only while its tests run."""
    with SOURCES.registered("probe", PROBE_SOURCE), ARCHS.registered("probe", ArchSpec("probe", ProbeConfig, ProbeNet,
                                                                                          ProbeTask)):  # fmt: skip
        yield


@pytest.fixture(scope="module")
def project(sample_competition, tmp_path_factory, probe_registered):
    """A run folder: prepare and folds, then `mlic train` of the probe on fold 0 (observed per epoch), then the
    ensemble and thresholds, so that `mlic predict` and `mlic export-onnx` can open it."""
    root = tmp_path_factory.mktemp("contract")
    params = {
        "data": {"root": str(sample_competition), "min_label_count": 1},
        "prepare": {"image_size": 32},
        "folds": {"n_splits": 2},
        "models": {"probe": {"arch": "probe", "backbone": "resnet10t", "head_epochs": HEAD_EPOCHS}},
        "train": {"models": ["probe"], "folds": [0], "epochs": EPOCHS, "warmup_epochs": 0, "min_lr_ratio": 1.0,
                  "lr": LR, "batch_size": 8, "tta": "flips", "device": "cpu"},
        "thresholds": {"compare_methods": ["global"]},
    }  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    snapshots = []
    original = mlic.train.fold.save_checkpoint

    def observe(engine, path, run_hash):  # the resume checkpoint each epoch writes: keep a copy of the weights
        snapshots.append(copy.deepcopy(engine.model.state_dict()))
        original(engine, path, run_hash)

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setattr(mlic.train.fold, "save_checkpoint", observe)
        for command in (["prepare"], ["folds"], ["train", "--model", "probe", "--fold", "0"], ["ensemble"],
                        ["thresholds"]):  # fmt: skip
            assert main(["--params", "params.yaml", *command]) == 0, command
    return root, snapshots


def initial_weights(root: Path) -> dict[str, torch.Tensor]:
    """The probe's weights before training: the train stage seeds the init with train.seed."""
    cfg = load_config(root / "params.yaml")
    classes = load_prepared(root / cfg.prepare.out_dir).classes
    torch.manual_seed(cfg.train.seed)
    dims = ModelDims(len(classes), {"image": 3, "probe": 3})
    return ProbeNet(ProbeConfig(backbone="resnet10t", head_epochs=HEAD_EPOCHS), dims).state_dict()


def test_phase_one_leaves_the_frozen_backbone_bit_identical(project):
    root, snapshots = project
    assert len(snapshots) == EPOCHS
    start, after_heads, after_all = initial_weights(root), snapshots[HEAD_EPOCHS - 1], snapshots[-1]
    assert set(start) == set(after_heads)
    backbone = [k for k in start if k.startswith("backbone.")]
    assert backbone and all(torch.equal(after_heads[k], start[k]) for k in backbone)  # weights and BN statistics
    assert not torch.equal(after_heads["head.weight"], start["head.weight"])  # the heads trained meanwhile
    assert not torch.equal(after_heads["aux.weight"], start["aux.weight"])
    weights = [k for k in backbone if k.endswith(".weight")]
    moved = [k for k in weights if not torch.equal(after_all[k], after_heads[k])]
    assert len(moved) == len(weights)  # phase 2 trains the whole backbone


def test_both_loss_parts_are_logged_per_epoch_and_phase_two_runs_at_its_lr_scale(project):
    root, _ = project
    curves = load_training_curves(root / "data/processed/train/probe/fold_0")
    assert list(curves["epoch"]) == [1, 2, 3]
    assert {"train_loss", "train_loss_main", "train_loss_aux", "val_f2", "lr"} <= set(curves.columns)
    np.testing.assert_allclose(curves["train_loss"], curves["train_loss_main"] + curves["train_loss_aux"], rtol=1e-5)
    assert (curves["train_loss_aux"] > 0).all() and (curves["train_loss_main"] > 0).all()
    np.testing.assert_allclose(curves["lr"], [LR, LR, LR * 0.5], rtol=1e-6)  # flat schedule, then the phase scale


def reference_scores(net: ProbeNet, fm, arrays: dict[str, np.ndarray], views) -> np.ndarray:
    """sigmoid(logits / temperature) averaged over the views, computed here without the pipeline's functions."""
    stats = fm.stats
    image = torch.from_numpy(np.ascontiguousarray(arrays["image"][:, 0].transpose(0, 3, 1, 2))).float() / 255.0
    image = (image - stats["image"]["mean"].view(1, 3, 1, 1)) / stats["image"]["std"].view(1, 3, 1, 1)
    probe = (torch.from_numpy(arrays["probe"][:, 0]) - stats["probe"]["mean"]) / stats["probe"]["std"]
    with torch.no_grad():
        scores = [torch.sigmoid(net.eval()(view(image), probe)[0] / 2.0) for view in views]
    return torch.stack(scores).mean(dim=0).numpy()


def test_predict_step_feeds_validation_and_the_fold_predictions(project):
    root, _ = project
    fold_dir = root / "data/processed/train/probe/fold_0"
    fm = load_fold_model(fold_dir, torch.device("cpu"))
    with np.load(fold_dir / "oof.npz") as saved:
        rows, oof = saved["rows"], saved["probs"]
    prep = load_prepared(root / "data/processed/prepare")
    arrays = {"image": prep.train_images[rows], "probe": channel_means(prep.train_images[rows])}
    np.testing.assert_allclose(oof, reference_scores(fm.net, fm, arrays, tta_views("flips")), atol=1e-5)
    # validation after the last epoch: the same predict_step, without TTA, scored at the best shared threshold
    loader = torch.utils.data.DataLoader(CachedSamples(arrays, *expand_views(np.arange(len(rows)), 1)), 8)
    plain = predict_loader(fm.task, fm.net, loader, fm.runtime, tta_views("none"))
    np.testing.assert_allclose(plain, reference_scores(fm.net, fm, arrays, tta_views("none")), atol=1e-5)
    _, score = best_global_threshold(plain, prep.labels[rows], 2.0, min_labels=0, step=0.05)
    logged = load_training_curves(fold_dir)["val_f2"].iloc[-1]
    assert score == pytest.approx(logged, abs=1e-6)


def test_predict_step_feeds_mlic_predict_and_the_onnx_graph(project, sample_competition, tmp_path):
    root, _ = project
    test_probs = np.load(root / "data/processed/train/probe/fold_0/test.npy")
    out = tmp_path / "predictions.csv"
    assert main(["predict", "--run", str(root), str(sample_competition / "test-jpg"), "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    prep = load_prepared(root / "data/processed/prepare")
    order = [Path(p).stem for p in frame["image"]]
    assert sorted(order) == sorted(prep.test_ids)
    expected = test_probs[[prep.test_ids.index(i) for i in order]]
    np.testing.assert_allclose(frame[prep.classes].to_numpy(), expected, atol=2e-6)  # the CSV's 6 decimals

    onnx_file = tmp_path / "probe.onnx"
    assert main(["export-onnx", "--run", str(root), "--model", "probe", "--fold", "0", "--out", str(onnx_file)]) == 0
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "probe"]
    images = np.ascontiguousarray(prep.test_images[:, 0])
    probe = channel_means(prep.test_images)[:, 0]
    onnx_probs = session.run(["probs"], {"image": images, "probe": probe})[0]
    np.testing.assert_allclose(onnx_probs, test_probs, atol=1e-4)
