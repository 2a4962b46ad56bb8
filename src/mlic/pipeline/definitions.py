"""The pipeline's stages for one set of params: every stage explicit, with exactly the deps and params it reads.

A stage family is one `mlic <command>`: a rule saying whether the params need it (`needed`) and a builder writing its
stages (`build`): one stage, or one per model and fold (`train-<model>-<fold>`). Paths are the params' own values,
so dvc.yaml needs no `${...}` and no `matrix`: what a stage reads is written out in it.

- data deps: the folders and files it reads, a train stage's included: the feature folders its model (or its
  teacher) reads (`mlic.sources`), and its teacher's folder;
- code deps: the modules `mlic <command>` imports (`mlic.deps`), and for a stage that builds models, the modules of
  those architectures (nested ones included), so that editing one architecture retrains only its models;
- params: the sections and keys it reads. A train stage reads every `TrainConfig` field but those in
  `TRAIN_FIELDS_NOT_READ` (which say why), so a new training knob reruns training without an edit here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlic import deps, layout
from mlic.config import Config, TrainConfig

if TYPE_CHECKING:
    from mlic.models.registry import ResolvedModel

# TrainConfig fields that no train stage reads as a knob (the others all are its params).
TRAIN_FIELDS_NOT_READ = {
    "models": "which models have stages: the generator reads it; each stage reads its own `models.<entry>`",
    "folds": "which folds have stages: the generator reads it",
    "out_dir": "where the fold folder goes: the stage's `outs`",
    "teacher_dir": "where a teacher goes: the teacher stage's `outs` and the student's dep",
    "checkpoint_dir": "the per-epoch resume state, removed once a fold finishes: no output depends on where it was",
}


def train_params() -> tuple[str, ...]:
    """The params every training stage (train, teacher, cam_model) reads besides its model's entry."""
    knobs = [f"train.{f.name}" for f in dataclasses.fields(TrainConfig) if f.name not in TRAIN_FIELDS_NOT_READ]
    return (*knobs, "thresholds.beta")  # validation scores F-beta at beta (early stopping, best epoch)


@dataclass(frozen=True)
class Stage:
    """One dvc.yaml stage: `mlic <command> <args>`, what it reads and what it writes."""

    name: str
    command: str
    desc: str
    args: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()  # data: folders and files
    archs: tuple[str, ...] = ()  # architectures it builds: their modules are code deps too
    params: tuple[str, ...] = ()
    outs: tuple[Any, ...] = ()  # a path, or {path: {options}}
    metrics: tuple[Any, ...] = ()
    plots: tuple[Any, ...] = ()

    def code(self, project: Path) -> list[str]:
        """The source files this stage runs: its command's import closure and its architectures', with their data."""
        root = deps.source_root(project)
        modules = set(deps.stage_modules(self.command.replace("-", "_"), root))
        for arch in self.archs:
            modules.update(deps.arch_modules(arch, root))
        files = [*(deps.module_file(m, root) for m in modules), *deps.package_data(modules, root)]
        return deps.relative_paths(files, project)

    def to_dict(self, project: Path) -> dict[str, Any]:
        """The stage as dvc.yaml writes it."""
        body: dict[str, Any] = {"desc": self.desc, "cmd": " ".join(["mlic", self.command, *self.args])}
        body["deps"] = [*self.deps, *self.code(project)]
        for key in ("params", "outs", "metrics", "plots"):
            if getattr(self, key):
                body[key] = list(getattr(self, key))
        return body


@dataclass(frozen=True)
class Needs:
    """What the trained models read: their batch sources' stages (theirs, their teachers' and the CAM model's)."""

    source_stages: frozenset[str]
    teachers: tuple[str, ...]  # the models (train.models) that have a teacher


@dataclass(frozen=True)
class Plan:
    """The params a pipeline is generated for, with what its models need (resolved once, on first use: torch)."""

    cfg: Config
    project: Path = field(default=Path("."))

    @cached_property
    def models(self) -> dict[str, ResolvedModel]:
        """Every model a stage trains, by its `models` key: train.models, and the CAM model with cam proposals."""
        from mlic.models.registry import resolve_model

        keys = list(self.cfg.train.models)
        if self.cfg.proposals.method == "cam" and self.cfg.proposals.cam.model not in keys:
            keys.append(self.cfg.proposals.cam.model)
        return {key: resolve_model(self.cfg, key) for key in keys}

    @cached_property
    def needs(self) -> Needs:
        """The feature stages and teachers of the models (resolving an entry checks it: an unknown key fails here)."""
        stages = {stage for key in self.models for stage in self.feature_outputs(key)}
        teachers = tuple(k for k in self.cfg.train.models if self.models[k].config.teacher_entry() is not None)
        return Needs(frozenset(stages), teachers)

    def teacher(self, key: str) -> ResolvedModel | None:
        """The resolved teacher of model `key`, or None."""
        from mlic.models.registry import resolve_entry

        entry = self.models[key].config.teacher_entry()
        return None if entry is None else resolve_entry(f"{key}.teacher", entry)

    def feature_outputs(self, key: str) -> dict[str, str]:
        """Stage -> output folder of each feature stage that model `key` (or its teacher) reads."""
        from mlic.sources import SOURCES

        resolved = [self.models[key], *filter(None, [self.teacher(key)])]
        sources = [SOURCES.get(name) for r in resolved for name in r.task().sources]
        outputs = {s.stage: s.output(self.cfg) for s in sources if s.stage is not None}
        return dict(sorted(outputs.items()))


