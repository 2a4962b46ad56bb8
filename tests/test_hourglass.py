"""The hourglass model: per-scale label maps, label SE, top-down merge, pooling choices, deep supervision."""

import pytest
import torch
from conftest import arch_model

from mlic.models.hourglass import POOLINGS
from mlic.tasks.multilabel import split_outputs

NUM_CLASSES = 6


def build(**kw):
    return arch_model("hourglass", NUM_CLASSES, backbone="resnet10t", **kw)[0]


@pytest.mark.parametrize("pooling", POOLINGS.names())
def test_every_pooling_gives_one_logit_per_label(pooling):
    model = build(pooling=pooling)
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()


def test_lse_pooling_lies_between_average_and_max():
    maps = torch.randn(3, NUM_CLASSES, 5, 7)
    avg, lse, mx = (POOLINGS.get(name)(maps) for name in ("avg", "lse", "max"))
    assert (avg <= lse + 1e-6).all() and (lse <= mx + 1e-6).all()


def test_label_maps_come_out_per_label_at_the_finest_scale():
    model = build(feature_indices=(2, 3, 4)).eval()
    maps = model.label_maps(torch.randn(1, 3, 64, 64))
    assert maps.shape == (1, NUM_CLASSES, 8, 8) and ((maps >= 0) & (maps <= 1)).all()
    assert len(model.scale_maps(torch.randn(1, 3, 64, 64))) == 3


def test_deep_supervision_trains_every_scale_and_predicts_plain_logits():
    """The task adds the mean loss of the coarser scales' pooled logits, logged as its own part."""
    model, task = arch_model("hourglass", NUM_CLASSES, backbone="resnet10t", deep_supervision=True)
    target = (torch.rand(2, NUM_CLASSES) > 0.5).float()
    task.setup(target.numpy())
    batch = {"image": torch.randn(2, 3, 64, 64), "target": target}
    model.train()
    torch.manual_seed(1)
    out = model(batch["image"])
    assert set(out) == {"logits", "aux_logits"} and len(out["aux_logits"]) == 3
    logits, aux = split_outputs(out)
    expected_aux = sum(task.loss_fn(a, target) for a in aux) / 3
    step = task.training_step(model, batch)
    assert set(step.parts) == {"main", "deep_supervision"}
    assert step.parts["deep_supervision"].item() == pytest.approx(expected_aux.item(), rel=1e-5)
    assert step.loss.item() == pytest.approx(step.parts["main"].item() + expected_aux.item(), rel=1e-5)
    assert step.parts["deep_supervision"].item() > 0
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, NUM_CLASSES)


def test_top_down_merge_carries_coarse_evidence_to_the_finest_map():
    model = build().eval()
    with torch.no_grad():
        base = model.scale_maps(torch.zeros(1, 3, 64, 64))[0]
        model.to_labels[-1].bias.add_(3.0)  # raise only the coarsest scale's label maps
        raised = model.scale_maps(torch.zeros(1, 3, 64, 64))[0]
    assert (raised - base).mean() > 1.0
