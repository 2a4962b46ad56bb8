"""The multi-label loss registry: stability sweep, equivalences with BCE / torchvision, LSEP by hand."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from mlic.errors import ConfigError
from mlic.tasks.losses import LOSSES, create_loss

N, C = 6, 5
FREQ = torch.tensor([0.01, 0.1, 0.3, 0.5, 0.9])


def batch(seed=0, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, generator=gen) * scale
    targets = (torch.rand(N, C, generator=gen) < 0.4).float()
    targets[0], targets[1] = 0.0, 1.0  # an all-negative and an all-positive row
    return logits, targets


def value_and_grad(loss_fn, logits, targets):
    logits = logits.clone().requires_grad_(True)
    loss = loss_fn(logits, targets)
    loss.backward()
    return loss, logits.grad


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_is_finite_and_differentiable(name):
    loss_fn = create_loss(name, label_freq=FREQ)
    logits, targets = batch()
    loss, grad = value_and_grad(loss_fn, logits, targets)
    assert loss.ndim == 0 and torch.isfinite(loss) and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSSES.names())
@pytest.mark.parametrize("magnitude", [100.0, -100.0, 1e4])
def test_every_loss_is_stable_for_huge_logits(name, magnitude):
    loss_fn = create_loss(name, label_freq=FREQ)
    _, targets = batch()
    signs = torch.where(torch.arange(C) % 2 == 0, 1.0, -1.0).expand(N, C)
    for logits in (torch.full((N, C), magnitude), signs * magnitude):
        loss, grad = value_and_grad(loss_fn, logits, targets)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), (name, magnitude)


@pytest.mark.parametrize("name", LOSSES.names())
@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_every_loss_handles_all_zero_and_all_one_targets(name, fill):
    loss_fn = create_loss(name, label_freq=FREQ)
    logits, _ = batch()
    for scale in (1.0, 100.0):
        loss, grad = value_and_grad(loss_fn, logits * scale, torch.full((N, C), fill))
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_works_in_float64(name):
    loss_fn = create_loss(name, label_freq=FREQ.numpy().astype(np.float64))
    logits, targets = batch()
    loss64, grad64 = value_and_grad(loss_fn, logits.double(), targets.double())
    loss32, _ = value_and_grad(loss_fn, logits, targets)
    assert loss64.dtype == torch.float64 and grad64.dtype == torch.float64 and torch.isfinite(grad64).all()
    assert loss64.item() == pytest.approx(loss32.item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_works_under_bf16_autocast(name):
    loss_fn = create_loss(name, label_freq=FREQ)
    logits, targets = batch()
    reference, _ = value_and_grad(loss_fn, logits, targets)
    weight = torch.eye(C, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = logits @ weight  # a bf16 matmul, as a model head under autocast would give
        assert out.dtype == torch.bfloat16
        loss = loss_fn(out, targets)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(weight.grad).all()
    assert loss.item() == pytest.approx(reference.item(), rel=0.05)  # only the bf16 rounding of the logits differs


def test_focal_matches_torchvision():
    logits, targets = batch(seed=1)
    for gamma, alpha in [(2.0, 0.25), (1.0, 0.5), (0.5, None)]:
        ours, ours_grad = value_and_grad(create_loss("focal", gamma=gamma, alpha=alpha), logits, targets)
        ref_logits = logits.clone().requires_grad_(True)
        ref = sigmoid_focal_loss(
            ref_logits, targets, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="mean"
        )
        ref.backward()
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(ours_grad, ref_logits.grad)


def test_focal_without_focusing_or_alpha_is_bce():
    logits, targets = batch(seed=2)
    focal = create_loss("focal", gamma=0.0, alpha=None)(logits, targets)
    torch.testing.assert_close(focal, create_loss("bce")(logits, targets))


def test_asl_without_focusing_or_clip_is_bce():
    logits, targets = batch(seed=3)
    asl = create_loss("asl", gamma_neg=0, gamma_pos=0, clip=0)(logits, targets)
    torch.testing.assert_close(asl, F.binary_cross_entropy_with_logits(logits, targets))


def test_asl_matches_the_official_formula():
    logits, targets = batch(seed=4, scale=2.0)
    for gamma_pos in (0.0, 1.0):
        p = torch.sigmoid(logits.double())
        p_m = (p - 0.05).clamp(min=0)
        y = targets.double()
        ref = -(y * (1 - p) ** gamma_pos * torch.log(p) + (1 - y) * p_m**4 * torch.log(1 - p_m)).mean()
        ours = create_loss("asl", gamma_pos=gamma_pos)(logits, targets)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_asl_ignores_easy_negatives_below_the_clip():
    logits = torch.logit(torch.tensor([[0.04, 0.5]]))
    loss, grad = value_and_grad(create_loss("asl"), logits, torch.zeros(1, 2))
    assert grad[0, 0] == 0 and grad[0, 1] > 0


def test_weighted_bce_with_balanced_frequencies_is_bce():
    logits, targets = batch(seed=5)
    weighted = create_loss("weighted_bce", label_freq=np.full(C, 0.5))(logits, targets)
    torch.testing.assert_close(weighted, create_loss("bce")(logits, targets))


def test_weighted_bce_weights_rare_labels_more():
    loss_fn = create_loss("weighted_bce", label_freq=torch.tensor([0.01, 0.5, 1e-6]))
    assert torch.allclose(loss_fn.pos_weight, torch.tensor([math.sqrt(99), 1.0, 50.0]))  # sqrt, clipped at 50
    _, grad = value_and_grad(loss_fn, torch.zeros(1, 3), torch.ones(1, 3))
    assert grad[0, 0].abs() > 5 * grad[0, 1].abs() > 0  # rare positive (f=0.01) vs common positive (f=0.5)


def test_weighted_bce_options():
    flat = create_loss("weighted_bce", label_freq=FREQ, power=0.0)
    assert torch.equal(flat.pos_weight, torch.ones(C))
    capped = create_loss("weighted_bce", label_freq=FREQ, power=1.0, max_weight=10.0)
    assert capped.pos_weight.max() == 10.0 and capped.pos_weight.min() == 1.0


def test_lsep_by_hand():
    loss_fn = create_loss("lsep")
    scores, targets = torch.tensor([[2.0, 1.0], [2.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # row 1: positive 2 above negative 1 -> log(1 + e^-1); row 2: positive 1 below negative 2 -> log(1 + e^1)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2
    assert loss_fn(scores, targets).item() == pytest.approx(expected, rel=1e-6)
    three = torch.tensor([[3.0, 0.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]])  # pairs (neg 1.0 - pos 3.0, 1.0 - 0.0)
    assert loss_fn(*three).item() == pytest.approx(math.log(1 + math.exp(-2) + math.exp(1)), rel=1e-6)


def test_lsep_decreases_when_positives_rank_above_negatives():
    loss_fn, targets = create_loss("lsep"), torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    wrong = loss_fn(torch.tensor([[-1.0, 1.0, -2.0, 2.0]]), targets)
    tied = loss_fn(torch.zeros(1, 4), targets)
    right = loss_fn(torch.tensor([[1.0, -1.0, 2.0, -2.0]]), targets)
    far = loss_fn(torch.tensor([[10.0, -10.0, 20.0, -20.0]]), targets)
    assert wrong > tied > right > far >= 0


def test_lsep_rows_without_pairs_contribute_zero():
    loss_fn = create_loss("lsep")
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.1, -1.0], [5.0, -5.0, 0.0]])
    one_row = loss_fn(logits[:1], torch.tensor([[1.0, 0.0, 0.0]]))
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    loss, grad = value_and_grad(loss_fn, logits, targets)
    assert loss.item() == pytest.approx(one_row.item() / 3, rel=1e-6)  # mean over all samples, two of them 0
    assert torch.equal(grad[1:], torch.zeros(2, 3))


def test_frequency_losses_need_frequencies():
    with pytest.raises(ConfigError, match="needs the training label frequencies"):
        create_loss("weighted_bce")
    create_loss("bce")  # the others build without them


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unexpected options"):
        create_loss("focal", gama=2.0)
    with pytest.raises(ConfigError, match="clip"):
        create_loss("asl", clip=1.5)
    with pytest.raises(ValueError, match="label_freq"):
        create_loss("weighted_bce", label_freq=np.array([0.5, 1.5]))
