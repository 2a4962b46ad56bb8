"""SCA, the spatial-context two-branch network (Zhang et al., ICASSP 2022): object patches and their context.

A timm backbone's stages (`feature_indices`) feed a feature pyramid (`torchvision.ops.FeaturePyramidNetwork`). Three
label predictors read it:
- global: the coarsest FPN level, average pooled, a linear layer;
- object: each proposal (the `boxes` source, (x, y, w, h, score) in pixels) is RoI-aligned on the pyramid level its
  size picks (the FPN paper's rule), two fc layers give f_obj, a linear layer labels each patch and the max over the
  patches gives the image's logits;
- context: the same on each proposal enlarged `kappa` times about its centre (clipped to the image), f_ctx.
Two more processors train f_obj without labels, from the boxes' scores: a patch classifier (pseudo-object, score >=
`object_score`, vs background, score <= `background_score`; boxes in between are ignored) and a location regressor
(Faster R-CNN deltas from each proposal toward the best-overlapping pseudo-object box, IoU >= 0.5). The prediction
is the weighted mean of the three predictors' sigmoids.

The scores come from the proposal method: `cam` boxes carry a trained baseline's class activation in [0, 1], so
pseudo-objects are real evidence; `selective_search` boxes their rank in the segment hierarchy. `windows` boxes carry
the window's scale, no evidence of anything: the 16 default windows (scales 1.0, 0.8, 0.6) are all pseudo-objects at
the default thresholds, every patch is class 1 and every box regresses onto itself (zero deltas), so the two
processors learn nothing. `ScaTask.bind` therefore refuses them on `windows` proposals (before any training) unless
`regression: false` and `patch_weight: 0`. Windows that only top up another method's boxes score `NO_OBJECTNESS`
(negative): neither object nor background (the patch classifier ignores them), and no proposal regresses toward one.

Pooling: `torchvision.ops.MultiScaleRoIAlign` takes a Python list of boxes per image, so tracing it unrolls the batch:
`torch.export` with a dynamic batch raises "Constraints violated (batch) ... specialized it to be a constant", and
`torch.onnx.export(dynamo=True)` falls back to a graph fixed at the example's batch size. `MultiLevelRoIAlign` is the
same algorithm (FPN eq. 1 picks each box's level, `torchvision.ops.roi_align` pools it there) on one (K, 5) roi tensor,
which exports with a dynamic batch.

Levels: FPN eq. 1, k = floor(k0 + log2(sqrt(wh) / s0)), sends a box of side s0 to level k0 = 4 (stride 16) and each
halving of its side one level finer. Lin et al. take s0 = 224 because it is the ImageNet pretraining size: a box as
large as the images the backbone learnt on pools from the level a single-scale ResNet detector reads (C4). This
network learns on `prepare.image_size` images, so s0 is the side of its input images, read off them in `forward`
(training, `mlic predict` and the ONNX graph all feed `prepare.image_size` images, so there is nothing to save or
rebuild): at 224 px it is the paper's rule exactly; at 64 px the whole image pools from P4, boxes of side 32-63 px
from P3 and smaller ones from P2. A fixed s0 = 224 sent every box of a 64 px image (side < 112) to P2. P5 pools no
box (that takes a side of twice the image's); it feeds the global predictor.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import FeaturePyramidNetwork, box_iou, roi_align

from mlic.errors import invalid
from mlic.features.proposals import METHODS_WITHOUT_OBJECTNESS
from mlic.models.backbones import BackboneConfig, create_backbone
from mlic.models.regions import boxes_to_rois, enlarge_boxes
from mlic.models.registry import ModelDims, register_arch
from mlic.tasks.base import FoldRun, StepOutput, Task
from mlic.tasks.losses import create_loss

IGNORE = -100  # patch target of boxes between the background and object scores (F.cross_entropy's ignore_index)
MATCH_IOU = 0.5  # a proposal regresses toward its best pseudo-box when they overlap at least this much
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # Faster R-CNN's box-head delta weights (x, y, w, h)
SMOOTH_L1_BETA = 1.0 / 9.0  # Faster R-CNN's box-head smooth-L1 beta (torchvision's roi_heads)
CANONICAL_LEVEL = 4  # FPN eq. 1's k0: a box the size of the input images pools from level 4 (see the module docstring)
SAMPLING_RATIO = 2  # RoIAlign's sampling points per bin side


@dataclass(frozen=True)
class ScaConfig(BackboneConfig):
    """`arch: sca`."""

    feature_indices: tuple[int, ...] = (1, 2, 3, 4)  # consecutive backbone stages feeding the FPN (strides 4..32)
    fpn_channels: int = 256  # channels of every FPN level
    roi_size: int = 7  # side of each RoI-aligned patch
    hidden: int = 1024  # width of the two fc layers of each branch
    kappa: float = 1.8  # context boxes are the proposals grown kappa times about their centres (clipped)
    object_score: float = 0.5  # boxes scoring >= this are pseudo-objects (patch class 1, regression targets)
    background_score: float = 0.2  # boxes scoring <= this are background patches; those in between are ignored
    regression: bool = True  # train the location regressor (needs scored proposals: refused on windows)
    regression_weight: float = 1.0  # of the regression loss
    patch_weight: float = 1.0  # of the patch classifier's loss; 0: off (as windows proposals need)
    global_weight: float = 1.0  # weights of the three predictors' sigmoids in the prediction (normalised)
    object_weight: float = 1.0
    context_weight: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        steps = np.diff(self.feature_indices)
        if not self.feature_indices or (steps != 1).any():
            invalid(
                "feature_indices",
                f"must be consecutive stage indices (each level halves the map), got {list(self.feature_indices)}",
                "e.g. [1, 2, 3, 4]",
            )
        for key in ("fpn_channels", "roi_size", "hidden"):
            if getattr(self, key) < 1:
                invalid(key, f"must be >= 1, got {getattr(self, key)}")
        if self.kappa < 1.0:
            invalid("kappa", f"must be >= 1 (context boxes contain their proposals), got {self.kappa}", "e.g. 1.8")
        if not 0.0 <= self.background_score < self.object_score <= 1.0:
            invalid(
                "object_score",
                f"needs 0 <= background_score < object_score <= 1, got {self.background_score} and {self.object_score}",
            )
        for key in ("regression_weight", "patch_weight", "global_weight", "object_weight", "context_weight"):
            if getattr(self, key) < 0:
                invalid(key, f"must be >= 0, got {getattr(self, key)}")
        if self.global_weight + self.object_weight + self.context_weight <= 0:
            invalid("global_weight", "global_weight, object_weight and context_weight are all 0", "make one positive")


class ScaOutputs(NamedTuple):
    """Everything the network computes for a batch of B images with R boxes each (C labels, hidden width H).

    A NamedTuple, so that DistributedDataParallel and torch.export find its tensors.
    """

    global_logits: torch.Tensor  # (B, C)
    object_logits: torch.Tensor  # (B, C): max over the patches of each proposal's label logits
    context_logits: torch.Tensor  # (B, C): the same on the context boxes
    patch_logits: torch.Tensor  # (B, R, 2): background, object
    deltas: torch.Tensor | None  # (B, R, 4) Faster R-CNN box deltas; None without the regressor
    f_obj: torch.Tensor  # (B, R, H)
    f_ctx: torch.Tensor  # (B, R, H)


def box_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 5+) (x, y, w, h, ...) boxes -> (..., 4) (x1, y1, x2, y2)."""
    return torch.cat([boxes[..., :2], boxes[..., :2] + boxes[..., 2:4]], dim=-1)


