"""The hourglass model: multi-scale label maps, label dependencies by squeeze-excitation, top-down merging.

At each chosen backbone scale a dilated 3x3 conv maps the features to one channel per label (a label map
with a larger receptive field, so small objects still get context); a squeeze-excitation residual module
over those label channels models dependencies between labels; the result is added to the upsampled,
already processed map of the next coarser scale, from the top down. The finest merged maps are pooled
globally into one logit per label. The maps themselves are available for overlays (`label_maps`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mlic.errors import invalid
from mlic.models.backbones import BackboneConfig, create_backbone
from mlic.models.registry import ModelDims, register_arch
from mlic.registry import Registry

POOLINGS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("pooling", "models.<entry>.pooling")
LSE_SHARPNESS = 4.0  # log-sum-exp pooling's r: between average (r -> 0) and max (r -> inf) pooling


@dataclass(frozen=True)
class HourglassConfig(BackboneConfig):
    """`arch: hourglass`."""

    feature_indices: tuple[int, ...] = (1, 2, 3, 4)  # backbone stages whose feature maps it uses
    dilation: int = 2  # of the 3x3 conv that maps features to one channel per label
    se_reduction: int = 4  # squeeze-excitation bottleneck = labels / se_reduction
    pooling: str = "avg"  # global pooling of the label maps (registry: avg, max, lse)
    deep_supervision: bool = False  # also train each coarser scale's pooled output

    def __post_init__(self):
        super().__post_init__()
        if not self.feature_indices or sorted(set(self.feature_indices)) != list(self.feature_indices):
            invalid("feature_indices", f"must be increasing stage indices, got {list(self.feature_indices)}")
        if self.dilation < 1 or self.se_reduction < 1:
            invalid("dilation", "dilation and se_reduction must be >= 1")
        if self.pooling not in POOLINGS:
            invalid("pooling", f"unknown pooling {self.pooling!r}", f"one of: {', '.join(POOLINGS.names())}")


@POOLINGS.register("avg")
def avg_pool(maps: torch.Tensor) -> torch.Tensor:
    """Mean over positions: (N, C, H, W) -> (N, C)."""
    return maps.mean(dim=(2, 3))


@POOLINGS.register("max")
def max_pool(maps: torch.Tensor) -> torch.Tensor:
    """Max over positions: a label is present if it is anywhere."""
    return maps.amax(dim=(2, 3))


@POOLINGS.register("lse")
def lse_pool(maps: torch.Tensor) -> torch.Tensor:
    """Log-sum-exp (smooth max): (1 / r) log mean exp(r x), stable through torch.logsumexp."""
    flat = maps.flatten(2)
    return (
        torch.logsumexp(LSE_SHARPNESS * flat, dim=2) - torch.log(torch.tensor(float(flat.shape[2])))
    ) / LSE_SHARPNESS


class LabelSE(nn.Module):
    """Squeeze-excitation residual module over label channels: x + SE(refine(x)).

    The refinement is a depthwise 3x3 conv (per label, spatial); the excitation re-weights labels from the
    pooled evidence of all labels, which is where co-occurrence between labels is learnt. Depthwise keeps
    it affordable for iMet's 1,103 labels.
    """

    def __init__(self, labels: int, reduction: int):
        super().__init__()
        hidden = max(4, labels // reduction)
        self.refine = nn.Sequential(
            nn.Conv2d(labels, labels, 3, padding=1, groups=labels, bias=False), nn.BatchNorm2d(labels), nn.ReLU()
        )
        self.excite = nn.Sequential(nn.Linear(labels, hidden), nn.ReLU(), nn.Linear(hidden, labels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, labels, H, W) -> same shape."""
        r = self.refine(x)
        return x + r * self.excite(r.mean(dim=(2, 3)))[:, :, None, None]


class Hourglass(nn.Module):
    """timm features_only backbone -> per-scale label maps -> top-down merge -> global pooling -> logits."""

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: HourglassConfig):
        super().__init__()
        self.backbone = backbone
        channels = backbone.feature_info.channels()
        d = cfg.dilation
        self.to_labels = nn.ModuleList(nn.Conv2d(c, num_classes, 3, padding=d, dilation=d) for c in channels)
        self.se = nn.ModuleList(LabelSE(num_classes, cfg.se_reduction) for _ in channels)
        self.pool = POOLINGS.get(cfg.pooling)
        self.deep_supervision = cfg.deep_supervision

    def scale_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Merged label-map logits of every scale, finest first: [(N, C, H_i, W_i)]."""
        features = self.backbone(images)
        merged: list[torch.Tensor] = []
        coarser = None
        for i in reversed(range(len(features))):
            maps = self.se[i](self.to_labels[i](features[i]))
            if coarser is not None:
                maps = maps + F.interpolate(coarser, size=maps.shape[2:], mode="bilinear", align_corners=False)
            merged.insert(0, maps)
            coarser = maps
        return merged

    def label_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Per-label probability maps at the finest scale, (N, C, H, W): sigmoid of the merged logits."""
        return torch.sigmoid(self.scale_maps(images)[0])

    def forward(self, images: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor | list[torch.Tensor]]:
        """Logits (N, C); while training with deep supervision, also each coarser scale's pooled logits."""
        maps = self.scale_maps(images)
        logits = self.pool(maps[0])
        if self.training and self.deep_supervision:
            return {"logits": logits, "aux_logits": [self.pool(m) for m in maps[1:]]}
        return logits


@register_arch("hourglass", HourglassConfig, tiny={"backbone": "resnet10t", "deep_supervision": True})
def hourglass(cfg: HourglassConfig, dims: ModelDims) -> nn.Module:
    """The hourglass model on `backbone` (resnet50 in the study) at `feature_indices`."""
    return Hourglass(create_backbone(cfg, out_indices=tuple(cfg.feature_indices)), dims.num_classes, cfg)
