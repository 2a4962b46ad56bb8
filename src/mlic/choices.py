"""The names a params string may take, declared here so that params are checked before any work starts.

Most such strings pick an entry of a registry (`train.tta` a TTA preset, `models.<entry>.loss` a loss). The modules
that fill those registries import torch, albumentations or OpenCV (20-50 s), so `mlic.config` cannot ask them when
params load: it checks each key against the names listed here instead. tests/test_choices.py imports every module of
mlic and fails when a list here differs from its registry, or when a registry that a params key names is missing here.

An entry registered at run time (a test's or a notebook's `Registry.registered`) is accepted too: `mlic.registry`
keeps the registries created so far by the params key they serve.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from mlic.errors import ConfigError
from mlic.registry import registered_names

ENTRY = "models.<entry>."  # the keys of a models entry (and of an entry nested in one) share one list per key name


@dataclass(frozen=True)
class Choice:
    """The names one params key takes.

    Args:
        kind: What a name picks, for messages ("TTA preset").
        source: `module:attribute` of the registry (or tuple of names) that defines them, which the test compares.
        names: The registry's entries.
        also: Names accepted beside the registry's, handled before it is asked (`thresholds.method: auto`).
    """

    kind: str
    source: str
    names: tuple[str, ...]
    also: tuple[str, ...] = ()


THRESHOLD_FITTERS = ("global", "optuna", "per_class_exact")
ENSEMBLE_METHODS = ("geometric", "mean", "per_class", "weighted")
# fmt: off
ARCHS = ("baseline", "cnn_rnn", "csra", "hog_linear", "hourglass", "kd_wsd", "ml_decoder", "resnet50_hog", "sca", "srn",
         "wsddn")
# fmt: on

# params key (as `Registry.param` spells it) -> its names. Keys of models entries start with ENTRY.
CHOICES: dict[str, Choice] = {
    "sample.competition": Choice("sample competition", "mlic.stages.sample:SAMPLES", ("imet2019", "planet")),
    "data.competition": Choice("competition", "mlic.data.competitions:COMPETITIONS", ("folder", "imet2019", "planet")),
    "proposals.method": Choice(
        "proposal method", "mlic.features.proposals:PROPOSALS", ("selective_search", "windows"), also=("cam",)
    ),
    "train.optimizer": Choice("optimizer", "mlic.train.engine:OPTIMIZERS", ("adamw", "sgd")),
    "train.sampler": Choice("sampler", "mlic.train.sampling:SAMPLERS", ("random", "stratified")),
    "train.augment": Choice("augmentation", "mlic.train.augment:AUGMENTATIONS", ("none", "photo", "satellite")),
    "train.tta": Choice("TTA preset", "mlic.loop.tta:TTA_VIEWS", ("dihedral", "flips", "none")),
    "ensemble.method": Choice("ensemble method", "mlic.predict.ensemble:ENSEMBLES", ENSEMBLE_METHODS, also=("auto",)),
    "ensemble.auto_candidates": Choice("ensemble method", "mlic.predict.ensemble:ENSEMBLES", ENSEMBLE_METHODS),
    "thresholds.method": Choice(
        "threshold method", "mlic.predict.threshold_fitting:THRESHOLD_METHODS", THRESHOLD_FITTERS, also=("auto",)
    ),
    "thresholds.compare_methods": Choice(
        "threshold method", "mlic.predict.threshold_fitting:THRESHOLD_METHODS", THRESHOLD_FITTERS
    ),
    "tune.pruner": Choice("pruner", "mlic.experiments.tune.study:PRUNERS", ("median", "none")),
    f"{ENTRY}arch": Choice("model architecture", "mlic.models.registry:ARCHS", ARCHS),
    f"{ENTRY}loss": Choice("loss", "mlic.tasks.losses:LOSSES", ("asl", "bce", "focal", "lsep", "weighted_bce")),
    f"{ENTRY}pooling": Choice("pooling", "mlic.models.hourglass:POOLINGS", ("avg", "lse", "max")),
    f"{ENTRY}score_rule": Choice("score rule", "mlic.models.cnn_rnn:SCORE_RULES", ("beam", "max", "prelim")),
    f"{ENTRY}feed": Choice("decoder feed", "mlic.models.cnn_rnn:FEEDS", ("argmax", "target")),
}

# Registries whose entries no params string value names, and why.
OTHER_REGISTRIES = {
    "mlic.sources:SOURCES": "a task declares its sources in code",
    "mlic.search_space:SUGGESTERS": "tune.space's distribution kinds: keys, checked by mlic.search_space.DISTRIBUTIONS",
}


def generic_key(key: str) -> str:
    """The CHOICES key of a concrete params key: `models.kd_wsd.student.loss` -> `models.<entry>.loss`."""
    return ENTRY + key.rsplit(".", 1)[-1] if key.startswith("models.") else key


def allowed(key: str) -> list[str]:
    """Every name `key` (a CHOICES key) takes: the declared ones, and entries registered at run time."""
    choice = CHOICES[key]
    shared = [other for other, c in CHOICES.items() if c.source == choice.source]  # compare_methods: method's
    return sorted({*choice.also, *choice.names, *(name for other in shared for name in registered_names(other))})


def check_choice(key: str, value: Any) -> None:
    """Fail unless `value` is a name that params key `key` takes; keys without a CHOICES entry take any string.

    Raises:
        ConfigError: `key: unknown <kind> 'x'; did you mean 'y'?`, with the known names as the fix.
    """
    generic = generic_key(key)
    if generic not in CHOICES or not isinstance(value, str):
        return
    names = allowed(generic)
    if value in names:
        return
    close = difflib.get_close_matches(value, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{key}: unknown {CHOICES[generic].kind} {value!r}{hint}", path="params.yaml",
                      fix=f"use one of: {', '.join(names)}")  # fmt: skip