def fpn_level_range(maps: list[torch.Tensor], image_size: int) -> tuple[list[float], int]:
    """Each map's scale (a power of 2, as MultiScaleRoIAlign infers it) and the FPN level k of the finest one."""
    scales = [2.0 ** round(math.log2(m.shape[-1] / image_size)) for m in maps]
    return scales, round(-math.log2(scales[0]))


def roi_levels(rois: torch.Tensor, k_min: int, levels: int, canonical_scale: float) -> torch.Tensor:
    """Pyramid level (0-based, from the finest map) of each (K, 5) roi: FPN eq. 1, k = floor(4 + log2(sqrt(wh) / s0)).

    torchvision's LevelMapper written on one roi tensor, s0 = `canonical_scale` (the input images' side: see the
    module docstring; the paper's 224 at 224 px); degenerate (zero-area) boxes land on the finest level.
    """
    side = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    k = torch.floor(CANONICAL_LEVEL + torch.log2(side / canonical_scale) + 1e-6)  # LevelMapper's eps
    return (k.clamp(k_min, k_min + levels - 1) - k_min).to(torch.int64)


class MultiLevelRoIAlign(nn.Module):
    """`torchvision.ops.MultiScaleRoIAlign` (aligned=False, the FPN level rule, canonical_scale the image side).

    The same algorithm (each level's rois gathered, pooled by `torchvision.ops.roi_align` and put back in place), but
    the rois come as one tensor with their batch index instead of a Python list per image, so one graph serves any
    batch size and exports to ONNX with a dynamic batch.

    Args:
        output_size: Side of the pooled patches.
        sampling_ratio: RoIAlign's sampling points per bin side.
    """

    def __init__(self, output_size: int, sampling_ratio: int = SAMPLING_RATIO):
        super().__init__()
        self.output_size, self.sampling_ratio = output_size, sampling_ratio

    def forward(self, maps: list[torch.Tensor], rois: torch.Tensor, image_size: int) -> torch.Tensor:
        """Maps finest first (each half the previous), rois (K, 5) in pixels of `image_size` images -> (K, C, out, out).

        A roi of side `image_size` pools from level 4 (FPN eq. 1 with s0 the image side, as the paper's 224 px).
        """
        scales, k_min = fpn_level_range(maps, image_size)
        levels = roi_levels(rois, k_min, len(maps), image_size)
        rois = rois.to(maps[0].dtype)
        out = maps[0].new_zeros((rois.shape[0], maps[0].shape[1], self.output_size, self.output_size))
        for level, (m, scale) in enumerate(zip(maps, scales, strict=True)):
            index = torch.where(levels == level)[0]
            pooled = roi_align(m, rois[index], self.output_size, scale, self.sampling_ratio, aligned=False)
            out = out.index_copy(0, index, pooled.to(out.dtype))  # each roi's patch from its own level
        return out


