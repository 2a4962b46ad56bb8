"""WSDDN, the Weakly Supervised Deep Detection Network (Bilen and Vedaldi, CVPR 2016): the teacher of MLIC-KD-WSD.

Liu et al. (ACM MM 2018) distil a weakly supervised detector into a multi-label classifier; the detector is WSDDN,
trained from image-level labels alone. On top of a timm CNN, every proposal box (the `boxes` source) is pooled from
the last feature map, optionally reduced by a 1x1 conv first (RoIAlign, `mlic.models.regions.region_features`), and
passed through two fully connected layers (fc6, fc7). Two streams then score each of the R regions for each label:
- the classification stream (fc8c): a softmax over the labels, "which label is this region?";
- the detection stream (fc8d): a softmax over the regions, "which region shows this label?", of its logits divided by
  `detection_temperature` (2: the authors' code halves fc8d's output before that softmax, a flatter distribution
  over the regions than temperature 1 gives; kd_wsd's teacher is this network, so it is the teacher's too).
Their product is each region's score for each label, and its sum over the regions is the image's score phi in [0, 1]
(a sum of a distribution over regions weighted by probabilities), trained with binary cross-entropy on the labels:
-log(phi + eps) for a present label, -log(1 - phi + eps) for an absent one (`phi_logits`, eps = 1e-8).
The region scores localise the labels: the top region of a present label is its detection.

Not kept from the paper: its spatial regulariser and the scaling of the features by the proposals' scores (the
`score` column of the boxes is ignored). Boxes without area (padding) get no mass in the detection softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from mlic.errors import invalid
from mlic.models.backbones import BackboneConfig, create_backbone, feature_channels, feature_map
from mlic.models.regions import region_features
from mlic.models.registry import ModelDims, register_arch
from mlic.tasks.base import Phase, StepOutput, Task
from mlic.tasks.losses import create_loss

# The network's submodules besides the backbone: what the head warm-up phase trains (and the parameter prefixes)
HEAD_MODULES = ("reduce", "fcs", "class_head", "region_head")
# The loss reads phi as (phi + eps) / (1 + 2 eps): finite at phi = 0 and 1, and a present label's gradient is
# -1 / (phi + eps), the paper's -1 / phi for any phi well above eps (a clamp of phi passes none below its bound)
PHI_EPS = 1e-8
NO_AREA_LOGIT = -1e9  # the detection logit of a box without area: exp(-1e9 - max) is 0 in float32


@dataclass(frozen=True)
class WsddnConfig(BackboneConfig):
    """`arch: wsddn`.

    The learning rate of every phase is `train.lr * lr_scale`. The detection softmax makes WSDDN slow to start and
    easy to derail: MLIC-KD-WSD trained it with SGD at lr 5e-5 on an ImageNet-pretrained VGG-16 (and Bilen and
    Vedaldi at 1e-5, then 1e-6); `lr_scale` sets a rate that low for this model alone, whatever `train.lr` is.
    """

    roi_size: int = 7  # side of each box's RoIAlign patch on the last feature map (the papers' 7 x 7)
    roi_channels: int = 256  # a 1x1 conv + ReLU on each patch before fc6, so fc6 stays small; 0: the map's channels
    hidden: int = 1024  # width of fc6 and fc7 (VGG's are 4096)
    dropout: float = 0.5  # after fc6 and after fc7
    head_warmup_epochs: int = 1  # first epochs train everything but the backbone (hard to start otherwise); 0: none
    lr_scale: float = 1.0  # multiplies train.lr in every phase
    detection_temperature: float = 2.0  # the detection logits are divided by this before the softmax over regions

    def __post_init__(self):
        super().__post_init__()
        if self.roi_size < 1:
            invalid("roi_size", f"must be >= 1, got {self.roi_size}", "e.g. 7")
        if self.roi_channels < 0:
            invalid("roi_channels", f"must be >= 0 (0: no 1x1 reduction), got {self.roi_channels}", "e.g. 256")
        if self.hidden < 1:
            invalid("hidden", f"must be >= 1, got {self.hidden}", "e.g. 1024")
        if not 0.0 <= self.dropout < 1.0:
            invalid("dropout", f"must be in [0, 1), got {self.dropout}", "e.g. 0.5")
        if self.head_warmup_epochs < 0:
            invalid("head_warmup_epochs", f"must be >= 0, got {self.head_warmup_epochs}", "e.g. 1, or 0 for none")
        if not (np.isfinite(self.lr_scale) and self.lr_scale > 0):
            invalid("lr_scale", f"must be > 0, got {self.lr_scale}", "e.g. 0.1")
        if not (np.isfinite(self.detection_temperature) and self.detection_temperature > 0):
            invalid(
                "detection_temperature",
                f"must be > 0, got {self.detection_temperature}",
                "2.0 (the authors' code), or 1.0 for the plain softmax",
            )


class WsddnOutputs(NamedTuple):
    """Everything WSDDN computes for a batch of B images with R boxes each and C labels.

    Attributes:
        roi_features: (B, R, channels, k, k) RoIAlign patches of the raw last map (before the 1x1 reduction; None
            unless `regions(..., with_features=True)`),
            float32: what the distilled student matches.
        class_logits: (B, R, C) the classification stream's logits (fc8c).
        region_logits: (B, R, C) float32 logits of the detection stream (fc8d), before the temperature; boxes
            without area hold `NO_AREA_LOGIT`.
        region_scores: (B, R, C) float32 softmax over labels of the class logits (times `sharpen`) times softmax over
            regions of the region logits (times `sharpen / detection_temperature`).
        image_scores: (B, C) float32 phi, the region scores summed over the regions, in [0, 1].
    """

    roi_features: torch.Tensor | None
    class_logits: torch.Tensor
    region_logits: torch.Tensor
    region_scores: torch.Tensor
    image_scores: torch.Tensor


class Wsddn(nn.Module):
    """Backbone -> [1x1 conv] -> RoIAlign of each box -> fc6 -> fc7 -> classification and detection streams.

    Submodule names are the phases' parameter prefixes: `backbone.` and the heads (`HEAD_MODULES`).

    Args:
        backbone: A CNN with `forward_features` (its last (B, channels, h, w) map) and `num_features` (channels),
            e.g. a timm model without pooling or classifier; tests pass small modules of that shape.
        num_classes: C, the labels.
        cfg: The architecture's config (its backbone keys are not read here).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: WsddnConfig):
        super().__init__()
        self.backbone = backbone
        self.roi_size = cfg.roi_size
        self.detection_temperature = cfg.detection_temperature
        channels = feature_channels(backbone)
        if cfg.roi_channels:
            self.reduce = nn.Sequential(nn.Conv2d(channels, cfg.roi_channels, 1), nn.ReLU())
            channels = cfg.roi_channels
        else:
            self.reduce = nn.Identity()
        self.fcs = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(channels * cfg.roi_size**2, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
        )
        self.class_head = nn.Linear(cfg.hidden, num_classes)  # fc8c
        self.region_head = nn.Linear(cfg.hidden, num_classes)  # fc8d

    def regions(self, images: torch.Tensor, boxes: torch.Tensor, sharpen: float = 1.0,
                with_features: bool = False) -> WsddnOutputs:  # fmt: skip
        """WSDDN's outputs for (B, 3, S, S) images and their (B, R, 5) (x, y, w, h, score) boxes in pixels.

        Args:
            images: Normalised square images.
            boxes: The proposals of each image, R per image.
            sharpen: Multiplies both streams' logits before their softmaxes (the detection logits after their
                division by `detection_temperature`); above 1 the region scores peak on fewer regions (for reading
                detections off the teacher), 1 is WSDDN's.
            with_features: Also pool the raw last map (`roi_features`, what a distilled student matches); else
                `roi_features` is None.
        """
        fmap = feature_map(self.backbone, images)
        size = images.shape[-1]
        # the 1x1 reduction runs on the map, before RoIAlign: pooling roi_channels instead of the backbone's channels
        # is several times cheaper on CPU (RoIAlign's bilinear samples dominate), and the heads see the same layout.
        # float32 map: region_features casts the boxes to the map's dtype; bf16 pixel coordinates round by pixels
        pooled = region_features(self.reduce(fmap).float(), boxes, size, self.roi_size)
        raw = region_features(fmap.float(), boxes, size, self.roi_size) if with_features else None
        batch, count = pooled.shape[:2]
        hidden = self.fcs(pooled.flatten(0, 1))
        class_logits = self.class_head(hidden).view(batch, count, -1)
        has_area = ((boxes[..., 2] > 0) & (boxes[..., 3] > 0)).unsqueeze(-1)
        region_logits = self.region_head(hidden).view(batch, count, -1).float().masked_fill(~has_area, NO_AREA_LOGIT)
        # float32 softmaxes: bf16 sums over hundreds of regions drift from 1
        labels = torch.softmax(class_logits.float() * sharpen, dim=-1)
        where = torch.softmax(region_logits * (sharpen / self.detection_temperature), dim=1)
        region_scores = labels * where
        # the sum is <= 1 already (a distribution over regions weighted by probabilities); the clamp is for rounding
        image_scores = region_scores.sum(dim=1).clamp(0.0, 1.0)
        return WsddnOutputs(raw, class_logits, region_logits, region_scores, image_scores)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised images and (B, R, 5) boxes -> (B, C) float32 image scores phi in [0, 1]."""
        return self.regions(images, boxes).image_scores


def phi_logits(phi: torch.Tensor) -> torch.Tensor:
    """Logits of the image scores phi for the registry's losses (which take logits), finite and with gradient.

    They are log(phi + eps) - log(1 - phi + eps), whose sigmoid is (phi + eps) / (1 + 2 eps). BCE on them is
    -log(phi + eps) for a positive and -log(1 - phi + eps) for a negative (plus log(1 + 2 eps), about 2e-8): the
    paper's BCE on phi, with gradient -1 / (phi + eps) for a positive: a rare label still learns when its phi has
    sunk far below its start (near 9e-4 under iMet's 1,103-way softmax), where the former clamp of phi to
    [1e-4, 1 - 1e-4] passed it no gradient. eps keeps them finite at phi = 0 and 1, within +/- 18.4.

    Args:
        phi: Image scores in [0, 1]. Values outside (rounding: phi is a sum of probabilities) are cut off in the
            forward pass only: a clamp's gradient is 0 at its bounds, so a positive at phi = 0 would learn nothing.
    """
    phi = phi + (phi.clamp(0.0, 1.0) - phi).detach()  # straight-through: the value clamped, the gradient whole
    return torch.log(phi + PHI_EPS) - torch.log((1.0 - phi) + PHI_EPS)  # 1 - phi first: 1 - 1e-8 rounds to 1


class WsddnTask(Task):
    """WSDDN on the image and its boxes: the loss on phi (probabilities, not logits), a head warm-up phase."""

    sources = ("image", "boxes")

    def __init__(self, cfg: WsddnConfig):
        super().__init__(cfg)
        self.loss_fn: nn.Module | None = None

    def setup(self, train_labels: np.ndarray) -> None:
        """Build the entry's loss; frequency-weighted losses read the training rows' label frequencies."""
        self.loss_fn = create_loss(self.cfg.loss, train_labels.mean(axis=0), **self.cfg.loss_options)

    def phases(self, epochs: int) -> list[Phase]:
        """`head_warmup_epochs` training the heads alone (at most epochs - 1), then everything; both at lr_scale."""
        warmup = max(0, min(self.cfg.head_warmup_epochs, epochs - 1))
        heads = tuple(f"{name}." for name in HEAD_MODULES)
        schedule = [
            Phase("heads", warmup, heads, self.cfg.lr_scale),
            Phase("all", epochs - warmup, None, self.cfg.lr_scale),
        ]
        return [phase for phase in schedule if phase.epochs > 0]

    def training_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """The entry's loss on the logits of phi (`phi_logits`), in float32: with `bce`, the paper's BCE on phi."""
        if self.loss_fn is None:
            raise RuntimeError("WsddnTask.setup(train_labels) builds the loss; call it before training")
        phi = net(*self.inputs(batch)).float()
        return StepOutput(self.loss_fn(phi_logits(phi), batch["target"]))

    def predict_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The image scores phi, in float32 (already in [0, 1])."""
        return net(*self.inputs(batch)).float()


@register_arch(
    "wsddn",
    WsddnConfig,
    task=WsddnTask,
    tiny={"backbone": "resnet10t", "hidden": 16, "roi_channels": 8, "dropout": 0.1},
)
def wsddn(cfg: WsddnConfig, dims: ModelDims) -> nn.Module:
    """WSDDN on the last feature map of `backbone`."""
    return Wsddn(create_backbone(cfg), dims.num_classes, cfg)
