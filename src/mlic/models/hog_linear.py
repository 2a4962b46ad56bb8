"""A HOG-only linear floor: one-vs-rest logistic regression on the standardised HOG vector."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from torch import nn

from mlic.models.registry import ArchConfig, ModelDims, check_drop_rate, register_arch
from mlic.tasks.multilabel import MultiLabelTask


@dataclass(frozen=True)
class HogLinearConfig(ArchConfig):
    """`arch: hog_linear`."""

    drop_rate: float = 0.0  # dropout on the HOG vector

    def __post_init__(self):
        super().__post_init__()
        check_drop_rate(self.drop_rate)


@register_arch(
    "hog_linear", HogLinearConfig, functools.partial(MultiLabelTask, sources=("hog",)), tiny={"drop_rate": 0.1}
)
def hog_linear(cfg: HogLinearConfig, dims: ModelDims) -> nn.Module:
    """One linear logit per label on the HOG vector.

    Trained by the same loop (the loss of `loss`, weight decay as the L2 penalty); with no image to read it trains
    in seconds on a CPU. It is the floor every deep model must beat.
    """
    return nn.Sequential(nn.Dropout(cfg.drop_rate), nn.Linear(dims.dim("hog"), dims.num_classes))