def fc_pair(in_features: int, hidden: int) -> nn.Sequential:
    """The two fc layers with ReLU that turn a flattened patch into a branch feature."""
    return nn.Sequential(nn.Flatten(1), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())


class Sca(nn.Module):
    """Backbone -> FPN -> global, object and context label predictors, patch classifier and location regressor.

    In training mode `forward` returns `parts` (so that DistributedDataParallel sees the step's whole graph); in eval
    mode it returns the prediction, the weighted mean of the three predictors' sigmoids (what prediction and ONNX
    export call).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: ScaConfig):
        super().__init__()
        self.backbone = backbone
        self.fpn = FeaturePyramidNetwork(backbone.feature_info.channels(), cfg.fpn_channels)
        self.pool = MultiLevelRoIAlign(cfg.roi_size)
        self.kappa = cfg.kappa
        patch = cfg.fpn_channels * cfg.roi_size**2
        self.object_fc = fc_pair(patch, cfg.hidden)
        self.context_fc = fc_pair(patch, cfg.hidden)
        self.global_classifier = nn.Linear(cfg.fpn_channels, num_classes)
        self.object_classifier = nn.Linear(cfg.hidden, num_classes)
        self.context_classifier = nn.Linear(cfg.hidden, num_classes)
        self.patch_classifier = nn.Linear(cfg.hidden, 2)
        # built only when trained: DistributedDataParallel rejects parameters that never get a gradient
        self.regressor = nn.Linear(cfg.hidden, 4) if cfg.regression else None
        total = cfg.global_weight + cfg.object_weight + cfg.context_weight
        self.weights = tuple(w / total for w in (cfg.global_weight, cfg.object_weight, cfg.context_weight))

    def pyramid(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The FPN levels, finest first, keyed "0", "1", ... (fpn_channels each)."""
        features = self.backbone(images)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))

    def patch_features(self, maps: list[torch.Tensor], boxes: torch.Tensor, image_size: int, fc: nn.Module):
        """(B, R, 5) boxes -> (B, R, hidden) features of their RoI-aligned patches through `fc`."""
        batch, count = boxes.shape[:2]
        patches = self.pool(maps, boxes_to_rois(boxes), image_size)
        return fc(patches).view(batch, count, -1)

    def parts(self, images: torch.Tensor, boxes: torch.Tensor) -> ScaOutputs:
        """Every predictor's and processor's output for (B, 3, S, S) images and (B, R, 5) boxes in pixels."""
        size = images.shape[-1]
        maps = list(self.pyramid(images).values())
        f_obj = self.patch_features(maps, boxes, size, self.object_fc)
        f_ctx = self.patch_features(maps, enlarge_boxes(boxes, self.kappa, size), size, self.context_fc)
        return ScaOutputs(
            global_logits=self.global_classifier(maps[-1].mean(dim=(2, 3))),
            object_logits=self.object_classifier(f_obj).amax(dim=1),
            context_logits=self.context_classifier(f_ctx).amax(dim=1),
            patch_logits=self.patch_classifier(f_obj),
            deltas=None if self.regressor is None else self.regressor(f_obj),
            f_obj=f_obj,
            f_ctx=f_ctx,
        )

    def scores(self, out: ScaOutputs) -> torch.Tensor:
        """The prediction (B, C) in [0, 1]: the weighted mean of the three label predictors' sigmoids."""
        logits = (out.global_logits, out.object_logits, out.context_logits)
        return sum(w * torch.sigmoid(x.float()) for w, x in zip(self.weights, logits, strict=True))

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor | ScaOutputs:
        """Scores (B, C) in eval mode; `parts` in training mode."""
        out = self.parts(images, boxes)
        return out if self.training else self.scores(out)


