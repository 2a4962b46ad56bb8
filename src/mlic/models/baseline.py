"""The seed baseline: timm backbone -> one residual block with K filters -> global average pooling -> logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mlic.errors import invalid
from mlic.models.backbones import ClassifierConfig, create_backbone, feature_channels, feature_map
from mlic.models.registry import ModelDims, register_arch


@dataclass(frozen=True)
class BaselineConfig(ClassifierConfig):
    """`arch: baseline`."""

    extra_filters: int = 128  # K, the filters of the extra residual block

    def __post_init__(self):
        super().__post_init__()
        if self.extra_filters < 1:
            invalid("extra_filters", f"must be >= 1, got {self.extra_filters}")


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with a projection shortcut, mapping `in_channels` to `filters` channels."""

    def __init__(self, in_channels: int, filters: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, filters, 3, padding=1, bias=False),
            nn.BatchNorm2d(filters),
            nn.ReLU(inplace=True),
            nn.Conv2d(filters, filters, 3, padding=1, bias=False),
            nn.BatchNorm2d(filters),
        )
        self.shortcut = (
            nn.Identity()
            if in_channels == filters
            else nn.Sequential(nn.Conv2d(in_channels, filters, 1, bias=False), nn.BatchNorm2d(filters))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, filters, H, W)."""
        return self.act(self.body(x) + self.shortcut(x))


class BackboneResidualClassifier(nn.Module):
    """Backbone feature map, an extra residual block, global average pooling and a linear layer per label.

    It returns logits: the per-label sigmoid is applied by the loss (BCE-with-logits, numerically stable) and
    at prediction time.
    """

    def __init__(self, backbone: nn.Module, filters: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.block = ResidualBlock(feature_channels(backbone), filters)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(filters, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, num_classes) logits."""
        pooled = self.pool(self.block(feature_map(self.backbone, images))).flatten(1)
        return self.classifier(self.dropout(pooled))

    def class_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, h, w) class activation maps and the (N, C) logits they average to (in eval mode).

        The classifier is linear after average pooling, so applying it at every position of the block's map gives
        maps whose mean is the logit (CAM, Zhou et al. 2016): the `cam` proposals read them.
        """
        block = self.block(feature_map(self.backbone, images))
        maps = torch.einsum("nkhw,ck->nchw", block, self.classifier.weight) + self.classifier.bias.view(1, -1, 1, 1)
        return maps, maps.mean(dim=(2, 3))


@register_arch("baseline", BaselineConfig, tiny={"backbone": "resnet10t", "extra_filters": 8})
def baseline(cfg: BaselineConfig, dims: ModelDims) -> nn.Module:
    """Timm backbone + residual block with `extra_filters` filters + GAP + sigmoid per label."""
    return BackboneResidualClassifier(create_backbone(cfg), cfg.extra_filters, dims.num_classes, cfg.drop_rate)