@dataclass(frozen=True)
class Family:
    """The stages of one command: whether the params need them, and how to write them."""

    needed: Callable[[Plan], bool]
    build: Callable[[Plan], list[Stage]]


def _same_path(a: str, b: str) -> bool:
    return os.path.normpath(a) == os.path.normpath(b)


def _fold_dirs(cfg: Config) -> tuple[str, ...]:
    return tuple(cfg.fold_dir(m, f).as_posix() for m in cfg.train.models for f in cfg.train.folds)


def _inputs(cfg: Config) -> tuple[str, ...]:
    return (cfg.prepare.out_dir, cfg.folds.out_file)


def _sample(plan: Plan) -> list[Stage]:
    out = plan.cfg.sample.out_dir
    return [Stage("sample", "sample", "the embedded synthetic competition", params=("sample",), outs=(out,))]


def _prepare(plan: Plan) -> list[Stage]:
    cfg = plan.cfg
    desc = "read and check the data: label matrix, image cache, crops"
    return [Stage("prepare", "prepare", desc, deps=(cfg.data.root,), params=("data", "prepare"),
                  outs=(cfg.prepare.out_dir,))]  # fmt: skip


def _hog(plan: Plan) -> list[Stage]:
    cfg = plan.cfg
    desc = "HOG features of every cached view"
    return [Stage("hog", "hog", desc, deps=(cfg.prepare.out_dir,), params=("hog",), outs=(cfg.hog.out_dir,))]


def _folds(plan: Plan) -> list[Stage]:
    cfg = plan.cfg
    desc = "multilabel-stratified folds"
    return [Stage("folds", "folds", desc, deps=(cfg.prepare.out_dir,), params=("folds.n_splits", "folds.seed"),
                  outs=(cfg.folds.out_file,))]  # fmt: skip


def _cam_model(plan: Plan) -> list[Stage]:
    cfg, cam = plan.cfg, plan.cfg.proposals.cam
    params = ("proposals.method", "proposals.cam.model", f"models.{cam.model}", *train_params())
    archs = tuple(plan.models[cam.model].arch_names())
    desc = "the model whose class maps give the cam proposals, on the fold's training rows"
    return [Stage(f"cam_model-{fold}", "cam-model", desc, ("--fold", str(fold)), _inputs(cfg), archs, params,
                  outs=((Path(cam.run_dir) / f"fold_{fold}").as_posix(),)) for fold in cfg.train.folds]  # fmt: skip


def _proposals(plan: Plan) -> list[Stage]:
    cfg = plan.cfg
    cams = tuple((Path(cfg.proposals.cam.run_dir) / f"fold_{f}").as_posix() for f in cfg.train.folds)
    data = (*_inputs(cfg), *(cams if cfg.proposals.method == "cam" else ()))
    desc = "region proposals of every cached view"
    return [Stage("proposals", "proposals", desc, deps=data, params=("proposals",), outs=(cfg.proposals.out_dir,))]


def _teacher(plan: Plan) -> list[Stage]:
    cfg, stages = plan.cfg, []
    for key in plan.needs.teachers:
        teacher = plan.teacher(key)
        features = tuple(plan.feature_outputs(key).values())
        for fold in cfg.train.folds:
            stages.append(Stage(
                f"teacher-{key}-{fold}", "teacher", f"the teacher of {key} ({teacher.spec.name}), on the fold's "
                "training rows only", ("--model", key, "--fold", str(fold)), (*_inputs(cfg), *features),
                tuple(teacher.arch_names()), (f"models.{key}", *train_params()),
                outs=(cfg.teacher_dir(key, fold).as_posix(),),
            ))  # fmt: skip
    return stages


def _train(plan: Plan) -> list[Stage]:
    cfg, stages = plan.cfg, []
    for key in cfg.train.models:
        features = tuple(plan.feature_outputs(key).values())
        for fold in cfg.train.folds:
            teacher = (cfg.teacher_dir(key, fold).as_posix(),) if key in plan.needs.teachers else ()
            stages.append(Stage(
                f"train-{key}-{fold}", "train", f"train {key} on fold {fold}; OOF and test predictions",
                ("--model", key, "--fold", str(fold), "--resume"), (*_inputs(cfg), *features, *teacher),
                tuple(plan.models[key].arch_names()), (f"models.{key}", *train_params()),
                outs=(cfg.fold_dir(key, fold).as_posix(),),
            ))  # fmt: skip
    return stages


