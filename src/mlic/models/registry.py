"""The model registry: `@register_model(name)` on small builders, `create_model(cfg, num_classes)` to build."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import nn

from mlic.config import ModelConfig
from mlic.errors import ConfigError, MlicError
from mlic.registry import Registry

ModelBuilder = Callable[[ModelConfig, int, int | None], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model architecture", "models.<entry>.arch")
INPUTS = ("image", "hog")  # what a model may read from a batch: the cached image, and its HOG vector


def register_model(name: str, inputs: tuple[str, ...] = ("image",)) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering a builder `(cfg, num_classes, hog_dim) -> nn.Module` under `name`.

    Args:
        name: The `arch` that selects it.
        inputs: The batch entries its forward takes, in order: "image" (normalised NCHW) and/or "hog"
            (standardised HOG vectors). Training loads only these, so a HOG-only model never reads an image.
    """
    unknown = set(inputs) - set(INPUTS)
    if unknown:
        raise ValueError(f"model {name!r}: unknown inputs {sorted(unknown)}")

    def add(builder: ModelBuilder) -> ModelBuilder:
        builder.inputs = inputs  # type: ignore[attr-defined]
        return MODELS.register(name)(builder)

    return add


def model_inputs(name: str) -> tuple[str, ...]:
    """The batch entries the architecture `name` takes."""
    return MODELS.get(name).inputs  # type: ignore[attr-defined]


def create_model(cfg: ModelConfig, num_classes: int, hog_dim: int | None = None) -> nn.Module:
    """Build the architecture `cfg.arch`; it returns one logit per label.

    Args:
        cfg: The `model` section.
        num_classes: Labels to predict.
        hog_dim: Length of the HOG vectors, for models that take them.
    """
    builder = MODELS.get(cfg.arch)
    if "hog" in builder.inputs and not hog_dim:  # type: ignore[attr-defined]
        raise ConfigError(f"model {cfg.arch!r} needs HOG features", fix="run the hog stage (dvc repro hog) first")
    return builder(cfg, num_classes, hog_dim)


def create_backbone(cfg: ModelConfig, out_indices: tuple[int, ...] | None = None) -> nn.Module:
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
    except (OSError, RuntimeError) as exc:
        if not cfg.pretrained:
            raise
        raise MlicError(
            f"could not load pretrained weights for {cfg.backbone}: {exc}",
            fix="set pretrained_file to a local weights file, or pretrained: false, in the models entry",
        ) from None


def feature_channels(backbone: nn.Module) -> int:
    """Channels of the backbone's final feature map."""
    return int(backbone.num_features)


def feature_map(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The backbone's last (N, C, H, W) feature map; a ConfigError for backbones without one (transformers)."""
    features = backbone.forward_features(images)
    if features.ndim != 4:
        raise ConfigError("models.<entry>.backbone must be a CNN with a (N, C, H, W) feature map, e.g. resnet50")
    return features
