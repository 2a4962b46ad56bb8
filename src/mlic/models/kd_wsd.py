"""`kd_wsd`: an image classifier distilled from a weakly-supervised detector (MLIC-KD-WSD, Liu et al., ACM MM 2018).

The student is any registered image classifier (`student`, a nested models entry: baseline by default); the teacher
is a WSDDN (`teacher`, `mlic.models.wsddn`) trained by stage `teacher` on the same fold's training rows. Training
has two phases (`KdWsdTask`):
1. feature transfer, `feature_epochs`: the student's last feature map is RoI-aligned on the proposals (rescaled to
   its stride) and a linear adapter (a 1x1 convolution) maps it onto the frozen teacher's RoI features under an L2
   loss, the only loss of the phase; only the student's backbone and the adapter train;
2. prediction transfer: the label loss on the student's logits plus BCE(s * student logits, teacher phi), with s a
   learnable scale initialised at `scale_init` (0.2) and the teacher's class and region logits sharpened (multiplied)
   by `sharpen` (2) before its softmaxes.
At inference the student runs alone: `forward(images)` is the student's logits, so prediction and ONNX export read
the image only (`predict_sources`), and neither the teacher nor the proposals are needed.

With `distill: false` the same student trains on the labels alone, for the same epochs: the control row of the
leaderboard. Where this follows the issue over the paper: the paper's student and teacher share one backbone type
and it transfers fc-level region features; here the adapter matches the teacher's RoI-aligned last map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlic.config import ModelEntry, invalid
from mlic.errors import ConfigError, MlicError
from mlic.models.backbones import create_backbone, feature_channels, feature_map
from mlic.models.regions import region_features
from mlic.models.registry import ArchConfig, ModelDims, ResolvedModel, register_arch, resolve_entry
from mlic.tasks.base import FoldRun, Phase, StepOutput, Task
from mlic.tasks.losses import create_loss

DEFAULT_STUDENT = {"backbone": "resnet10t", "pretrained": False, "pretrained_file": None, "extra_filters": 128}
DEFAULT_TEACHER = {"backbone": "resnet10t", "pretrained": False, "pretrained_file": None}


@dataclass(frozen=True)
class KdWsdConfig(ArchConfig):
    """`arch: kd_wsd`; `loss` is the student's label loss."""

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


class KdWsd(nn.Module):
    """The student, its adapter onto the teacher's RoI features, and the scale s of the distillation term.

    Args:
        student: An image classifier with a timm `backbone` attribute; `forward(images)` gives its logits.
        teacher_channels: Channels of the teacher's RoI features (its backbone's last map).
        roi_size: Side of the teacher's RoI features.
        scale_init: Initial s.
    """

    def __init__(self, student: nn.Module, teacher_channels: int, roi_size: int, scale_init: float):
        super().__init__()
        if not isinstance(getattr(student, "backbone", None), nn.Module):
            raise ConfigError("models.<entry>.student: the student's network has no `backbone` to transfer features "
                              "to", fix="use an image classifier arch such as baseline, csra or hourglass")  # fmt: skip
        self.student = student
        self.roi_size = roi_size
        self.adapter = nn.Conv2d(feature_channels(student.backbone), teacher_channels, 1)  # linear per position
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """The student's (B, C) logits; with `boxes`, its adapted (B, R, C_teacher, k, k) RoI features instead."""
        if boxes is None:
            return self.student(images)
        pooled = region_features(feature_map(self.student.backbone, images), boxes, images.shape[-1], self.roi_size)
        batch, count = pooled.shape[:2]
        adapted = self.adapter(pooled.flatten(0, 1))
        return adapted.view(batch, count, *adapted.shape[1:])


def check_teacher(state: dict, run: FoldRun, path: Path) -> None:
    """Refuse a teacher not trained on exactly this fold's training rows (its soft targets would leak labels).

    Raises:
        MlicError: Naming the teacher's folder, the mismatch and the fix.
    """
    from mlic.train.fold import rows_digest

    fix = f"rerun the teacher stage for this fold: `dvc repro teacher@{run.model}-{run.fold}`"
    if state.get("fold") != run.fold:
        raise MlicError(f"the teacher was trained for fold {state.get('fold')}, not fold {run.fold}", path=path,
                        fix=fix)  # fmt: skip
    if state.get("train_rows_sha256") != rows_digest(run.train_rows):
        raise MlicError("the teacher was not trained on exactly this fold's training rows: its soft targets could "
                        "carry validation labels", path=path, fix=fix)  # fmt: skip


