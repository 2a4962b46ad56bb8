"""CSRA: class-specific residual attention (Zhu and Wu, ICCV 2021) on a timm backbone's last feature map.

Each label c gets a 1x1 classifier w_c scoring every position of the final map, s_c = w_c . x / ||w_c||. Its logit is
the average-pooled score plus lambda times an attention-pooled one: mean_hw(s_c) + lambda * sum_hw softmax(T s_c) s_c.
The attention term lets a label that covers a few positions (a small object) stand out of the average. H heads with
different temperatures T are summed; T = 99 stands for T -> infinity, computed exactly as a max over positions (as
the official code does). The head is cheap: H x C x channels weights, no bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mlic.errors import invalid
from mlic.models.backbones import BackboneConfig, create_backbone
from mlic.models.registry import ModelDims, register_arch

MAX_TEMPERATURE = 99  # the official code's stand-in for T -> infinity: the attention term is a max over positions
# Temperatures of the heads for each head count, the official mapping (pipeline/csra.py, MHA.temp_settings)
HEAD_TEMPERATURES: dict[int, tuple[int, ...]] = {
    1: (1,),
    2: (1, MAX_TEMPERATURE),
    4: (1, 2, 4, MAX_TEMPERATURE),
    6: (1, 2, 3, 4, 5, MAX_TEMPERATURE),
    8: (1, 2, 3, 4, 5, 6, 7, MAX_TEMPERATURE),
}


@dataclass(frozen=True)
class CsraConfig(BackboneConfig):
    """`arch: csra`."""

    lam: float = 0.1  # lambda, the weight of the attention term (paper: 0.1 for ResNet-101 on VOC, 0.4-0.5 on COCO)
    num_heads: int = 1  # H, heads summed, with temperatures {1}, {1,99}, {1,2,4,99}, {1..5,99}, {1..7,99} (99: max)
    head_lr_multiplier: float = 10.0  # the official code trains the classifier at 10 times the backbone's rate

    def __post_init__(self):
        super().__post_init__()
        if self.num_heads not in HEAD_TEMPERATURES:
            choices = ", ".join(map(str, HEAD_TEMPERATURES))
            invalid("num_heads", f"must be one of {choices} (the paper's temperature sets), got {self.num_heads}")
        if self.lam < 0:
            invalid("lam", f"must be >= 0, got {self.lam}", "e.g. 0.1")


class CsraHead(nn.Module):
    """One CSRA head: normalised per-class scores at every position, average plus lambda times attention pooling.

    Args:
        channels: Channels of the feature map.
        num_classes: Labels, one 1x1 classifier each.
        temperature: T of the spatial softmax; `MAX_TEMPERATURE` (99) takes the max over positions instead.
        lam: Lambda, the weight of the attention term.
    """

    def __init__(self, channels: int, num_classes: int, temperature: float, lam: float):
        super().__init__()
        self.classifier = nn.Conv2d(channels, num_classes, 1, bias=False)
        self.temperature = temperature
        self.lam = lam

    def class_scores(self, features: torch.Tensor) -> torch.Tensor:
        """(N, channels, H, W) -> (N, C, H*W) scores w_c . x / ||w_c||.

        Dividing the conv's output by each class's weight norm is the official code's placement (the norm is not
        detached, so it is trained through): the scores then measure the alignment of x with w_c's direction.
        """
        norms = self.classifier.weight.flatten(1).norm(dim=1)
        return (self.classifier(features) / norms[None, :, None, None]).flatten(2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, channels, H, W) features -> (N, C) logits."""
        scores = self.class_scores(features)
        if self.temperature == MAX_TEMPERATURE:
            attention = scores.amax(dim=2)
        else:
            attention = (torch.softmax(self.temperature * scores, dim=2) * scores).sum(dim=2)
        return scores.mean(dim=2) + self.lam * attention


class Csra(nn.Module):
    """timm features_only backbone (last stage) -> H CSRA heads -> summed logits."""

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: CsraConfig):
        super().__init__()
        self.backbone = backbone
        channels = backbone.feature_info.channels()[-1]
        self.heads = nn.ModuleList(
            CsraHead(channels, num_classes, t, cfg.lam) for t in HEAD_TEMPERATURES[cfg.num_heads]
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, C) logits, the sum of the heads' (as the official MHA)."""
        features = self.backbone(images)[-1]
        logits = self.heads[0](features)
        for head in self.heads[1:]:
            logits = logits + head(features)
        return logits


@register_arch("csra", CsraConfig, tiny={"backbone": "resnet10t", "num_heads": 2})
def csra(cfg: CsraConfig, dims: ModelDims) -> nn.Module:
    """CSRA with `num_heads` heads and weight `lam` on the last feature map of `backbone`."""
    return Csra(create_backbone(cfg, out_indices=(-1,)), dims.num_classes, cfg)