# the ensemble's nested score and parts: the metric, label limits and split of the thresholds stage
ENSEMBLE_SCORING = ("thresholds.beta", "thresholds.min_labels", "thresholds.max_labels", "thresholds.grid_step",
                    "thresholds.nested_splits", "thresholds.seed")  # fmt: skip


def _ensemble(plan: Plan) -> list[Stage]:
    cfg = plan.cfg
    return [Stage("ensemble", "ensemble", "blend the models' out-of-fold and test predictions",
                  deps=(*_fold_dirs(cfg), cfg.prepare.out_dir),
                  params=("train.models", "train.folds", "ensemble", *ENSEMBLE_SCORING),
                  outs=(cfg.ensemble.out_dir,))]  # fmt: skip


def _thresholds(plan: Plan) -> list[Stage]:
    cfg = plan.cfg
    return [Stage("thresholds", "thresholds", "per-class F-beta thresholds on the out-of-fold predictions",
                  deps=(cfg.prepare.out_dir, cfg.ensemble.out_dir), params=("thresholds",),
                  outs=(cfg.thresholds.out_file,),  # not optuna_storage: a resume aid whose bytes change every run
                  metrics=({cfg.thresholds.metrics_file: {"cache": False}},))]  # fmt: skip


def _submit(plan: Plan) -> list[Stage]:
    cfg = plan.cfg
    params = ("data.competition", "data.folder", "submit", "thresholds.min_labels", "thresholds.max_labels")
    return [Stage("submit", "submit", "the Kaggle submission CSV",
                  deps=(cfg.prepare.out_dir, cfg.ensemble.out_dir, cfg.thresholds.out_file), params=params,
                  outs=(cfg.submit.predictions_dir, cfg.submit.out_file))]  # fmt: skip


EVALUATE_PLOTS: tuple[tuple[str, dict[str, str]], ...] = (
    (layout.PER_CLASS_FILE, {"x": "class", "y": "f2", "template": "bar_horizontal"}),
    (layout.CURVE_FILE, {"x": "threshold", "y": "model"}),
    *((png, {}) for png in (layout.CURVE_PNG, layout.CLASS_CURVES_PNG, layout.PR_PNG, layout.TRAINING_PNG,
                            layout.SPREAD_PNG)),
)  # fmt: skip


def _evaluate(plan: Plan) -> list[Stage]:
    cfg, out = plan.cfg, Path(plan.cfg.evaluate.out_dir)
    data = (cfg.prepare.out_dir, *_fold_dirs(cfg), cfg.ensemble.out_dir, cfg.thresholds.out_file,
            cfg.thresholds.metrics_file)  # fmt: skip
    plots = tuple({(out / name).as_posix(): {"cache": False, **spec}} for name, spec in EVALUATE_PLOTS)
    return [Stage("evaluate", "evaluate", "the run report: out-of-fold metrics, tables and plots", deps=data,
                  params=("train.models", "train.folds", "thresholds", "evaluate"),
                  outs=({(out / layout.REPORT_FILE).as_posix(): {"cache": False}},),
                  metrics=({(out / layout.METRICS_FILE).as_posix(): {"cache": False}},), plots=plots)]  # fmt: skip


def _always(plan: Plan) -> bool:
    return True


# `mlic <command>` -> its stages, in pipeline order. A family whose rule says no is left out of dvc.yaml.
FAMILIES: dict[str, Family] = {
    "sample": Family(lambda p: _same_path(p.cfg.data.root, p.cfg.sample.out_dir), _sample),
    "prepare": Family(_always, _prepare),
    "hog": Family(lambda p: "hog" in p.needs.source_stages, _hog),
    "folds": Family(_always, _folds),
    "cam-model": Family(lambda p: "proposals" in p.needs.source_stages and p.cfg.proposals.method == "cam", _cam_model),
    "proposals": Family(lambda p: "proposals" in p.needs.source_stages, _proposals),
    "teacher": Family(lambda p: bool(p.needs.teachers), _teacher),
    "train": Family(_always, _train),
    "ensemble": Family(_always, _ensemble),
    "thresholds": Family(_always, _thresholds),
    "submit": Family(_always, _submit),
    "evaluate": Family(_always, _evaluate),
}


def pipeline_stages(plan: Plan) -> list[Stage]:
    """Every stage the params need, in pipeline order."""
    return [stage for family in FAMILIES.values() if family.needed(plan) for stage in family.build(plan)]