class KdWsdTask(Task):
    """The two phases of the distillation (or the label loss alone without it); the student predicts alone."""

    def __init__(self, cfg: KdWsdConfig):
        super().__init__(cfg)
        self.sources = ("image", "boxes") if cfg.distill else ("image",)
        self.teacher: nn.Module | None = None
        self.loss_fn: nn.Module | None = None

    @property
    def predict_sources(self) -> tuple[str, ...]:
        """The student alone: the image."""
        return ("image",)

    def bind(self, run: FoldRun) -> None:
        """Load this fold's teacher (stage `teacher`), checked against the fold's training rows, frozen."""
        if not self.cfg.distill:
            return
        from mlic.layout import load_checkpoint
        from mlic.predict.inference import load_fold_model

        path = run.cfg.teacher_dir(run.model, run.fold)
        check_teacher(load_checkpoint(path), run, path)
        self.attach_teacher(load_fold_model(path, run.device).net)

    def attach_teacher(self, teacher: nn.Module) -> None:
        """Use `teacher` (a WSDDN network) frozen, in eval mode."""
        self.teacher = teacher.eval().requires_grad_(False)

    def setup(self, train_labels: np.ndarray) -> None:
        """The label loss (the entry's `loss`)."""
        self.loss_fn = create_loss(self.cfg.loss, train_labels.mean(axis=0), **self.cfg.loss_options)

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
        if self.loss_fn is None:
            raise RuntimeError("KdWsdTask.setup(train_labels) builds the loss; call it before training")
        images = batch["image"]
        if self.phase is not None and self.phase.name == "features":
            with torch.no_grad():
                target = self._teacher().regions(images, batch["boxes"], with_features=True).roi_features
            loss = F.mse_loss(net(images, batch["boxes"]).float(), target.float())
            return StepOutput(loss, {"features": loss.detach()})
        logits = net(images).float()
        label_loss = self.loss_fn(logits, batch["target"])
        if not self.cfg.distill:
            return StepOutput(label_loss)
        with torch.no_grad():
            soft = self._teacher().regions(images, batch["boxes"], sharpen=self.cfg.sharpen).image_scores.float()
        scale = unwrap(net).scale
        distill = F.binary_cross_entropy_with_logits(scale * logits, soft.clamp(0, 1))
        weighted = self.cfg.distill_weight * distill
        return StepOutput(label_loss + weighted, {"labels": label_loss.detach(), "distill": weighted.detach()})

    def predict_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sigmoid of the student's logits."""
        return torch.sigmoid(net(batch["image"]).float())


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside a DDP or compile wrapper."""
    while hasattr(net, "module") or hasattr(net, "_orig_mod"):
        net = getattr(net, "module", None) or net._orig_mod
    return net


def teacher_channels(teacher: ResolvedModel) -> int:
    """Channels of the teacher's RoI features: its backbone's last map (built once, never with pretrained weights)."""
    offline = teacher.without_pretrained().config
    return feature_channels(create_backbone(offline))


@register_arch("kd_wsd", KdWsdConfig, task=KdWsdTask)
def kd_wsd(cfg: KdWsdConfig, dims: ModelDims) -> nn.Module:
    """The student (its own arch and keys) with the adapter to the teacher's RoI features and the scale s."""
    student, teacher = cfg.resolved_student(), cfg.resolved_teacher()
    if student.task().sources != ("image",):
        raise ConfigError(f"models.<entry>.student: arch {student.spec.name!r} reads {student.task().sources}; the "
                          "student must be an image classifier", fix="e.g. student: {arch: baseline}")  # fmt: skip
    if not hasattr(teacher.config, "roi_size"):
        raise ConfigError(f"models.<entry>.teacher: arch {teacher.spec.name!r} is not a region detector",
                          fix="teacher: {arch: wsddn}")  # fmt: skip
    network = student.build(dims)
    return KdWsd(network, teacher_channels(teacher), teacher.config.roi_size, cfg.scale_init)
