"""Typed configuration: one frozen dataclass per params.yaml section, loaded and checked once.

Unknown keys, missing keys and wrong types are errors that name the key. Cross-field checks run in
`__post_init__`. Every stage receives the same `Config`, and saves it (resolved) next to its outputs.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from mlic.choices import check_choice
from mlic.errors import DEFAULT_PARAMS, ConfigError, invalid
from mlic.io import write_text
from mlic.schema import Schema, plain
from mlic.search_space import Distribution, distribution


@dataclass(frozen=True)
class ImetSampleConfig:
    """Sizes of the synthetic iMet 2019 competition (`sample.competition: imet2019`).

    `MAX_CULTURES` and `MAX_TAGS` are the names the generator (`mlic.data.synthetic.imet`) has, and draws apart. They
    live here, not beside it, because the counts are checked when params load, and config sits below mlic.data;
    tests/test_synthetic.py checks that they equal the generator's name lists.
    """

    MAX_CULTURES: ClassVar[int] = 32
    MAX_TAGS: ClassVar[int] = 64

    cultures: int = 16  # culture:: attributes; most images show one, as the hue of the backdrop
    tags: int = 48  # tag:: attributes, 1-4 per image, each drawn as coloured shapes of one kind
    tail_ratio: float = 0.002  # rarest attribute's frequency / the most frequent's (geometric in between)
    min_side: int = 48  # each image's width and height are drawn independently in [min_side, max_side]
    max_side: int = 96

    def __post_init__(self):
        counts = {"cultures": (self.cultures, self.MAX_CULTURES), "tags": (self.tags, self.MAX_TAGS)}
        for key, (value, most) in counts.items():
            if not 1 <= value <= most:
                invalid(f"sample.imet.{key}", f"must be in 1..{most}, got {value}")
        if not 0 < self.tail_ratio <= 1:
            invalid("sample.imet.tail_ratio", f"must be in (0, 1], got {self.tail_ratio}", "e.g. 0.002; 1: no tail")
        if not 16 <= self.min_side <= self.max_side:
            invalid(
                "sample.imet.min_side",
                f"need 16 <= min_side <= max_side, got {self.min_side} and {self.max_side}",
                "e.g. min_side: 48, max_side: 96",
            )


@dataclass(frozen=True)
class SampleConfig:
    """The embedded synthetic competition (stage `sample`): Planet-like chips, or iMet-like photos."""

    competition: str = "planet"  # layout generated, by the registry in stages/sample.py: planet, imet2019
    out_dir: str = "data/raw/sample"
    n_train: int = 2000
    n_test: int = 600
    image_size: int = 64  # planet: chip side
    jpeg_quality: int = 95  # planet: JPEG quality
    seed: int = 0
    num_workers: int = 2
    imet: ImetSampleConfig = field(default_factory=ImetSampleConfig)

    def __post_init__(self):
        if self.n_train < 10 or self.n_test < 1:
            invalid("sample.n_train", "needs at least 10 training and 1 test chips")
        if self.image_size < 32:
            invalid("sample.image_size", f"must be >= 32, got {self.image_size}")
        if not 1 <= self.jpeg_quality <= 100:
            invalid("sample.jpeg_quality", f"must be in 1..100, got {self.jpeg_quality}")


@dataclass(frozen=True)
class FolderConfig:
    """Layout of a `folder` dataset: an image folder plus a CSV, paths relative to `data.root`."""

    train_csv: str = "train.csv"
    id_column: str = "id"
    tags_column: str = "tags"  # space-separated labels; "" when label_columns are used
    label_columns: tuple[str, ...] = ()  # one-hot 0/1 columns, instead of tags_column
    train_dir: str = "train"
    test_dir: str = "test"
    test_csv: str = ""  # CSV whose id column lists the test images in submission order; "" lists test_dir
    image_ext: str = ""  # appended to ids to name image files (".jpg"); "" when ids carry their extension

    def __post_init__(self):
        if bool(self.tags_column) == bool(self.label_columns):
            invalid(
                "data.folder.tags_column",
                "set exactly one of tags_column and label_columns",
                "tags_column: tags for a space-separated column, or tags_column: '' with label_columns: [a, b]",
            )


@dataclass(frozen=True)
class DataConfig:
    """Which competition to read, where its raw files are, and which labels to keep."""

    competition: str = "planet"
    root: str = "data/raw/sample"
    min_label_count: int = 3  # labels seen fewer times in training are dropped (iMet study: 3)
    folder: FolderConfig = field(default_factory=FolderConfig)

    def __post_init__(self):
        if self.min_label_count < 0:
            invalid("data.min_label_count", f"must be >= 0, got {self.min_label_count}")


@dataclass(frozen=True)
class PrepareConfig:
    """Label matrix and resized uint8 image cache (stage `prepare`)."""

    out_dir: str = "data/processed/prepare"
    image_size: int = 64
    num_workers: int = 2
    skip_bad_rows: bool = False  # drop training rows with problems (reported) instead of refusing the dataset
    crop_views: int = 0  # extra random crops cached per image (iMet study: 5), beside the plain resize
    crop_scale: float = 0.875  # crop side / side of the resized source the crops come from (224 / 256)
    crop_store: str = "views"  # views: cache every view; source: cache the crops' source, cut the views when read
    seed: int = 0  # crop positions
    max_pixels: int = 40_000_000  # larger images are refused from their header, before decoding (bomb guard)

    def __post_init__(self):
        if self.image_size < 16:
            invalid("prepare.image_size", f"must be >= 16, got {self.image_size}")
        if self.max_pixels < 1:
            invalid("prepare.max_pixels", f"must be >= 1, got {self.max_pixels}", "40000000 is 40 megapixels")
        if self.crop_views < 0:
            invalid("prepare.crop_views", f"must be >= 0, got {self.crop_views}")
        if not 0.1 <= self.crop_scale <= 1.0:
            invalid("prepare.crop_scale", f"must be in [0.1, 1], got {self.crop_scale}")
        if self.crop_store not in ("views", "source"):
            invalid("prepare.crop_store", f"must be views or source, got {self.crop_store!r}",
                    "source keeps (1 / crop_scale)^2 views' pixels per image instead of 1 + crop_views")  # fmt: skip
        if self.num_workers < 1:
            invalid("prepare.num_workers", f"must be >= 1, got {self.num_workers}")

    @property
    def views(self) -> int:
        """Cached views per image: the plain resize plus the random crops."""
        return 1 + self.crop_views


@dataclass(frozen=True)
class HogConfig:
    """HOG features of every cached view (stage `hog`), identical to skimage.feature.hog with L2-Hys blocks."""

    out_dir: str = "data/processed/hog"
    image_size: int = 64  # working size: cached images are resized to this before HOG
    orientations: int = 9
    pixels_per_cell: int = 8
    cells_per_block: int = 2
    batch_size: int = 256
    num_workers: int = 2

    def __post_init__(self):
        if self.image_size < self.pixels_per_cell * self.cells_per_block:
            invalid(
                "hog.image_size",
                f"{self.image_size} px holds no block of {self.cells_per_block} x {self.pixels_per_cell} px cells",
                "raise hog.image_size or lower hog.pixels_per_cell",
            )
        if min(self.orientations, self.pixels_per_cell, self.cells_per_block, self.batch_size, self.num_workers) < 1:
            invalid("hog", "orientations, pixels_per_cell, cells_per_block, batch_size and num_workers must be >= 1")


@dataclass(frozen=True)
class CamProposalsConfig:
    """`proposals.method: cam`: boxes from a trained model's class activation maps."""

    model: str = "baseline"  # the `models` entry whose maps give the boxes (an arch with class_maps: baseline)
    run_dir: str = "data/processed/cam_model"  # stage `cam_model` trains it there per fold; a DVC dep of proposals
    tau: float = 0.5  # a class's map is cut at tau * its max; each connected component becomes a box
    min_score: float = 0.5  # the classes whose maps are read: the model's scores >= this (at least its top class)
    batch_size: int = 64

    def __post_init__(self):
        for name in ("tau", "min_score"):
            if not 0 < getattr(self, name) < 1:
                invalid(f"proposals.cam.{name}", f"must be in (0, 1), got {getattr(self, name)}")
        if self.batch_size < 1:
            invalid("proposals.cam.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class ProposalsConfig:
    """Region proposals of every cached view (stage `proposals`), for the region models (wsddn, kd_wsd, sca)."""

    out_dir: str = "data/processed/proposals"
    method: str = "windows"  # registry: windows, selective_search, cam
    max_boxes: int = 16  # R: every view gets exactly R boxes (a method's best first, topped up with windows)
    num_workers: int = 2  # threads of the per-image methods
    cam: CamProposalsConfig = field(default_factory=CamProposalsConfig)

    def __post_init__(self):
        if self.max_boxes < 1:
            invalid("proposals.max_boxes", f"must be >= 1, got {self.max_boxes}")
        if self.num_workers < 1:
            invalid("proposals.num_workers", f"must be >= 1, got {self.num_workers}")


@dataclass(frozen=True)
class FoldsConfig:
    """Multilabel-stratified k-fold split (stage `folds`)."""

    out_file: str = "data/processed/folds.csv"
    n_splits: int = 3
    seed: int = 42

    def __post_init__(self):
        if self.n_splits < 2:
            invalid("folds.n_splits", f"must be >= 2, got {self.n_splits}")


@dataclass(frozen=True)
class ModelEntry:
    """One entry of the `models` section: its registered architecture and that architecture's own keys.

    The keys are checked by the architecture's config class (`mlic.models.registry.resolve_model`), where an unknown
    key is an error naming the entry, the arch and the key. They are kept raw here so that reading params.yaml imports
    no model code: a stage depends only on the modules it uses (see `mlic.deps`).
    """

    arch: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The entry as written in params.yaml."""
        return {"arch": self.arch, **plain(self.options)}


def model_entry(key: str, value: Any) -> ModelEntry:
    """A params mapping with an `arch` key as a ModelEntry, or an error naming `key`."""
    if not isinstance(value, dict):
        invalid(key, f"expected a mapping with an `arch` key, got {value!r}")
    arch = value.get("arch")
    if not isinstance(arch, str) or not arch:
        invalid(f"{key}.arch", "missing: every models entry names its architecture", "e.g. arch: baseline")
    _check_entry_choices(key, value)
    return ModelEntry(arch, {str(k): v for k, v in value.items() if k != "arch"})


def _check_entry_choices(key: str, value: dict[str, Any]) -> None:
    """Check the registry-named keys of a models entry (arch, loss, pooling, ...) and of the entries nested in it.

    The entry's other keys wait for its architecture's config class (stage `code`), which imports torch; these are
    checked when params load, so that a misspelt loss fails before any stage has run.
    """
    for name, option in value.items():
        if isinstance(option, dict) and "arch" in option:  # a nested entry: a distilled model's student or teacher
            model_entry(f"{key}.{name}", option)
        else:
            check_choice(f"{key}.{name}", option)


@dataclass(frozen=True)
class TrainConfig:
    """Training one model on one fold, then out-of-fold and test prediction with TTA (stage `train`)."""

    out_dir: str = "data/processed/train"
    checkpoint_dir: str = "data/interim/checkpoints"  # per-epoch resume state; removed once a fold finishes
    teacher_dir: str = "data/processed/teachers"  # stage `teacher`: a distilled student's teacher, per fold
    models: tuple[str, ...] = ("baseline",)  # entries of the `models` section to train, one DVC stage per fold
    folds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    warmup_epochs: float = 1.0  # linear warmup from 0, then cosine decay to lr * min_lr_ratio
    min_lr_ratio: float = 0.01
    weight_decay: float = 1e-4  # not applied to biases and normalisation weights
    optimizer: str = "adamw"
    accumulate_steps: int = 1  # optimizer step every N batches: effective batch = batch_size * N
    clip_grad_norm: float = 0.0  # clip the global gradient norm to this (0: off)
    ema_decay: float = 0.0  # exponential moving average of the weights, used for validation and prediction (0: off)
    early_stopping_patience: int = 0  # stop after N epochs without a better fold F-beta, keep the best epoch (0: off)
    sampler: str = "random"  # random, or stratified: batches whose label frequencies track the training set's
    oversample_power: float = 0.0  # stratified sampler: draw samples ~ (1 / rarest label frequency) ** power
    augment: str = "satellite"
    tta: str = "flips"
    amp: bool = True
    channels_last: bool = True  # CUDA only: NHWC memory format, faster convolutions with AMP
    compile: bool = False  # CUDA only: torch.compile the model (slow first epoch, faster later ones)
    sync_bn: bool = True  # multi-GPU (torchrun) only: synchronise batch-norm statistics across GPUs
    device: str = "auto"
    nproc_per_node: int = 1  # > 1: the train stage relaunches itself under torchrun with this many processes (DDP)
    num_workers: int | str = "auto"  # data-loader processes; auto: the cores this process may use, less one, <= 16
    prefetch_factor: int = 4  # batches each loader worker prepares ahead
    log_every: int = 50  # read the losses from the device every N steps (0: once per epoch); NaN stops at the read
    seed: int = 42

    def __post_init__(self):
        if self.nproc_per_node < 1:
            invalid("train.nproc_per_node", f"must be >= 1, got {self.nproc_per_node}", "1 trains in this process")
        if not self.models or len(set(self.models)) != len(self.models):
            invalid(
                "train.models", f"must be a non-empty list of distinct entries of `models`, got {list(self.models)}"
            )
        if not self.folds or len(set(self.folds)) != len(self.folds):
            invalid("train.folds", f"must be a non-empty list of distinct fold ids, got {list(self.folds)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                invalid(f"train.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            invalid("train.lr", f"must be > 0, got {self.lr}")
        if self.oversample_power < 0:
            invalid("train.oversample_power", f"must be >= 0, got {self.oversample_power}")
        for name in ("warmup_epochs", "clip_grad_norm", "early_stopping_patience"):
            if getattr(self, name) < 0:
                invalid(f"train.{name}", f"must be >= 0, got {getattr(self, name)}")
        if self.warmup_epochs >= self.epochs:
            invalid("train.warmup_epochs", f"must be below train.epochs ({self.epochs}), got {self.warmup_epochs}")
        if not 0 <= self.min_lr_ratio <= 1:
            invalid("train.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        if self.accumulate_steps < 1:
            invalid("train.accumulate_steps", f"must be >= 1, got {self.accumulate_steps}")
        if not 0 <= self.ema_decay < 1:
            invalid("train.ema_decay", f"must be in [0, 1), got {self.ema_decay}", "0.999 is typical; 0 turns EMA off")
        if self.num_workers != "auto" and (isinstance(self.num_workers, str) or self.num_workers < 0):
            invalid("train.num_workers", f"must be auto or an integer >= 0, got {self.num_workers!r}",
                    "auto: the cores this process may use, less one for the training loop, at most 16")  # fmt: skip
        if self.prefetch_factor < 1:
            invalid("train.prefetch_factor", f"must be >= 1, got {self.prefetch_factor}")
        if self.log_every < 0:
            invalid("train.log_every", f"must be >= 0 (0: once per epoch), got {self.log_every}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            invalid("train.device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True)
class ThresholdsConfig:
    """Per-class decision thresholds fitted on out-of-fold predictions for the F-beta metric (stage `thresholds`)."""

    out_file: str = "data/processed/thresholds.json"
    metrics_file: str = "reports/thresholds.json"  # in-sample and nested scores of every compared method
    method: str = "auto"  # the submission's method; auto: the best nested score among compare_methods
    compare_methods: tuple[str, ...] = ("global", "per_class_exact")  # also scored (nested); auto's candidates
    auto_shrink: tuple[float, ...] = (0.0, 10.0, 100.0, 1000.0)  # auto: the shrink values tried per method
    auto_margin_se: float = 2.0  # auto: a per-class pick must beat global by this many SEs, nested and out of sample
    nested_splits: int = 5  # one trained fold: its OOF rows are split this many ways for the nested score
    beta: float = 2.0
    grid_step: float = 0.01  # the global method's grid
    max_passes: int = 10  # per_class_exact: coordinate-ascent passes at most (it stops when F-beta stops rising)
    shrink: float = 0.0  # pull class c's threshold to the global one: (n_c t_c + shrink t) / (n_c + shrink)
    min_labels: int = 1  # every row gets at least this many labels (its top classes, relative to thresholds)
    max_labels: int = 0  # and at most this many (0: no limit)
    optuna_trials: int = 200  # optuna: trials per fit, counting those already in the study
    optuna_storage: str = "data/processed/optuna.db"  # SQLite; a study resumes, and optuna-dashboard opens it
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.grid_step <= 0.5:
            invalid("thresholds.grid_step", f"must be in (0, 0.5], got {self.grid_step}")
        if self.beta <= 0:
            invalid("thresholds.beta", f"must be > 0, got {self.beta}")
        if self.min_labels < 0:
            invalid("thresholds.min_labels", f"must be >= 0, got {self.min_labels}")
        if self.max_labels and self.max_labels < max(self.min_labels, 1):
            invalid("thresholds.max_labels", f"must be 0 (off) or >= min_labels, got {self.max_labels}")
        for name in ("max_passes", "optuna_trials"):
            if getattr(self, name) < 1:
                invalid(f"thresholds.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.shrink < 0:
            invalid("thresholds.shrink", f"must be >= 0, got {self.shrink}")
        self._check_auto()

    def _check_auto(self) -> None:
        """The `auto` method's knobs: a non-empty shrink grid, a margin, at least two nested splits."""
        if not self.auto_shrink or min(self.auto_shrink) < 0:
            invalid("thresholds.auto_shrink", f"must be a non-empty list of values >= 0, got {list(self.auto_shrink)}",
                    fix="e.g. auto_shrink: [0, 10, 100, 1000]")  # fmt: skip
        if self.auto_margin_se < 0:
            invalid("thresholds.auto_margin_se", f"must be >= 0, got {self.auto_margin_se}")
        if self.nested_splits < 2:
            invalid("thresholds.nested_splits", f"must be >= 2, got {self.nested_splits}")
        if "auto" in self.compare_methods:
            invalid("thresholds.compare_methods", "lists auto, which is the choice among them, not a candidate",
                    fix="list only fitting methods: global, per_class_exact, optuna")  # fmt: skip


@dataclass(frozen=True)
class EnsembleConfig:
    """Blending the models' out-of-fold and test probabilities (stage `ensemble`); folds are always averaged."""

    out_dir: str = "data/processed/ensemble"
    method: str = "auto"  # registry: mean, geometric, weighted, per_class; auto: the best nested score (below)
    auto_candidates: tuple[str, ...] = ("geometric", "weighted", "per_class")  # auto: scored against mean
    auto_margin_se: float = 2.0  # auto keeps mean unless a candidate beats it by this many SEs (paired, per row)
    per_class_shrink: float = 100.0  # per_class: w_c = (n_c w_c + shrink w) / (n_c + shrink), n_c positives

    def __post_init__(self):
        if not 0 <= self.auto_margin_se < float("inf"):  # NaN fails the comparison too
            invalid("ensemble.auto_margin_se", f"must be a number >= 0, got {self.auto_margin_se}",
                    fix="e.g. auto_margin_se: 2 (standard errors of the paired per-row difference)")  # fmt: skip
        if not 0 <= self.per_class_shrink < float("inf"):
            invalid("ensemble.per_class_shrink", f"must be a number >= 0, got {self.per_class_shrink}",
                    fix="e.g. per_class_shrink: 100 (positives; 0: each class keeps its own weights)")  # fmt: skip
        if "auto" in self.auto_candidates:
            invalid("ensemble.auto_candidates", "lists auto, which is the choice among them, not a candidate",
                    fix="list registered methods: geometric, weighted, per_class (mean is always scored)")  # fmt: skip


@dataclass(frozen=True)
class SubmitConfig:
    """Submission CSV writing (stage `submit`)."""

    out_file: str = "submissions/submission.csv"
    predictions_dir: str = "data/processed/submit"


@dataclass(frozen=True)
class EvaluateConfig:
    """Metrics file and plots on out-of-fold predictions (stage `evaluate`)."""

    out_dir: str = "reports"


def _default_space() -> dict[str, Distribution]:
    return {"train.lr": Distribution("log_uniform", (1e-3, 1e-2)),
            "train.augment": Distribution("choice", ("none", "satellite"))}  # fmt: skip


@dataclass(frozen=True)
class TuneConfig:
    """`mlic tune`: an Optuna study over params keys, one DVC experiment per trial. No stage reads this section.

    `space` is written in the language of `mlic.search_space`; every params load checks it, each key against its
    section (`check_tuned_key`), so that a bad space fails before a study starts.
    """

    trials: int = 20  # of the whole study: a resumed study counts the trials it has
    study: str = "tune"  # Optuna study name; trial k runs as the DVC experiment <study>-<k>
    storage: str = "data/processed/tune.db"  # SQLite; git-ignored, or `dvc exp run` takes it for an experiment file
    seed: int = 0  # trial k's TPE sampler is seeded with seed + k
    folds: tuple[int, ...] = (0,)  # train.folds of every trial
    target: str = "thresholds"  # the stage `dvc exp run` reproduces: thresholds, or a stage after it
    pruner: str = "median"  # registry (mlic.experiments.tune.study): none, median
    prune_startup_trials: int = 5  # median: finished trials before any is pruned
    prune_warmup_steps: int = 2  # median: epochs (counted over the trial's models and folds) before it may prune
    poll_seconds: float = 5.0  # how often the running trial's validation curves are read
    max_failures: int = 3  # the study stops after this many failed trials in a row
    start_from_params: bool = True  # a new study's first trial is the params as they are (when the space holds them)
    space: dict[str, Distribution] = field(default_factory=_default_space)  # dotted params key -> distribution

    def __post_init__(self):
        for name in ("trials", "max_failures"):
            if getattr(self, name) < 1:
                invalid(f"tune.{name}", f"must be >= 1, got {getattr(self, name)}")
        for name in ("prune_startup_trials", "prune_warmup_steps"):
            if getattr(self, name) < 0:
                invalid(f"tune.{name}", f"must be >= 0, got {getattr(self, name)}")
        if self.poll_seconds <= 0:
            invalid("tune.poll_seconds", f"must be > 0, got {self.poll_seconds}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", self.study):
            invalid("tune.study", f"must be letters, digits, _ and -, got {self.study!r}", "it names the experiments")
        if not self.folds or len(set(self.folds)) != len(self.folds):
            invalid("tune.folds", f"must be a non-empty list of distinct fold ids, got {list(self.folds)}")
        if not self.target or not self.storage:
            invalid("tune.target", "tune.target and tune.storage must not be empty")


_ABSENT = object()


def param_at(data: Any, key: str, default: Any = _ABSENT) -> Any:
    """The value at a dotted key ("train.lr") of a nested params mapping.

    Returns:
        The value; `default` when a part of the key is absent (or its parent is no mapping), if one is given.

    Raises:
        KeyError: The key is absent and no default is given.
    """
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _ABSENT:
                raise KeyError(key)
            return default
        node = node[part]
    return node


def check_tuned_key(params: dict[str, Any], key: str, dist: Distribution) -> None:
    """Fail unless `key` is a params key (a leaf of `params`, the resolved mapping) that takes each of `dist.args`.

    Each value (a range's ends, every choice) is put in a copy of the key's section, which must still load: a float
    range on an integer key, or `train.lr: {uniform: [0, 0.01]}`, fails here rather than in a trial. A `models`
    entry's keys are its architecture's, checked by the `code` stage.
    """
    where = f"tune.space.{key}"
    parts = key.split(".")
    section, parents, leaf = parts[0], parts[1:-1], parts[-1]
    if key == "train.folds" or section == "tune":
        invalid(where, "cannot be tuned", fix="tune.folds sets the folds of every trial")
    node = param_at(params, ".".join(parts[:-1]), None)
    if len(parts) < 2 or not isinstance(node, dict) or leaf not in node or isinstance(node[leaf], dict):
        invalid(where, "is not a key of params.yaml",
                fix="tune keys written in params.yaml (train.lr, models.baseline.drop_rate); a loss knob must be in "
                "its loss_options first, e.g. loss_options: {gamma_neg: 4}")  # fmt: skip
    cls = typing.get_type_hints(Config)[section]
    if not dataclasses.is_dataclass(cls):
        return
    data = copy.deepcopy(params[section])
    target = param_at({section: data}, ".".join([section, *parents]))
    for value in dist.args:
        target[leaf] = value
        try:
            SCHEMA.build(cls, data, section)
        except ConfigError as exc:
            invalid(where, f"{dist.to_dict()} draws {value!r}, which params refuse: {exc.message}",
                    fix=exc.fix or "narrow the distribution to values the key takes")  # fmt: skip


@dataclass(frozen=True)
class Config:
    """The whole of params.yaml."""

    sample: SampleConfig = field(default_factory=SampleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    hog: HogConfig = field(default_factory=HogConfig)
    proposals: ProposalsConfig = field(default_factory=ProposalsConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    models: dict[str, ModelEntry] = field(default_factory=lambda: {"baseline": ModelEntry("baseline")})
    train: TrainConfig = field(default_factory=TrainConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig)
    submit: SubmitConfig = field(default_factory=SubmitConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def __post_init__(self):
        for key, folds in (("train.folds", self.train.folds), ("tune.folds", self.tune.folds)):
            bad = [f for f in folds if not 0 <= f < self.folds.n_splits]
            if bad:
                invalid(key, f"fold ids {bad} are outside 0..{self.folds.n_splits - 1} (folds.n_splits)")
        for key in self.train.models:
            if key not in self.models:
                close = difflib.get_close_matches(key, list(self.models), n=1)
                invalid(
                    "train.models",
                    f"{key!r} is not an entry of `models`" + (f"; did you mean {close[0]!r}?" if close else ""),
                    f"known: {', '.join(self.models)}",
                )
        params = self.to_dict() if self.tune.space else {}
        for key, dist in self.tune.space.items():
            check_tuned_key(params, key, dist)

    def model(self, key: str) -> ModelEntry:
        """The `models` entry called `key`."""
        if key not in self.models:
            invalid("models", f"no entry {key!r}", f"known: {', '.join(self.models)}")
        return self.models[key]

    def fold_dir(self, model: str, fold: int) -> Path:
        """Where `train` writes one model's checkpoint and predictions for one fold (dvc.yaml uses the same)."""
        return Path(self.train.out_dir) / model / f"fold_{fold}"

    def teacher_dir(self, model: str, fold: int) -> Path:
        """Where stage `teacher` writes the teacher of a distilled model for one fold (dvc.yaml uses the same)."""
        return Path(self.train.teacher_dir) / model / f"fold_{fold}"

    def checkpoint_dir(self, model: str, fold: int) -> Path:
        """Where `train` keeps the per-epoch resume state of one model and fold while it runs."""
        return Path(self.train.checkpoint_dir) / model / f"fold_{fold}"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, as in params.yaml (tuples become lists)."""
        data = plain(dataclasses.asdict(self))
        data["models"] = {key: entry.to_dict() for key, entry in self.models.items()}
        data["tune"]["space"] = {key: dist.to_dict() for key, dist in self.tune.space.items()}
        return data

    def narrowed(self, model: str, fold: int) -> Config:
        """This config as one fold of one model sees it: `models` and `train.models` hold that entry alone.

        Fold checkpoints carry it, so that they rebuild from their own file, and the resume fingerprint covers it.
        """
        train = dataclasses.replace(self.train, models=(model,), folds=(fold,))
        # no tune section: its space names keys of other models' entries, which this view no longer has
        return dataclasses.replace(self, models={model: self.model(model)}, train=train, tune=TuneConfig())


# entries that parse themselves: a models entry (nested in another for a distilled student), a tune.space entry
SCHEMA = Schema({ModelEntry: model_entry, Distribution: distribution}, check_choice)


def build_entry(cls: type, data: dict[str, Any], prefix: str, owner: str) -> Any:
    """Build one typed entry of params (e.g. `models.hourglass` as the hourglass arch's config class).

    Unknown keys are errors naming `prefix.key` and the `owner` ("arch 'hourglass'"); the class's own checks name
    the bare key (`invalid("dilation", ...)`) and get the prefix here.
    """
    try:
        return SCHEMA.build(cls, data, prefix, owner)
    except ConfigError as exc:
        message = exc.message if exc.message.startswith(f"{prefix}.") else f"{prefix}.{exc.message}"
        raise ConfigError(f"{message} ({owner})", path=DEFAULT_PARAMS, fix=exc.fix) from None


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and check a Config from a params mapping; missing keys take their defaults."""
    return SCHEMA.build(Config, data, "")


def load_config(path: str | Path = DEFAULT_PARAMS) -> Config:
    """Load params.yaml into a checked, frozen Config.

    Raises:
        ConfigError: If the file is missing, is not YAML, or has an unknown, mistyped or inconsistent key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("params file not found", path=path, fix="run from the project root, or pass --params")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {exc}", path=path, row=mark.line + 1 if mark else None) from None
    try:
        return config_from_dict(data or {})
    except ConfigError as exc:
        exc.path = path
        raise ConfigError(exc.message, path=path, fix=exc.fix) from None


def select_sections(data: dict[str, Any], sections: Sequence[str]) -> dict[str, Any]:
    """The parts of a nested params mapping named by dotted keys ("data", "train.models"), nested as in params."""
    picked: dict[str, Any] = {}
    for dotted in sections:
        *parents, leaf = dotted.split(".")
        source, target = data, picked
        for part in parents:
            source, target = source[part], target.setdefault(part, {})
        target[leaf] = source[leaf]
    return picked


def write_params(data: dict[str, Any], path: str | Path) -> None:
    """Write a params mapping (a resolved config, or some of its sections) as YAML in params order, atomically."""
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def save_config(cfg: Config, path: str | Path, sections: Sequence[str] | None = None) -> None:
    """Write the resolved config (defaults filled in) as YAML, atomically: all of it, or only `sections`.

    A stage saves the sections it reads, so that its output changes only when its inputs do (a stage whose output
    changes reruns everything downstream of it).
    """
    data = cfg.to_dict()
    write_params(select_sections(data, sections) if sections else data, path)
