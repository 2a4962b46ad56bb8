"""SCA: context boxes, FPN and RoI shapes, the multi-level RoIAlign, the five loss parts, patch and box targets."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from conftest import arch_model
from torchvision.ops import MultiScaleRoIAlign

from mlic.errors import ConfigError
from mlic.features.proposals import enlarge
from mlic.models.regions import boxes_to_rois, enlarge_boxes
from mlic.models.sca import (
    IGNORE,
    MultiLevelRoIAlign,
    ScaOutputs,
    box_corners,
    patch_targets,
    regression_targets,
    roi_levels,
)

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
    size, batch = 512, 2  # P5 only pools boxes of side >= 448 px (FPN eq. 1: 224 px boxes pool from P4)
    gen = torch.Generator().manual_seed(0)
    maps = OrderedDict((str(i), torch.randn(batch, 4, size // s, size // s, generator=gen)) for i, s in
                       enumerate((4, 8, 16, 32)))  # fmt: skip
    boxes = random_boxes(batch, 40, size, seed=3)
    boxes[:, :4, :4] = torch.tensor([0.0, 0.0, size, size])
    rois = boxes_to_rois(boxes)
    assert set(roi_levels(rois, 2, 4).tolist()) == {0, 1, 2, 3}  # every level pools some boxes
    reference = MultiScaleRoIAlign(list(maps), 7, 2)(maps, list(box_corners(boxes)), [(size, size)] * batch)
    torch.testing.assert_close(MultiLevelRoIAlign(7)(list(maps.values()), rois, size), reference)


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
