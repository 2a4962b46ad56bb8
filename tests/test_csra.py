"""CSRA: normalised class scores, average + lambda * attention pooling, the official heads' temperatures, summed."""

import pytest
import torch
from conftest import arch_model
from overfit import OVERFIT_LABELS, assert_bf16_training_finite, overfit_losses

from mlic.errors import ConfigError
from mlic.models.csra import HEAD_TEMPERATURES, MAX_TEMPERATURE, CsraHead

NUM_CLASSES = 6


def build(**kw):
    return arch_model("csra", NUM_CLASSES, backbone="resnet10t", **kw)


def normalised_scores(head: CsraHead, x: torch.Tensor) -> torch.Tensor:
    """s_c at every position, written out: w_c . x / ||w_c||, (N, C, H*W)."""
    w = head.classifier.weight[:, :, 0, 0]
    return torch.einsum("cd,ndp->ncp", w / w.norm(dim=1, keepdim=True), x.flatten(2))


@pytest.mark.parametrize("num_heads", sorted(HEAD_TEMPERATURES))
def test_every_head_count_gives_logits_and_gradients(num_heads):
    model, _ = build(num_heads=num_heads)
    assert [h.temperature for h in model.heads] == list(HEAD_TEMPERATURES[num_heads])
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(h.classifier.weight.grad.abs().sum() > 0 for h in model.heads)


def test_bf16_autocast_on_cpu_stays_finite():
    model, task = build(num_heads=6)
    assert_bf16_training_finite(model, task, NUM_CLASSES)


def test_temperature_99_is_mean_plus_lambda_times_max_of_normalised_scores():
    torch.manual_seed(0)
    head = CsraHead(16, NUM_CLASSES, MAX_TEMPERATURE, lam=0.3)
    x = torch.randn(2, 16, 5, 7)
    s = normalised_scores(head, x)
    expected = s.mean(dim=2) + 0.3 * s.max(dim=2).values
    torch.testing.assert_close(head(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature", [1, 2, 5])
def test_finite_temperature_attention_is_its_direct_formula(temperature):
    torch.manual_seed(0)
    head = CsraHead(16, NUM_CLASSES, temperature, lam=0.1)
    x = torch.randn(2, 16, 4, 4)
    s = normalised_scores(head, x).double()
    e = torch.exp(temperature * s)  # softmax over positions, written out
    attention = (e * s).sum(dim=2) / e.sum(dim=2)
    expected = s.mean(dim=2) + 0.1 * attention
    torch.testing.assert_close(head(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_heads_are_summed():
    model, _ = build(num_heads=4)
    model.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.backbone(images)[-1]
        torch.testing.assert_close(model(images), sum(head(features) for head in model.heads))


def test_scores_do_not_depend_on_the_classifier_scale():
    """The normalisation divides out ||w_c||: scaling a class's weights leaves its logit unchanged."""
    torch.manual_seed(0)
    head = CsraHead(16, NUM_CLASSES, 2, lam=0.1)
    x = torch.randn(2, 16, 3, 3)
    before = head(x)
    with torch.no_grad():
        head.classifier.weight[2] *= 7.0
    torch.testing.assert_close(head(x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("options", "key"), [({"num_heads": 3}, "num_heads"), ({"lam": -0.1}, "lam")])
def test_bad_settings_are_config_errors(options, key):
    with pytest.raises(ConfigError, match=key):
        build(**options)


def test_the_classifier_trains_at_ten_times_the_backbones_rate():
    """The official CSRA code's parameter groups: backbone at lr, everything else (the classifier) at 10 x lr."""
    model, task = build()
    names = [name for name, _ in model.named_parameters()]
    head = [name for name in names if not name.startswith("backbone.")]
    assert head and all(task.lr_multiplier(name) == 10.0 for name in head)
    assert all(task.lr_multiplier(name) == 1.0 for name in names if name.startswith("backbone."))


def test_overfits_eight_images():
    model, task = arch_model("csra", OVERFIT_LABELS, backbone="resnet10t", num_heads=2)
    first, last = overfit_losses(model, task)
    assert last < 0.5 * first, (first, last)
