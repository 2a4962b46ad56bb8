"""The architecture registry: each architecture is one spec (name, config class, builder, task), found by name.

An architecture `X` lives in its own module, `mlic/models/X.py`, and registers itself there with `@register_arch`:

    @register_arch("baseline", BaselineConfig)
    def baseline(cfg: BaselineConfig, dims: ModelDims) -> nn.Module: ...

`get_arch("X")` imports `mlic.models.X` when X is not registered yet, so nothing imports every architecture: a train
stage imports (and, in DVC, depends on) its own architecture's modules only. A spec can also be registered directly
(`ARCHS.register(name)(spec)`), e.g. from a test or a notebook.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from mlic.config import Config, ModelEntry, build_entry
from mlic.errors import ConfigError, invalid
from mlic.registry import Registry
from mlic.tasks.base import Task
from mlic.tasks.losses import check_loss
from mlic.tasks.multilabel import MultiLabelTask

MODELS_PACKAGE = "mlic.models"


@dataclass(frozen=True)
class ArchConfig:
    """The keys every architecture has: the default task's loss and its options.

    Subclass it (frozen) for an architecture's own keys; checks in `__post_init__` call `invalid("<key>", ...)`.
    """

    loss: str = "bce"  # registry: bce, weighted_bce, focal, asl, lsep (mlic.tasks.losses)
    loss_options: dict[str, float | None] = field(default_factory=dict)  # the loss's knobs, e.g. {gamma: 2.0}

    def __post_init__(self):
        """Checks of the subclasses' keys; the loss is checked against its registry when the entry is resolved."""

    def nested_entries(self) -> tuple[ModelEntry, ...]:
        """Models entries built inside this one (a distilled student's student and teacher); none by default."""
        return ()

    def teacher_entry(self) -> ModelEntry | None:
        """The entry stage `teacher` trains per fold for this model (a distilled student's); none by default."""
        return None


def check_drop_rate(drop_rate: float) -> None:
    """The check of a `drop_rate` key: a probability below 1."""
    if not 0.0 <= drop_rate < 1.0:
        invalid("drop_rate", f"must be in [0, 1), got {drop_rate}")


@dataclass(frozen=True)
class ModelDims:
    """What a builder needs to know of the data: the label count and the length of each vector source."""

    num_classes: int
    source_dims: Mapping[str, int] = field(default_factory=dict)

    def dim(self, source: str) -> int:
        """The length of one vector of `source` (e.g. HOG), or a ConfigError saying which stage makes it."""
        if source not in self.source_dims:
            raise ConfigError(f"the model needs {source} features", fix=f"run the {source} stage first")
        return int(self.source_dims[source])


Builder = Callable[[Any, ModelDims], nn.Module]


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its name, its config class, the builder of its network, its task, and its tiny settings.

    `tiny` holds the settings of the architecture's smallest useful network (a small backbone, narrow heads, its
    optional parts switched on): keys of `config`, those that differ from its defaults. The tests that sweep every
    architecture (tests/test_registry_sweep.py, tests/test_export_onnx.py) build it from there, so that a new
    architecture is swept as soon as it is registered, at a size declared once, beside it.
    """

    name: str
    config: type[ArchConfig]
    build: Builder
    task: Callable[[Any], Task] = MultiLabelTask
    tiny: Mapping[str, Any] = field(default_factory=dict)


ARCHS: Registry[ArchSpec] = Registry("model architecture", "models.<entry>.arch")


def register_arch(
    name: str,
    config: type[ArchConfig],
    task: Callable[[Any], Task] = MultiLabelTask,
    *,
    tiny: Mapping[str, Any] | None = None,
):
    """Decorator registering the builder `(cfg, dims) -> nn.Module` as architecture `name` with its config and task.

    Args:
        name: The `arch` that selects it; the module must be `mlic/models/<name>.py` to be found by name.
        config: Its frozen config dataclass (a subclass of `ArchConfig`).
        task: Builds its task from the config (default: `MultiLabelTask` on the image).
        tiny: Its tiny settings (see `ArchSpec`): keys of `config`, small enough for a forward, backward and ONNX
            export on a CPU in a second or two, at 32 px and a handful of labels.
    """

    def add(build: Builder) -> Builder:
        ARCHS.register(name)(ArchSpec(name, config, build, task, dict(tiny or {})))
        return build

    return add


def get_arch(name: str) -> ArchSpec:
    """The architecture `name`, importing its module `mlic.models.<name>` if it is not registered yet.

    Raises:
        ConfigError: For an unknown name, listing the known architectures and the closest match.
    """
    if name not in ARCHS and importlib.util.find_spec(f"{MODELS_PACKAGE}.{name}") is not None:
        importlib.import_module(f"{MODELS_PACKAGE}.{name}")
    if name not in ARCHS:
        discover_archs()  # so that the error lists every architecture
    return ARCHS.get(name)


def discover_archs() -> list[str]:
    """Import every module of `mlic.models` (registering their architectures); returns all registered names."""
    package = importlib.import_module(MODELS_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{MODELS_PACKAGE}.{info.name}")
    return ARCHS.names()


@dataclass(frozen=True)
class ResolvedModel:
    """A `models` entry resolved: its key, its architecture's spec and its typed, checked config."""

    key: str
    spec: ArchSpec
    config: ArchConfig

    def task(self) -> Task:
        """A fresh task for this model."""
        return self.spec.task(self.config)

    def build(self, dims: ModelDims) -> nn.Module:
        """The network (returning logits), with fresh weights (or pretrained ones, as configured)."""
        return self.spec.build(self.config, dims)

    def without_pretrained(self) -> ResolvedModel:
        """The same model set not to download or read pretrained weights (trained weights are loaded over it)."""
        names = {f.name for f in dataclasses.fields(self.config)}
        off: dict[str, Any] = {k: v for k, v in (("pretrained", False), ("pretrained_file", None)) if k in names}
        for name in names:  # and the same for nested entries (a student), which build their own backbones
            value = getattr(self.config, name)
            if isinstance(value, ModelEntry):
                options = {k: v for k, v in value.options.items() if k not in ("pretrained", "pretrained_file")}
                off[name] = ModelEntry(value.arch, options)
        return dataclasses.replace(self, config=dataclasses.replace(self.config, **off))

    def arch_names(self) -> list[str]:
        """This model's architecture and those of its nested entries (whose modules it imports by name)."""
        return [self.spec.name, *(entry.arch for entry in self.config.nested_entries())]


def resolve_model(cfg: Config, key: str) -> ResolvedModel:
    """The `models` entry `key` with its architecture's config class applied.

    Raises:
        ConfigError: For an unknown entry or arch, or a key the arch does not have (naming entry, arch and key).
    """
    return resolve_entry(key, cfg.model(key))


def resolve_entry(key: str, entry: ModelEntry) -> ResolvedModel:
    """A models entry, under the name `key`, with its architecture's config class applied (see `resolve_model`)."""
    spec = get_arch(entry.arch)
    prefix, owner = f"models.{key}", f"arch {entry.arch!r}"
    config = build_entry(spec.config, entry.options, prefix, owner)
    check_loss(config.loss, config.loss_options, f"{prefix}.loss")
    return ResolvedModel(key, spec, config)
