"""ML-Decoder: projected tokens, min(100, C) queries, cross-attention without self-attention, group FC."""

import numpy as np
import pytest
import torch
from conftest import arch_model
from overfit import OVERFIT_LABELS, assert_bf16_training_finite, overfit_losses

from mlic.errors import ConfigError

NUM_CLASSES = 6
SMALL = {"decoder_dim": 64, "num_heads": 4, "ffn_dim": 128}  # a narrow decoder, for speed


def build(num_classes=NUM_CLASSES, **kw):
    return arch_model("ml_decoder", num_classes, backbone="resnet10t", **kw)


def test_default_decoder_gives_logits_and_gradients():
    model, _ = build()
    assert model.queries.shape == (NUM_CLASSES, 768)  # K = min(100, C)
    assert model.decoder.attention.num_heads == 8 and model.decoder.ffn[0].out_features == 2048
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bf16_autocast_on_cpu_stays_finite():
    model, task = build(**SMALL)
    assert_bf16_training_finite(model, task, NUM_CLASSES)


@pytest.mark.parametrize(("num_classes", "group"), [(250, 3), (1103, 12)])
def test_fewer_queries_than_labels_give_every_label(num_classes, group):
    model, _ = build(num_classes, **SMALL)
    assert model.queries.shape[0] == 100 and model.group_fc.weight.shape == (100, 64, group)
    logits = model.eval()(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, num_classes) and torch.isfinite(logits).all()


def test_group_fc_maps_query_k_to_labels_k_g_to_k_g_plus_g():
    model, _ = build(250, **SMALL)
    fc = model.group_fc
    with torch.no_grad():
        fc.bias.normal_()
        h = torch.randn(2, 100, 64)
        out = fc(h)
    g = fc.weight.shape[2]
    for c in (0, 1, 3, 149, 249):
        k, j = divmod(c, g)
        torch.testing.assert_close(out[:, c], h[:, k] @ fc.weight[k, :, j] + fc.bias[c], rtol=1e-5, atol=1e-5)


def test_queries_do_not_attend_to_each_other():
    """No self-attention: permuting the queries permutes the decoder's outputs and changes nothing else."""
    model, _ = build(**SMALL)
    layer = model.decoder.eval()
    queries, tokens = torch.randn(2, 5, 64), torch.randn(2, 9, 64)
    order = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(layer(queries[:, order], tokens), layer(queries, tokens)[:, order])


def test_fixed_queries_are_a_seeded_buffer_without_gradient():
    model, _ = build(**SMALL)
    torch.manual_seed(123)
    other, _ = build(**SMALL)  # arch_model reseeds; the queries come from their own generator anyway
    assert "queries" in dict(model.named_buffers()) and "queries" in model.state_dict()
    assert all(p is not model.queries for p in model.parameters()) and not model.queries.requires_grad
    torch.testing.assert_close(model.queries, other.queries)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert model.queries.grad is None


def test_learnable_queries_are_trained():
    model, _ = build(learnable_queries=True, **SMALL)
    assert "queries" in dict(model.named_parameters())
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert model.queries.grad is not None and model.queries.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("options", "key"),
    [({"decoder_dim": 100, "num_heads": 8}, "decoder_dim"), ({"num_queries": 0}, "num_queries"),
     ({"decoder_dropout": 1.0}, "decoder_dropout")],
)  # fmt: skip
def test_bad_settings_are_config_errors(options, key):
    with pytest.raises(ConfigError, match=key):
        build(**options)


def test_asl_with_the_papers_settings_is_the_default_loss():
    """ML-Decoder's published results are with ASL (gamma- 4, gamma+ 0, clip 0.05); bce stays a choice."""
    from mlic.tasks.losses import AsymmetricLoss

    _, task = arch_model("ml_decoder", NUM_CLASSES, backbone="resnet10t")
    task.setup(np.zeros((4, NUM_CLASSES), dtype=np.uint8))
    assert isinstance(task.loss_fn, AsymmetricLoss)
    assert (task.loss_fn.gamma_neg, task.loss_fn.gamma_pos, task.loss_fn.clip) == (4.0, 0.0, 0.05)
    _, control = arch_model("ml_decoder", NUM_CLASSES, backbone="resnet10t", loss="bce")
    control.setup(np.zeros((4, NUM_CLASSES), dtype=np.uint8))
    assert not isinstance(control.loss_fn, AsymmetricLoss)


def test_overfits_eight_images():
    model, task = build(OVERFIT_LABELS, **SMALL)
    first, last = overfit_losses(model, task)
    assert last < 0.5 * first, (first, last)
