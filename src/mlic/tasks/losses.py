"""Multi-label losses, registered by the name used in `models.<entry>.loss`; each takes logits and binary targets.

Every loss maps logits (N, C) and targets (N, C) in {0, 1} to a scalar mean. They are written with `logsigmoid`,
`softplus` and `logsumexp` (never `log(sigmoid(x))`), so logits of +/-100 give finite values and gradients, and they
compute in float32 (float64 stays float64) with autocast switched off inside, so bf16/fp16 autocast is safe.

A builder has the signature `builder(label_freq: torch.Tensor | None, **options) -> nn.Module`; `label_freq` holds
the fraction of training images carrying each label (C,), and builders that need it raise a ConfigError without it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlic.errors import ConfigError
from mlic.registry import Registry

LossBuilder = Callable[..., nn.Module]
LOSSES: Registry[LossBuilder] = Registry("loss", "models.<entry>.loss")


def _check(ok: bool, loss: str, message: str) -> None:
    """Raise a ConfigError about option values of the loss `loss` unless `ok`."""
    if not ok:
        raise ConfigError(f"loss {loss!r}: {message}", path="params.yaml", fix="change models.<entry>.loss_options")


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """A context that switches autocast off on `device_type` (a no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


class MultiLabelLoss(nn.Module):
    """Base class: checks shapes, leaves autocast, casts to float32 (or float64) and calls `compute`."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scalar mean loss of `logits` (N, C) against binary `targets` (N, C)."""
        if logits.ndim != 2 or logits.shape != targets.shape:
            raise ValueError(
                f"{type(self).__name__} needs logits and targets of the same shape (N, C), "
                f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
            )
        dtype = torch.promote_types(logits.dtype, torch.float32)
        with _no_autocast(logits.device.type):
            return self.compute(logits.to(dtype), targets.to(dtype))

    def compute(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss on float32/float64 logits `x` and targets `y`; overridden by each loss."""
        raise NotImplementedError


class BCEWithLogits(MultiLabelLoss):
    """Binary cross-entropy on logits, mean over the N * C elements, with optional per-label positive weights.

    Args:
        pos_weight: (C,) weight of each label's positive term, or None for plain BCE.
    """

    def __init__(self, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("pos_weight", None if pos_weight is None else pos_weight.float())

    def compute(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean of -[w * y * log(p) + (1 - y) * log(1 - p)]."""
        weight = self.pos_weight
        if weight is not None:
            if weight.numel() != x.shape[1]:
                raise ValueError(f"pos_weight has {weight.numel()} labels but the logits have {x.shape[1]}")
            weight = weight.to(device=x.device, dtype=x.dtype)  # the training loop does not move the loss
        return F.binary_cross_entropy_with_logits(x, y, pos_weight=weight)

    def extra_repr(self) -> str:
        """The options shown in the module's repr."""
        return "" if self.pos_weight is None else f"labels={self.pos_weight.numel()}"


class FocalLoss(MultiLabelLoss):
    """Sigmoid focal loss (Lin et al. 2017), equal to `torchvision.ops.sigmoid_focal_loss(..., reduction="mean")`.

    loss = alpha_t * (1 - p_t) ** gamma * BCE, mean over the N * C elements. The modulating factor is computed as
    exp(gamma * log(1 - p_t)) with log(1 - p_t) = y * logsigmoid(-x) + (1 - y) * logsigmoid(x), which is exact for
    binary targets and keeps gradients finite for any gamma >= 0 when the sigmoid saturates.

    Args:
        gamma: Focusing parameter; 0 gives (alpha-weighted) BCE.
        alpha: Weight of positives (negatives get 1 - alpha); None weights both by 1.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.25):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def compute(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean focal loss."""
        loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        if self.gamma:
            log_one_minus_pt = y * F.logsigmoid(-x) + (1 - y) * F.logsigmoid(x)
            loss = loss * torch.exp(self.gamma * log_one_minus_pt)
        if self.alpha is not None:
            loss = loss * (self.alpha * y + (1 - self.alpha) * (1 - y))
        return loss.mean()

    def extra_repr(self) -> str:
        """The options shown in the module's repr."""
        return f"gamma={self.gamma}, alpha={self.alpha}"


class AsymmetricLoss(MultiLabelLoss):
    """Asymmetric Loss (Ridnik et al. 2021), the official formulation with probability shifting for negatives.

    loss = -[y * (1 - p) ** gamma_pos * log(p) + (1 - y) * p_m ** gamma_neg * log(1 - p_m)], p_m = max(p - clip, 0).

    Reduction: the paper (and its code) sums over the batch; here the loss is averaged over the N * C elements so
    that the learning-rate scale matches BCE (with gamma_neg = gamma_pos = clip = 0 it *is* BCE).

    Stability: log(p) is `logsigmoid(x)`; log(1 - p_m) is `logsigmoid(-x)` without clipping and
    log(min(sigmoid(-x) + clip, 1)) with it (>= log(clip), clamped below by `eps` like the official code). The
    focusing weights use exp(gamma * logsigmoid(.)) where possible, so saturated sigmoids give no NaN gradients.

    Args:
        gamma_neg: Focusing parameter of negatives (4 in the paper).
        gamma_pos: Focusing parameter of positives (0 or 1 in the paper).
        clip: Probability margin shifted off negatives; 0 disables it.
        eps: Floor of the clipped negative probability inside the log.
    """

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def compute(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean asymmetric loss."""
        log_p = F.logsigmoid(x)
        pos = log_p
        if self.gamma_pos:
            pos = pos * torch.exp(self.gamma_pos * F.logsigmoid(-x))  # (1 - p) ** gamma_pos
        if self.clip > 0:
            p_m = (torch.sigmoid(x) - self.clip).clamp(min=0)
            neg = torch.log((1 - p_m).clamp(min=self.eps))
            if self.gamma_neg:
                # p_m is exactly 0 for confident negatives; the mask keeps pow's gradient at 0 out of the graph
                neg = neg * (p_m.clamp(min=self.eps) ** self.gamma_neg) * (p_m > 0)
        else:
            neg = F.logsigmoid(-x)
            if self.gamma_neg:
                neg = neg * torch.exp(self.gamma_neg * log_p)  # p ** gamma_neg
        return -(y * pos + (1 - y) * neg).mean()

    def extra_repr(self) -> str:
        """The options shown in the module's repr."""
        return f"gamma_neg={self.gamma_neg}, gamma_pos={self.gamma_pos}, clip={self.clip}, eps={self.eps}"


class LSEPLoss(MultiLabelLoss):
    """Log-sum-exp pairwise ranking loss (Li et al. 2017), mean over samples.

    Per sample: log(1 + sum_{i in pos, j in neg} exp(s_j - s_i)), computed as a `logsumexp` over the masked
    pairwise difference matrix with a 0 prepended for the "1 +", so large scores cannot overflow and rows without
    positives or without negatives (no pairs) contribute exactly 0 with zero gradient.

    Memory: the difference matrix is (N, C, C) in float32, N * C^2 * 4 bytes (plus a copy for the masking and one
    for the gradient): 32 x 1,200^2 is about 184 MB each, fine for small N; use smaller batches for larger C.
    """

    def compute(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean LSEP loss."""
        pos, neg = y > 0.5, y <= 0.5
        diff = x.unsqueeze(2) - x.unsqueeze(1)  # diff[n, j, i] = s_j - s_i
        pairs = neg.unsqueeze(2) & pos.unsqueeze(1)  # j negative, i positive
        diff = diff.masked_fill(~pairs, float("-inf")).flatten(1)
        return torch.logsumexp(F.pad(diff, (1, 0), value=0.0), dim=1).mean()


@LOSSES.register("bce")
def bce(label_freq: torch.Tensor | None = None) -> nn.Module:
    """Binary cross-entropy on logits, one independent sigmoid per label; ignores `label_freq`."""
    return BCEWithLogits()


@LOSSES.register("weighted_bce")
def weighted_bce(label_freq: torch.Tensor | None, power: float = 0.5, max_weight: float = 50.0) -> nn.Module:
    """BCE whose positive term is weighted by inverse label frequency: w_c = clip(((1 - f_c) / f_c) ** power, 1, max).

    The plain inverse odds (power 1) explode for rare labels: a label on 0.1% of images gets weight 999, so its
    handful of positives dominate every batch's gradient, training turns noisy and the model over-predicts it. The
    square root (power 0.5) tempers that (999 -> 32), and clipping to [1, max_weight] bounds what is left (labels never
    seen in training, f_c = 0, get max_weight) while never down-weighting positives of labels present in over half of
    the images below plain BCE.

    Args:
        label_freq: (C,) fraction of training images with each label (required).
        power: Exponent on the inverse odds; 0 gives plain BCE, 1 the full inverse odds.
        max_weight: Upper clip of the weights (>= 1).
    """
    _check(power >= 0, "weighted_bce", f"power must be >= 0, got {power}")
    _check(max_weight >= 1, "weighted_bce", f"max_weight must be >= 1, got {max_weight}")
    f = _require_freq(label_freq, "weighted_bce").double()
    odds = (1 - f) / f.clamp(min=1e-12)
    return BCEWithLogits((odds**power).clamp(min=1.0, max=max_weight).float())


@LOSSES.register("focal")
def focal(label_freq: torch.Tensor | None = None, gamma: float = 2.0, alpha: float | None = 0.25) -> nn.Module:
    """Sigmoid focal loss (Lin et al. 2017), gamma 2 and alpha 0.25 (None disables alpha); ignores `label_freq`."""
    _check(gamma >= 0, "focal", f"gamma must be >= 0, got {gamma}")
    _check(alpha is None or 0 <= alpha <= 1, "focal", f"alpha must be in [0, 1] or null, got {alpha}")
    return FocalLoss(gamma=gamma, alpha=alpha)


@LOSSES.register("asl")
def asl(
    label_freq: torch.Tensor | None = None,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.05,
    eps: float = 1e-8,
) -> nn.Module:
    """Asymmetric Loss (Ridnik et al. 2021), gamma_neg 4, gamma_pos 0, clip 0.05; ignores `label_freq`."""
    _check(gamma_neg >= 0 and gamma_pos >= 0, "asl", f"gammas must be >= 0, got {gamma_neg} and {gamma_pos}")
    _check(0 <= clip < 1, "asl", f"clip must be in [0, 1), got {clip}")
    _check(eps > 0, "asl", f"eps must be > 0, got {eps}")
    return AsymmetricLoss(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, eps=eps)


@LOSSES.register("lsep")
def lsep(label_freq: torch.Tensor | None = None) -> nn.Module:
    """Log-sum-exp pairwise ranking loss (Li et al. 2017); ignores `label_freq`."""
    return LSEPLoss()


def _require_freq(label_freq: torch.Tensor | None, loss: str) -> torch.Tensor:
    """`label_freq`, or a ConfigError saying that the loss `loss` needs the training label frequencies."""
    if label_freq is None:
        raise ConfigError(
            f"loss {loss!r} needs the training label frequencies, but none were given",
            path="params.yaml",
            fix=f"call create_loss({loss!r}, label_freq=...) or pick a loss that needs none in models.<entry>.loss",
        )
    return label_freq


def _as_freq(label_freq: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Label frequencies as a float32 (C,) CPU tensor, checked to lie in [0, 1]."""
    freq = torch.as_tensor(np.asarray(label_freq) if not torch.is_tensor(label_freq) else label_freq)
    freq = freq.detach().to(device="cpu", dtype=torch.float32)
    if freq.ndim != 1 or not torch.isfinite(freq).all() or ((freq < 0) | (freq > 1)).any():
        raise ValueError(f"label_freq must be a 1-D array of frequencies in [0, 1], got shape {tuple(freq.shape)}")
    return freq


def check_loss(name: str, options: dict, key: str = "models.<entry>.loss") -> None:
    """Check that `name` is a registered loss and that it takes `options` (values are checked when it is built).

    Raises:
        ConfigError: For an unknown loss (listing them) or an option it does not take (listing its options).
    """
    builder = LOSSES.get(name)  # an unknown name raises, listing the losses
    try:
        inspect.signature(builder).bind(None, **options)
    except TypeError as err:
        accepted = [p for p in inspect.signature(builder).parameters if p != "label_freq"]
        raise ConfigError(
            f"{key}: loss {name!r} got unexpected options {sorted(options)}: {err}",
            path="params.yaml",
            fix=f"options of {name!r} (in loss_options): {', '.join(accepted) or 'none'}",
        ) from None


def create_loss(name: str, label_freq: np.ndarray | torch.Tensor | None = None, **options) -> nn.Module:
    """Build the loss named `name`.

    Args:
        name: A LOSSES entry.
        label_freq: (C,) fraction of training images carrying each label; needed by frequency-based losses.
        **options: Keyword options of that loss (gamma, clip, ...), its defaults otherwise.

    Returns:
        An nn.Module mapping (logits (N, C), targets (N, C)) to a scalar mean loss.
    """
    check_loss(name, options, "loss")
    return LOSSES.get(name)(None if label_freq is None else _as_freq(label_freq), **options)
