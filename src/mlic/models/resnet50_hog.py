"""ResNet + HOG late fusion (the iMet study): the backbone's pooled features beside the HOG vector, one classifier."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from mlic.errors import invalid
from mlic.models.backbones import ClassifierConfig, create_backbone, feature_channels, feature_map
from mlic.models.registry import ModelDims, register_arch
from mlic.tasks.multilabel import MultiLabelTask


@dataclass(frozen=True)
class HogFusionConfig(ClassifierConfig):
    """`arch: resnet50_hog`."""

    backbone: str = "resnet50"
    hog_projection: int = 0  # project the standardised HOG vector to this width first (0: no layer)

    def __post_init__(self):
        super().__post_init__()
        if self.hog_projection < 0:
            invalid("hog_projection", f"must be >= 0, got {self.hog_projection}")


class HogFusion(nn.Module):
    """Backbone's globally pooled features concatenated with the (optionally projected) standardised HOG vector.

    Both branches train end to end through one linear classifier; the HOG vector comes precomputed from the
    cache, so fusion costs nothing per step.
    """

    def __init__(self, backbone: nn.Module, hog_dim: int, projection: int, num_classes: int, drop_rate: float):
        super().__init__()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hog = (
            nn.Sequential(nn.Linear(hog_dim, projection), nn.BatchNorm1d(projection), nn.ReLU(inplace=True))
            if projection
            else nn.Identity()
        )
        width = feature_channels(backbone) + (projection or hog_dim)
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(width, num_classes))

    def forward(self, images: torch.Tensor, hog: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images and (N, D) standardised HOG -> (N, num_classes) logits."""
        pooled = self.pool(feature_map(self.backbone, images)).flatten(1)
        return self.classifier(torch.cat([pooled, self.hog(hog)], dim=1))


@register_arch(
    "resnet50_hog",
    HogFusionConfig,
    functools.partial(MultiLabelTask, sources=("image", "hog")),
    tiny={"backbone": "resnet10t", "hog_projection": 4},
)
def resnet50_hog(cfg: HogFusionConfig, dims: ModelDims) -> nn.Module:
    """Timm backbone (`backbone`, resnet50 in the study) + HOG, fused before the classifier."""
    return HogFusion(create_backbone(cfg), dims.dim("hog"), cfg.hog_projection, dims.num_classes, cfg.drop_rate)
