"""SCA: context boxes, FPN and RoI shapes, the multi-level RoIAlign, the five loss parts, patch and box targets."""

import re
from collections import OrderedDict

import numpy as np
import pytest
import torch
from conftest import arch_model
from torchvision.ops import MultiScaleRoIAlign

from mlic.config import config_from_dict
from mlic.errors import ConfigError
from mlic.features.proposals import NO_OBJECTNESS, enlarge, windows
from mlic.models import sca as sca_module
from mlic.models.regions import boxes_to_rois, enlarge_boxes
from mlic.models.sca import (
    IGNORE,
    MultiLevelRoIAlign,
    ScaConfig,
    ScaOutputs,
    ScaTask,
    box_corners,
    patch_targets,
    regression_targets,
    roi_levels,
)
from mlic.tasks.base import FoldRun

pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: see conftest.one_torch_thread

NUM_CLASSES = 5
SMALL = {"backbone": "resnet10t", "fpn_channels": 16, "hidden": 32}  # the training tests' model: quick on a CPU


def random_boxes(batch: int, count: int, size: int, seed: int = 0) -> torch.Tensor:
    """(B, R, 5) boxes inside a `size` image, 2 px up to the whole image, random scores in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    wh = 2 + torch.rand(batch, count, 2, generator=gen) * (size - 2)
    xy = torch.rand(batch, count, 2, generator=gen) * (size - wh)
    return torch.cat([xy, wh, torch.rand(batch, count, 1, generator=gen)], dim=-1)


def labelled_boxes(batch: int, size: int) -> torch.Tensor:
    """Per image: a pseudo-object, a shifted copy of it (IoU 0.78, ignored), a background box, an in-between one."""
    s = size / 8
    one = torch.tensor([[2 * s, 2 * s, 4 * s, 4 * s, 0.9], [2.5 * s, 2 * s, 4 * s, 4 * s, 0.3],
                        [0, 0, 2 * s, 2 * s, 0.1], [4 * s, 5 * s, 3 * s, 3 * s, 0.35]])  # fmt: skip
    return one.expand(batch, -1, -1).clone()


def train_step(model, task, size: int = 64, batch: int = 2):
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.float32)[:batch]
    task.setup(target.numpy())
    step = task.training_step(model.train(), {"image": images, "boxes": labelled_boxes(batch, size), "target": target})
    step.loss.backward()
    return step


def test_context_boxes_grow_about_their_centres_and_stay_in_the_image():
    size, kappa = 96, 1.8
    boxes = random_boxes(1, 50, size)[0]
    grown = enlarge_boxes(boxes[None], kappa, size)[0]
    expected = enlarge(boxes.numpy(), kappa, size, size)  # the numpy twin (it drops empty boxes: none here)
    np.testing.assert_allclose(grown.numpy(), expected, rtol=0, atol=1e-4)
    corners = box_corners(grown)
    assert (corners >= 0).all() and (corners <= size).all()
    centred = torch.tensor([[[36.0, 40.0, 24.0, 16.0, 0.7]]])  # centre (48, 48), room to grow 1.8 times
    torch.testing.assert_close(enlarge_boxes(centred, kappa, size), torch.tensor([[[26.4, 33.6, 43.2, 28.8, 0.7]]]))


def test_fpn_levels_patch_features_and_every_processor_have_their_shapes():
    model, _ = arch_model("sca", NUM_CLASSES, backbone="resnet18")  # the defaults: 256 FPN channels, 1024 hidden
    batch, count, size = 2, 3, 128
    images, boxes = torch.randn(batch, 3, size, size), random_boxes(batch, count, size)
    with torch.no_grad():
        levels = model.pyramid(images)
        assert list(levels) == ["0", "1", "2", "3"]
        assert [tuple(v.shape) for v in levels.values()] == [(batch, 256, size // s, size // s) for s in (4, 8, 16, 32)]
        out = model.train().parts(images, boxes)
        scores = model.eval()(images, boxes)
    assert isinstance(out, ScaOutputs)
    assert out.f_obj.shape == out.f_ctx.shape == (batch, count, 1024)
    for logits in (out.global_logits, out.object_logits, out.context_logits):
        assert logits.shape == (batch, NUM_CLASSES)
    assert out.patch_logits.shape == (batch, count, 2) and out.deltas.shape == (batch, count, 4)
    assert scores.shape == (batch, NUM_CLASSES) and ((scores >= 0) & (scores <= 1)).all()


def test_multi_level_roi_align_is_torchvisions_multi_scale_roi_align():
    """Same levels (FPN eq. 1) and patches, from one roi tensor instead of a list per image (so it exports)."""
    size, batch = 512, 2  # FPN eq. 1 with s0 = 512: P4 pools boxes of side 512, P3 from 256, P2 the smaller ones
    gen = torch.Generator().manual_seed(0)
    maps = OrderedDict((str(i), torch.randn(batch, 4, size // s, size // s, generator=gen)) for i, s in
                       enumerate((4, 8, 16, 32)))  # fmt: skip
    boxes = random_boxes(batch, 40, size, seed=3)
    boxes[:, :4, :4] = torch.tensor([0.0, 0.0, size, size])
    rois = boxes_to_rois(boxes)
    assert set(roi_levels(rois, 2, 4, size).tolist()) == {0, 1, 2}  # P5 pools none: that takes a side of 1024 px
    reference = MultiScaleRoIAlign(list(maps), 7, 2, canonical_scale=size)
    reference = reference(maps, list(box_corners(boxes)), [(size, size)] * batch)
    torch.testing.assert_close(MultiLevelRoIAlign(7)(list(maps.values()), rois, size), reference)


def rois_per_level(size: int, boxes: torch.Tensor, monkeypatch) -> list[int]:
    """How many of the (1, R, 5) boxes MultiLevelRoIAlign pools from each level (P2..P5) of `size` px images."""
    counts = []

    def counting_roi_align(feature_map, rois, *args, **kwargs):
        counts.append(len(rois))
        return torchvision_roi_align(feature_map, rois, *args, **kwargs)

    torchvision_roi_align = sca_module.roi_align
    monkeypatch.setattr(sca_module, "roi_align", counting_roi_align)
    maps = [torch.zeros(1, 2, size // stride, size // stride) for stride in (4, 8, 16, 32)]
    MultiLevelRoIAlign(7)(maps, boxes_to_rois(boxes), size)
    return counts


def test_at_64_px_the_windows_spread_over_the_fpn_levels_and_at_224_px_follow_the_paper(monkeypatch):
    """FPN eq. 1 with s0 the image side: at 64 px, not every box on P2; at 224 px, the paper's s0 = 224."""
    grid = torch.from_numpy(windows(64, 64, 1000))[None]  # every window of a 64 px image, the whole image first
    # the whole image on P4; sides 32-63 px (scales 0.6, 0.8, and 1.0 at aspects 2 and 1/2) on P3; the rest on P2
    side = (grid[0, :, 2] * grid[0, :, 3]).sqrt()
    expected = [int((side < 32).sum()), int(((side >= 32) & (side < 64)).sum()), int((side >= 64).sum()), 0]
    assert rois_per_level(64, grid, monkeypatch) == expected and min(expected[:3]) > 0
    size = 224
    boxes = torch.cat([torch.from_numpy(windows(size, size, 1000))[None], random_boxes(1, 100, size, seed=5)], 1)
    maps = OrderedDict((str(i), torch.randn(1, 3, size // s, size // s)) for i, s in enumerate((4, 8, 16, 32)))
    paper = MultiScaleRoIAlign(list(maps), 7, 2)  # torchvision's defaults: eq. 1 with 224 px on P4
    reference = paper(maps, list(box_corners(boxes)), [(size, size)])
    torch.testing.assert_close(MultiLevelRoIAlign(7)(list(maps.values()), boxes_to_rois(boxes), size), reference)
    corners = torch.tensor([[0, 0, 0, 224, 224], [0, 0, 0, 112, 112], [0, 0, 0, 111, 111]], dtype=torch.float32)
    assert roi_levels(corners, 2, 4, size).tolist() == [2, 1, 0]  # 224 px on P4, 112 px on P3, below on P2


def test_top_up_boxes_without_objectness_are_neither_objects_nor_background():
    scores = torch.tensor([[0.9, NO_OBJECTNESS, 0.1, NO_OBJECTNESS]])
    assert patch_targets(scores, 0.5, 0.2).tolist() == [[1, IGNORE, 0, IGNORE]]
    boxes = labelled_boxes(1, 64)
    boxes[0, 0, 4] = NO_OBJECTNESS  # the former pseudo-object, now a top-up: nothing regresses toward it
    matched, _ = regression_targets(boxes, object_score=0.5)
    assert not matched.any()


def run_on(method: str) -> FoldRun:
    """A fold run of models entry `sca` under proposals.method `method`."""
    cfg = config_from_dict({"proposals": {"method": method}})
    return FoldRun(cfg, "sca", 0, np.arange(4), torch.device("cpu"))


def test_windows_proposals_refuse_the_regressor_and_patch_classifier_before_training():
    """Window scores are scales: every window a pseudo-object regressing onto itself, so bind refuses them."""
    for options, keys in (({}, "regression and patch_weight > 0"), ({"regression": False}, "patch_weight > 0"),
                          ({"patch_weight": 0.0}, "regression")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"models.sca: {re.escape(keys)} train") as info:
            ScaTask(ScaConfig(**SMALL, **options)).bind(run_on("windows"))
        assert "proposals.method 'windows'" in str(info.value)
        assert "models.sca.regression: false and models.sca.patch_weight: 0" in info.value.fix
    ScaTask(ScaConfig(**SMALL, regression=False, patch_weight=0.0)).bind(run_on("windows"))  # the label losses only
    for method in ("cam", "selective_search"):  # scores that say how object-like a box is
        ScaTask(ScaConfig(**SMALL)).bind(run_on(method))


def test_training_step_parts_sum_to_the_loss_and_reach_every_module():
    model, task = arch_model("sca", NUM_CLASSES, **SMALL)
    step = train_step(model, task)
    assert set(step.parts) == {"global", "object", "context", "patch", "regression"}
    assert torch.isfinite(step.loss)
    torch.testing.assert_close(sum(step.parts.values()), step.loss.detach())
    assert step.parts["regression"] > 0  # the shifted copy regresses toward its pseudo-object
    for name, module in model.named_children():  # the pooling has no parameters
        grads = [p.grad for p in module.parameters()]
        assert name == "pool" or grads, name
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert not grads or sum(g.abs().sum() for g in grads) > 0, name

    model, task = arch_model("sca", NUM_CLASSES, **SMALL, regression=False)
    step = train_step(model, task)
    assert model.regressor is None and step.parts["regression"] == 0
    assert all(p.grad is not None for p in model.parameters())  # no idle parameter (DistributedDataParallel)


def test_patch_targets_follow_the_box_scores():
    scores = torch.tensor([[0.95, 0.5, 0.35, 0.2, 0.0]])
    assert patch_targets(scores, 0.5, 0.2).tolist() == [[1, 1, IGNORE, 0, 0]]
    _, task = arch_model("sca", NUM_CLASSES, **SMALL)
    ignored = task.patch_loss(torch.randn(1, 3, 2, requires_grad=True), torch.full((1, 3), 0.3))
    assert ignored.item() == 0 and ignored.requires_grad  # nothing labelled: 0, not 0 / 0


def test_each_proposal_regresses_toward_its_best_overlapping_pseudo_object():
    boxes = labelled_boxes(1, 64)
    boxes[0, 3] = torch.tensor([16.0, 16.0, 32.0, 16.0, 0.1])  # inside the pseudo-object, IoU 0.5: matched
    matched, pseudo = regression_targets(boxes, object_score=0.5)
    assert matched.tolist() == [[True, True, False, True]]
    torch.testing.assert_close(pseudo[0, [0, 1, 3]], box_corners(boxes[0, :1]).expand(3, -1))


def test_with_only_the_global_weight_the_scores_are_its_sigmoid():
    model, _ = arch_model("sca", NUM_CLASSES, **SMALL, object_weight=0.0, context_weight=0.0)
    images, boxes = torch.randn(2, 3, 64, 64), random_boxes(2, 3, 64)
    with torch.no_grad():
        out = model.eval().parts(images, boxes)
        torch.testing.assert_close(model(images, boxes), torch.sigmoid(out.global_logits))


def test_bf16_autocast_on_cpu_gives_a_finite_loss_and_gradients():
    model, task = arch_model("sca", NUM_CLASSES, **SMALL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step = train_step(model, task)
    assert torch.isfinite(step.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"kappa": 0.5}, "kappa"),
        ({"object_score": 0.1}, "object_score"),  # below the background score
        ({"feature_indices": [1, 3]}, "feature_indices"),
        ({"hidden": 0}, "hidden"),
        ({"patch_weight": -1.0}, "patch_weight"),
        ({"global_weight": 0.0, "object_weight": 0.0, "context_weight": 0.0}, "global_weight"),
    ],
)
def test_bad_settings_are_config_errors(options, key):
    with pytest.raises(ConfigError, match=key):
        arch_model("sca", NUM_CLASSES, **options)
