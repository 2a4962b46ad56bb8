"""`kd_wsd`: an image classifier distilled from a weakly-supervised detector (MLIC-KD-WSD, Liu et al., ACM MM 2018).

The student is any registered image classifier that reads the image alone (`student`, a nested models entry: baseline
by default; `student_archs()` lists them, and any other arch is refused); the teacher is a WSDDN (`teacher`,
`mlic.models.wsddn`) trained by stage `teacher` on the same fold's training rows, which training loads and hands to
the task (`FoldRun.teacher`: this module imports no training or prediction code). Training has two phases
(`KdWsdTask`):
1. feature transfer, `feature_epochs`: the student backbone's last feature map is RoI-aligned on the proposals
   (rescaled to its stride) and a linear adapter (a 1x1 convolution) maps it onto the frozen teacher's RoI features
   under an L2 loss, the only loss of the phase; only the student's backbone and the adapter train;
2. prediction transfer: the student's label loss (its own task's, with this entry's `loss`) plus the distillation
   term, BCE(s * student logits, teacher phi), with s a learnable scale initialised at `scale_init` (0.2) and the
   teacher's class and region logits sharpened (multiplied) by `sharpen` (2) before its softmaxes (the region logits
   after their division by the teacher's `detection_temperature`, 2 by default: the two cancel on that stream).
At inference the student runs alone: `forward(images)` is the student's output and `predict_step` its own task's, so
prediction and ONNX export read the image only (`predict_sources`), and neither the teacher nor the proposals are
needed.

A student trained on several outputs (hourglass's deep supervision, SRN's three branches) distils each of them as its
task weighs their label losses: the distillation term is its task's loss with BCE on the s-scaled outputs against
phi. Its own training phases (SRN's) are not run: kd_wsd's phases replace them, and its task trains every output
jointly, as outside its schedule.

With `distill: false` the same student trains on the labels alone, for the same epochs: the control row of the
leaderboard. Where this follows the issue over the paper: the paper's student and teacher share one backbone type
and it transfers fc-level region features; here the adapter matches the teacher's RoI-aligned last map.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlic.config import ModelEntry
from mlic.errors import ConfigError, MlicError, invalid
from mlic.models.backbones import create_backbone, feature_channels, feature_map
from mlic.models.regions import region_features
from mlic.models.registry import (
    ArchConfig,
    ModelDims,
    ResolvedModel,
    discover_archs,
    get_arch,
    register_arch,
    resolve_entry,
)
from mlic.tasks.base import FoldRun, Phase, StepOutput, Task, rows_digest

DEFAULT_STUDENT = {"backbone": "resnet10t", "pretrained": False, "pretrained_file": None, "extra_filters": 128}
DEFAULT_TEACHER = {"backbone": "resnet10t", "pretrained": False, "pretrained_file": None}
DISTILL_LOSS = "bce"  # of the distillation term: BCE(s * logits, phi), whatever the label loss


@dataclass(frozen=True)
class KdWsdConfig(ArchConfig):
    """`arch: kd_wsd`; `loss` is the student's label loss (its own entry's `loss` is not read)."""

    student: ModelEntry = field(default_factory=lambda: ModelEntry("baseline", dict(DEFAULT_STUDENT)))
    teacher: ModelEntry = field(default_factory=lambda: ModelEntry("wsddn", dict(DEFAULT_TEACHER)))
    distill: bool = True  # false: the student alone on the labels (no teacher, no proposals), the control
    feature_epochs: int = 1  # phase 1 (feature transfer); the rest of train.epochs is phase 2
    scale_init: float = 0.2  # s, the learnable scale of the student's logits in the distillation term
    sharpen: float = 2.0  # the teacher's logits are multiplied by this before its two softmaxes
    distill_weight: float = 1.0  # weight of BCE(s * logits, teacher phi) beside the label loss

    def __post_init__(self):
        super().__post_init__()
        if self.feature_epochs < 0:
            invalid("feature_epochs", f"must be >= 0, got {self.feature_epochs}")
        for name in ("scale_init", "sharpen"):
            if getattr(self, name) <= 0:
                invalid(name, f"must be > 0, got {getattr(self, name)}")
        if self.distill_weight < 0:
            invalid("distill_weight", f"must be >= 0, got {self.distill_weight}")

    def nested_entries(self) -> tuple[ModelEntry, ...]:
        """The student's and the teacher's entries (their architectures' code is this model's code too)."""
        return (self.student, self.teacher)

    def teacher_entry(self) -> ModelEntry | None:
        """What stage `teacher` trains for this model: the WSDDN, or nothing without distillation."""
        return self.teacher if self.distill else None

    def resolved_student(self) -> ResolvedModel:
        """The student entry under its architecture's config class (an unknown key names `student`)."""
        return resolve_entry("student", self.student)

    def resolved_teacher(self) -> ResolvedModel:
        """The teacher entry under its architecture's config class."""
        return resolve_entry("teacher", self.teacher)


