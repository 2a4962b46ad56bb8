"""Models that use HOG features: ResNet + HOG late fusion (the iMet study), and a HOG-only linear floor."""

from __future__ import annotations

import torch
from torch import nn

from mlic.config import ModelConfig
from mlic.models.registry import create_backbone, feature_channels, feature_map, register_model


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


@register_model("resnet50_hog", inputs=("image", "hog"))
def resnet50_hog(cfg: ModelConfig, num_classes: int, hog_dim: int | None) -> nn.Module:
    """Timm backbone (`model.backbone`, resnet50 in the study) + HOG, fused before the classifier."""
    return HogFusion(create_backbone(cfg), int(hog_dim), cfg.hog_projection, num_classes, cfg.drop_rate)


@register_model("hog_linear", inputs=("hog",))
def hog_linear(cfg: ModelConfig, num_classes: int, hog_dim: int | None) -> nn.Module:
    """One-vs-rest logistic regression on the standardised HOG vector: one linear logit per label.

    Trained by the same loop (BCE, weight decay as the L2 penalty); with no image to read it trains in
    seconds on a CPU. It is the floor every deep model must beat.
    """
    return nn.Sequential(nn.Dropout(cfg.drop_rate), nn.Linear(int(hog_dim), num_classes))
