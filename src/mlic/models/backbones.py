"""timm backbones for the architectures: the config keys they share, building one, and reading its feature map."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from mlic.errors import ConfigError, MlicError, invalid
from mlic.models.registry import ArchConfig, check_drop_rate

OUTPUT_STRIDES = (8, 16, 32)  # timm dilates the last stages of CNNs (ResNets and others) for the first two


@dataclass(frozen=True)
class BackboneConfig(ArchConfig):
    """The keys of an architecture built on a timm backbone."""

    backbone: str = "resnet18"  # any timm CNN name
    pretrained: bool = False  # true downloads weights from the hub (needs internet)
    pretrained_file: str | None = None  # or a local weights file (needs pretrained: true)
    head_lr_multiplier: float = 1.0  # the layers outside the backbone train at train.lr times this
    output_stride: int = 32  # 8 or 16 dilate the last stages (timm): a larger last map for the spatial heads

    def __post_init__(self):
        super().__post_init__()
        if self.pretrained_file is not None and not self.pretrained:
            invalid("pretrained_file", "is set but pretrained is false", "set pretrained: true in the same entry")
        if not (math.isfinite(self.head_lr_multiplier) and self.head_lr_multiplier > 0):
            invalid("head_lr_multiplier", f"must be > 0, got {self.head_lr_multiplier}", "e.g. 1, or 10 (CSRA's)")
        if self.output_stride not in OUTPUT_STRIDES:
            invalid("output_stride", f"must be one of {OUTPUT_STRIDES}, got {self.output_stride}",
                    "32 (the backbone as designed), or 16 / 8 for a map 2 / 4 times as large per side")  # fmt: skip


@dataclass(frozen=True)
class ClassifierConfig(BackboneConfig):
    """The keys of a backbone architecture that ends in one linear classifier over pooled features."""

    drop_rate: float = 0.0  # dropout before the classifier

    def __post_init__(self):
        super().__post_init__()
        check_drop_rate(self.drop_rate)


def create_backbone(cfg: BackboneConfig, out_indices: tuple[int, ...] | None = None) -> nn.Module:
    """A timm backbone without pooling or classifier, optionally with pretrained weights.

    With `out_indices` it is built `features_only` and returns the feature maps of those stages (a list).
    `model.pretrained_file` loads weights from a local file (timm's `pretrained_cfg_overlay`), for machines
    without internet; `model.pretrained: true` alone downloads them from the hub.

    Raises:
        ConfigError: For an unknown timm name or a missing weights file.
        MlicError: If pretrained weights cannot be fetched.
    """
    if not timm.is_model(cfg.backbone):
        close = timm.list_models(f"*{cfg.backbone.split('.')[0][:6]}*")[:5]
        raise ConfigError(
            f"unknown timm backbone {cfg.backbone!r} in models.<entry>.backbone", fix=f"e.g. one of {close}"
        )
    kwargs: dict = {"pretrained": cfg.pretrained}
    if cfg.output_stride != 32:  # passed only when asked: some timm models take no output_stride at all
        kwargs["output_stride"] = cfg.output_stride
    if out_indices is None:
        kwargs.update(num_classes=0, global_pool="")
    else:
        kwargs.update(features_only=True, out_indices=out_indices)
    if cfg.pretrained_file:
        if not Path(cfg.pretrained_file).is_file():
            raise ConfigError(
                "models.<entry>.pretrained_file not found", path=cfg.pretrained_file, fix="give a local weights file"
            )
        kwargs["pretrained_cfg_overlay"] = {"file": cfg.pretrained_file}
    try:
        return timm.create_model(cfg.backbone, **kwargs)
    except TypeError as exc:
        if "output_stride" not in kwargs:
            raise
        raise ConfigError(
            f"backbone {cfg.backbone!r} cannot dilate to output_stride {cfg.output_stride}: {exc}",
            fix="set output_stride: 32 in the models entry, or pick a CNN that takes it (e.g. a ResNet)",
        ) from None
    except (OSError, RuntimeError) as exc:
        if not cfg.pretrained:
            raise
        raise MlicError(
            f"could not load pretrained weights for {cfg.backbone}: {exc}",
            fix="set pretrained_file to a local weights file, or pretrained: false, in the models entry",
        ) from None


def is_features_only(backbone: nn.Module) -> bool:
    """Whether `create_backbone` built it `features_only` (a list of maps, described by timm's `FeatureInfo`)."""
    return isinstance(getattr(backbone, "feature_info", None), timm.models.FeatureInfo)  # a whole net's is a list


def feature_channels(backbone: nn.Module) -> int:
    """Channels of the backbone's final feature map (of the deepest of a `features_only` backbone's maps)."""
    return int(backbone.feature_info.channels()[-1]) if is_features_only(backbone) else int(backbone.num_features)


def feature_map(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The backbone's last (N, C, H, W) feature map; a ConfigError for backbones without one (transformers).

    A whole backbone's is `forward_features`; a `features_only` one's (csra, hourglass, srn, ml_decoder) is the
    deepest of the maps it gives.
    """
    features = backbone(images)[-1] if is_features_only(backbone) else backbone.forward_features(images)
    if features.ndim != 4:
        raise ConfigError("models.<entry>.backbone must be a CNN with a (N, C, H, W) feature map, e.g. resnet50")
    return features