def reads_image_alone(task: Task) -> bool:
    """Whether a task's network is an image classifier a kd_wsd student can be.

    It reads the image alone, to train and to predict, and it is not a sequence decoder (a task with `decode_step`,
    `mlic.predict.decoding`), whose network needs the targets to train and gives no logits to distil.
    """
    return task.sources == ("image",) and task.predict_sources == ("image",) and not hasattr(task, "decode_step")


def student_archs() -> list[str]:
    """The registered archs a kd_wsd student may have: those whose task, at the arch's defaults, reads the image alone.

    Every architecture module is imported (`discover_archs`): an arch added to `mlic.models` is listed without
    being named here.
    """
    specs = [get_arch(name) for name in discover_archs()]
    return [spec.name for spec in specs if reads_image_alone(spec.task(spec.config()))]


def build_student_task(student: ResolvedModel, loss: str, loss_options: dict[str, Any]) -> Task:
    """The student's own task (its outputs, its label losses, its scores) with `loss` instead of its entry's.

    Raises:
        ConfigError: For a student whose arch is not an image classifier reading the image alone, naming the key,
            the arch and the archs allowed.
    """
    task = student.spec.task(replace(student.config, loss=loss, loss_options=dict(loss_options)))
    if not reads_image_alone(task):
        reads = "decodes label sets" if hasattr(task, "decode_step") else f"reads {', '.join(task.sources)}"
        raise ConfigError(f"models.<entry>.student.arch: arch {student.spec.name!r} {reads}; a kd_wsd student must be "
                          "an image classifier that reads the image alone and gives logits",
                          fix=f"use one of: {', '.join(student_archs())}")  # fmt: skip
    return task


class KdWsd(nn.Module):
    """The student, its adapter onto the teacher's RoI features, and the scale s of the distillation term.

    Args:
        student: An image classifier with a timm `backbone` attribute (built whole or `features_only`, see
            `mlic.models.backbones.feature_map`); `forward(images)` gives its output (logits in eval mode).
        teacher_channels: Channels of the teacher's RoI features (its backbone's last map).
        roi_size: Side of the teacher's RoI features.
        scale_init: Initial s.
    """

    def __init__(self, student: nn.Module, teacher_channels: int, roi_size: int, scale_init: float):
        super().__init__()
        if not isinstance(getattr(student, "backbone", None), nn.Module):
            raise ConfigError("models.<entry>.student.arch: the student's network has no `backbone` to transfer "
                              "features to", fix=f"use one of: {', '.join(student_archs())}")  # fmt: skip
        self.student = student
        self.roi_size = roi_size
        self.adapter = nn.Conv2d(feature_channels(student.backbone), teacher_channels, 1)  # linear per position
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> Any:
        """The student's output; with `boxes`, its adapted (B, R, C_teacher, k, k) RoI features instead."""
        if boxes is None:
            return self.student(images)
        fmap = feature_map(self.student.backbone, images)
        # float32 map and boxes, as the teacher pools: region_features casts the boxes to the map's dtype, and bf16
        # pixel coordinates round by 1-2 px at 256 px and above (8 bits of mantissa)
        pooled = region_features(fmap.float(), boxes.float(), images.shape[-1], self.roi_size)
        batch, count = pooled.shape[:2]
        adapted = self.adapter(pooled.flatten(0, 1))
        return adapted.view(batch, count, *adapted.shape[1:])


