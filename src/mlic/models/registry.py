"""The model registry: `@register_model(name)` on small builders, `create_model(cfg, num_classes)` to build."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import timm
from torch import nn

from mlic.config import ModelConfig
from mlic.errors import ConfigError, MlicError
from mlic.registry import Registry

ModelBuilder = Callable[[ModelConfig, int], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model", "model.name")
register_model = MODELS.register


def create_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build the model named `cfg.name`; it returns one logit per label."""
    return MODELS.get(cfg.name)(cfg, num_classes)


def create_backbone(cfg: ModelConfig) -> nn.Module:
    """A timm backbone without pooling or classifier, optionally with pretrained weights.

    `model.pretrained_file` loads weights from a local file (timm's `pretrained_cfg_overlay`), for machines
    without internet; `model.pretrained: true` alone downloads them from the hub.

    Raises:
        ConfigError: For an unknown timm name or a missing weights file.
        MlicError: If pretrained weights cannot be fetched.
    """
    if not timm.is_model(cfg.backbone):
        close = timm.list_models(f"*{cfg.backbone.split('.')[0][:6]}*")[:5]
        raise ConfigError(f"unknown timm backbone {cfg.backbone!r} in model.backbone", fix=f"e.g. one of {close}")
    kwargs: dict = {"pretrained": cfg.pretrained, "num_classes": 0, "global_pool": ""}
    if cfg.pretrained_file:
        if not Path(cfg.pretrained_file).is_file():
            raise ConfigError(
                "model.pretrained_file not found", path=cfg.pretrained_file, fix="give a local weights file"
            )
        kwargs["pretrained_cfg_overlay"] = {"file": cfg.pretrained_file}
    try:
        return timm.create_model(cfg.backbone, **kwargs)
    except (OSError, RuntimeError) as exc:
        if not cfg.pretrained:
            raise
        raise MlicError(
            f"could not load pretrained weights for {cfg.backbone}: {exc}",
            fix="set model.pretrained_file to a local weights file, or model.pretrained: false",
        ) from None


def feature_channels(backbone: nn.Module) -> int:
    """Channels of the backbone's final feature map."""
    return int(backbone.num_features)
