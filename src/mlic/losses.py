"""Multi-label losses, registered by the name used in `train.loss`; each takes logits and binary targets."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from mlic.registry import Registry

LOSSES: Registry[Callable[[], nn.Module]] = Registry("loss", "train.loss")


@LOSSES.register("bce")
def bce() -> nn.Module:
    """Binary cross-entropy on logits, one independent sigmoid per label."""
    return nn.BCEWithLogitsLoss()


def create_loss(name: str) -> nn.Module:
    """Build the loss named `name`."""
    return LOSSES.get(name)()