def check_teacher(state: dict, run: FoldRun, path: Path) -> None:
    """Refuse a teacher not trained on exactly this fold's training rows (its soft targets would leak labels).

    Raises:
        MlicError: Naming the teacher's folder, the mismatch and the fix.
    """
    fix = f"rerun the teacher stage for this fold: `dvc repro teacher-{run.model}-{run.fold}`"
    if state.get("fold") != run.fold:
        raise MlicError(f"the teacher was trained for fold {state.get('fold')}, not fold {run.fold}", path=path,
                        fix=fix)  # fmt: skip
    if state.get("train_rows_sha256") != rows_digest(run.train_rows):
        raise MlicError("the teacher was not trained on exactly this fold's training rows: its soft targets could "
                        "carry validation labels", path=path, fix=fix)  # fmt: skip


class Replay:
    """Stands in for the network inside the student's task: gives back the output the step already computed.

    The student's task turns its network's output into its loss (deep supervision, SRN's branches) by calling the
    network on the batch; the label loss and the distillation term both read one forward pass of the student.
    """

    def __init__(self, output: Any):
        self.output = output

    def __call__(self, *inputs: torch.Tensor) -> Any:
        """The stored output, whatever the inputs."""
        return self.output


def scaled(output: Any, scale: torch.Tensor) -> Any:
    """A student's output (logits, or dicts and lists of them) with every tensor times s, in float32."""
    if isinstance(output, torch.Tensor):
        return scale * output.float()  # float32: a 0-dim float32 s would not promote bf16 logits
    if isinstance(output, dict):
        return {key: scaled(value, scale) for key, value in output.items()}
    if isinstance(output, list | tuple):
        return type(output)(scaled(value, scale) for value in output)
    raise TypeError(f"a kd_wsd student's output holds a {type(output).__name__}, not logits")