def patch_targets(scores: torch.Tensor, object_score: float, background_score: float) -> torch.Tensor:
    """Patch classes from (...) box scores: 1 (object) at >= object_score, 0 in [0, background_score], else IGNORE.

    A negative score (`NO_OBJECTNESS`, a top-up window) is no evidence of background either: IGNORE.
    """
    targets = torch.full(scores.shape, IGNORE, dtype=torch.int64, device=scores.device)
    targets[(scores >= 0) & (scores <= background_score)] = 0
    targets[scores >= object_score] = 1
    return targets


def regression_targets(boxes: torch.Tensor, object_score: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each proposal's pseudo-box: its best-IoU box scoring >= object_score, kept where the IoU is >= MATCH_IOU.

    Args:
        boxes: (B, R, 5) boxes in pixels; they are both the proposals and (the high-scoring ones) the pseudo-boxes.
        object_score: The score from which a box is a pseudo-object.

    Returns:
        matched (B, R) bool and the matched pseudo-boxes' corners (B, R, 4) (meaningless where not matched). A
        pseudo-box matches itself (IoU 1), so its own target deltas are 0.
    """
    corners = box_corners(boxes)
    pseudo = boxes[..., 4] >= object_score
    iou = torch.stack([box_iou(c, c) for c in corners]).nan_to_num(0.0)  # (B, proposal, box); 0/0 for empty boxes
    best, index = iou.masked_fill(~pseudo[:, None, :], -1.0).max(dim=2)
    return best >= MATCH_IOU, corners.gather(1, index[..., None].expand(-1, -1, 4))


def check_objectness(cfg: ScaConfig, method: str, entry: str) -> None:
    """Refuse the patch classifier and the regressor on proposals whose scores say nothing of objects.

    Args:
        cfg: The entry's config: `regression` and `patch_weight` say whether the two processors train.
        method: `proposals.method`; those in `METHODS_WITHOUT_OBJECTNESS` (windows: a score is the window's scale)
            give every patch class 1 and every regression target 0 deltas at the default thresholds.
        entry: The models entry, for the message.

    Raises:
        ConfigError: Naming the keys and the two ways out.
    """
    switches = (
        ("regression", "the location regressor", cfg.regression),
        ("patch_weight > 0", "the patch classifier", cfg.patch_weight > 0),
    )
    keys = [key for key, _, on in switches if on]
    if method in METHODS_WITHOUT_OBJECTNESS and keys:
        trained = " and ".join(processor for _, processor, on in switches if on)
        invalid(
            f"models.{entry}",
            f"{' and '.join(keys)} train{'' if len(keys) > 1 else 's'} {trained} on the proposals' objectness, "
            f"which proposals.method {method!r} does not give (its scores are window scales: every box a "
            "pseudo-object regressing onto itself, nothing to learn)",
            f"set models.{entry}.regression: false and models.{entry}.patch_weight: 0, or proposals.method: cam "
            "(boxes of a trained model's class activation maps)",
        )


class ScaTask(Task):
    """SCA's loss: the three label predictors' registry losses, plus the patch classifier's and the regressor's.

    Parts "global", "object", "context", "patch", "regression" (0 with `regression: false`) sum to the loss.
    """

    sources = ("image", "boxes")

    def __init__(self, cfg: ScaConfig):
        super().__init__(cfg)
        self.loss_fn: nn.Module | None = None
        self.coder = BoxCoder(BOX_WEIGHTS)

    def bind(self, run: FoldRun) -> None:
        """Before any training: refuse processors the run's proposals cannot train (`check_objectness`)."""
        check_objectness(self.cfg, run.cfg.proposals.method, run.model)

    def setup(self, train_labels: np.ndarray) -> None:
        """Build the label loss; frequency-weighted losses read the training rows' label frequencies."""
        self.loss_fn = create_loss(self.cfg.loss, train_labels.mean(axis=0), **self.cfg.loss_options)

    def patch_loss(self, patch_logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of object vs background patches, mean over the labelled ones (0 when there are none)."""
        targets = patch_targets(scores, self.cfg.object_score, self.cfg.background_score).flatten()
        total = F.cross_entropy(patch_logits.flatten(0, 1).float(), targets, ignore_index=IGNORE, reduction="sum")
        return total / (targets != IGNORE).sum().clamp(min=1)  # a plain mean is 0/0 when every patch is ignored

    def regression_loss(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Smooth-L1 of the matched proposals' deltas toward their pseudo-boxes, mean over them (0 when none)."""
        matched, pseudo = regression_targets(boxes, self.cfg.object_score)
        # only matched rows: a zero-width proposal elsewhere would give an infinite target
        target = self.coder.encode_single(pseudo[matched], box_corners(boxes)[matched])
        loss = F.smooth_l1_loss(deltas[matched].float(), target, beta=SMOOTH_L1_BETA, reduction="sum")
        return loss / matched.sum().clamp(min=1)

    def training_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """The sum of the five parts (label losses weighted 1, the processors by their weights)."""
        if self.loss_fn is None:
            raise RuntimeError("ScaTask.setup(train_labels) builds the loss; call it before training")
        out = net(*self.inputs(batch))
        if not isinstance(out, ScaOutputs):
            raise RuntimeError("Sca returns its parts in training mode only; call net.train() first")
        target, boxes = batch["target"], batch["boxes"].float()
        parts = {
            "global": self.loss_fn(out.global_logits.float(), target),
            "object": self.loss_fn(out.object_logits.float(), target),
            "context": self.loss_fn(out.context_logits.float(), target),
            "patch": self.cfg.patch_weight * self.patch_loss(out.patch_logits, boxes[..., 4]),
        }
        if out.deltas is not None:
            parts["regression"] = self.cfg.regression_weight * self.regression_loss(out.deltas, boxes)
        else:
            parts["regression"] = torch.zeros((), device=target.device)
        return StepOutput(sum(parts.values()), {name: value.detach() for name, value in parts.items()})

    def predict_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted mean of the global, object and context sigmoids, float32."""
        out = net(*self.inputs(batch))
        if isinstance(out, ScaOutputs):  # a network left in training mode
            out = net.scores(out)
        return out.float()


@register_arch("sca", ScaConfig, task=ScaTask, tiny={"backbone": "resnet10t", "fpn_channels": 16, "hidden": 16})
def sca(cfg: ScaConfig, dims: ModelDims) -> nn.Module:
    """SCA on `backbone` (ResNet-101 in the paper) at the stages `feature_indices`."""
    return Sca(create_backbone(cfg, out_indices=tuple(cfg.feature_indices)), dims.num_classes, cfg)