class KdWsdTask(Task):
    """The two phases of the distillation (or the label loss alone without it); the student predicts alone.

    The student's own task (`build_student_task`) gives its label loss, with this entry's `loss`, and its scores; a
    second copy of it, with BCE, gives the distillation term on the s-scaled outputs against the teacher's phi.
    """

    def __init__(self, cfg: KdWsdConfig):
        super().__init__(cfg)
        self.sources = ("image", "boxes") if cfg.distill else ("image",)
        student = cfg.resolved_student()
        self.student_task = build_student_task(student, cfg.loss, cfg.loss_options)
        self.distill_task = build_student_task(student, DISTILL_LOSS, {})
        self.teacher: nn.Module | None = None
        self.ready = False  # `setup` has built the losses

    @property
    def predict_sources(self) -> tuple[str, ...]:
        """The student alone: the image."""
        return ("image",)

    def bind(self, run: FoldRun) -> None:
        """Take this fold's teacher (stage `teacher`'s), frozen, once its checkpoint passes `check_teacher`.

        Training reads it and hands it over (`FoldRun.teacher`); its network is built only after the check.
        """
        self.student_task.bind(run)
        if not self.cfg.distill:
            return
        if run.teacher is None:
            raise RuntimeError("KdWsdTask.bind: the run has no teacher; training hands it over as FoldRun.teacher")
        check_teacher(run.teacher.checkpoint, run, run.teacher.path)
        self.attach_teacher(run.teacher.load())

    def attach_teacher(self, teacher: nn.Module) -> None:
        """Use `teacher` (a WSDDN network) frozen, in eval mode."""
        self.teacher = teacher.eval().requires_grad_(False)

    def setup(self, train_labels: np.ndarray) -> None:
        """The student's label loss (the entry's `loss`) and the distillation BCE."""
        self.student_task.setup(train_labels)
        self.distill_task.setup(train_labels)
        self.ready = True

    def phases(self, epochs: int) -> list[Phase]:
        """Feature transfer (backbone and adapter), then prediction transfer; one phase without distillation."""
        first = min(self.cfg.feature_epochs, epochs - 1) if self.cfg.distill else 0
        later = Phase("predictions" if self.cfg.distill else "train", epochs - first)
        return [Phase("features", first, trainable=("student.backbone.", "adapter.")), later] if first else [later]

    def _teacher(self) -> nn.Module:
        if self.teacher is None:
            raise RuntimeError("KdWsdTask.bind(run) (or attach_teacher) loads the teacher; call it before training")
        return self.teacher

    def training_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Phase 1: L2 between adapted student and teacher RoI features. Phase 2: labels plus distillation."""
        if not self.ready:
            raise RuntimeError("KdWsdTask.setup(train_labels) builds the loss; call it before training")
        images = batch["image"]
        if self.phase is not None and self.phase.name == "features":
            with torch.no_grad():
                target = self._teacher().regions(images, batch["boxes"], with_features=True).roi_features
            loss = F.mse_loss(net(images, batch["boxes"]).float(), target.float())
            return StepOutput(loss, {"features": loss.detach()})
        output = net(images)  # through the wrapper (DDP, compile), once for both terms
        labels = self.student_task.training_step(Replay(output), batch)
        if not self.cfg.distill:
            return labels
        with torch.no_grad():
            soft = self._teacher().regions(images, batch["boxes"], sharpen=self.cfg.sharpen).image_scores.float()
        soft_batch = {"image": images, "target": soft.clamp(0, 1)}
        distill = self.distill_task.training_step(Replay(scaled(output, unwrap(net).scale)), soft_batch).loss
        weighted = self.cfg.distill_weight * distill
        parts = dict(labels.parts) or {"labels": labels.loss.detach()}
        return StepOutput(labels.loss + weighted, {**parts, "distill": weighted.detach()})

    def predict_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The student's own scores (the sigmoid of its logits, for most)."""
        return self.student_task.predict_step(net, batch)


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside a DDP or compile wrapper."""
    while hasattr(net, "module") or hasattr(net, "_orig_mod"):
        net = getattr(net, "module", None) or net._orig_mod
    return net


def teacher_channels(teacher: ResolvedModel) -> int:
    """Channels of the teacher's RoI features: its backbone's last map (built once, never with pretrained weights)."""
    offline = teacher.without_pretrained().config
    return feature_channels(create_backbone(offline))


@register_arch(
    "kd_wsd",
    KdWsdConfig,
    task=KdWsdTask,
    tiny={  # a tiny baseline student (see baseline.py) and a tiny wsddn teacher (see wsddn.py)
        "student": {"arch": "baseline", "backbone": "resnet10t", "extra_filters": 8},
        "teacher": {"arch": "wsddn", "backbone": "resnet10t", "hidden": 16, "roi_channels": 8, "dropout": 0.1},
    },
)
def kd_wsd(cfg: KdWsdConfig, dims: ModelDims) -> nn.Module:
    """The student (its own arch and keys) with the adapter to the teacher's RoI features and the scale s."""
    student, teacher = cfg.resolved_student(), cfg.resolved_teacher()
    build_student_task(student, cfg.loss, cfg.loss_options)  # refuses an arch that is not an image classifier
    if not hasattr(teacher.config, "roi_size"):
        raise ConfigError(f"models.<entry>.teacher: arch {teacher.spec.name!r} is not a region detector",
                          fix="teacher: {arch: wsddn}")  # fmt: skip
    network = student.build(dims)
    return KdWsd(network, teacher_channels(teacher), teacher.config.roi_size, cfg.scale_init)
