"""SRN, the Spatial Regularization Network (Zhu et al., CVPR 2017): label attention maps and their spatial relations.

On top of a timm CNN, three heads share the feature map X of the stage before the last (ResNet-101 res4, 14 x 14 at
224 px):
- the main net: the last stage's map, global average pooling and a linear layer, logits y_cls;
- attention: f_att (1x1 -> 512, 3x3 -> 512, 1x1 -> C) gives one map per label, a softmax over each map's positions
  gives A, and confidence maps S = conv1x1(X) weighted by A and summed over positions give logits y_att;
- f_sr, the spatial regulariser: on U = sigmoid(S) * A it learns how the labels' attention maps lie relative to each
  other (1x1 -> 512, 1x1 -> 512, then a grouped conv whose kernel covers the whole map, 2048 channels in 512 groups,
  and a linear layer), logits y_sr.
The prediction blends the logits: y = alpha * y_cls + (1 - alpha) * y_sr. Training runs in four phases (`SRNTask`):
the main net, then attention on y_att, then f_sr on y_sr, each with what came before frozen, then all of it on the
sum of the three losses. Each phase runs its own warmup + cosine schedule (`phase_lr_scales`: the joint phase, which
fine-tunes all of it, at a tenth of the rate by default, our choice). The attention maps come out for overlays
(`SRN.attention_maps`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mlic.errors import invalid
from mlic.models.backbones import BackboneConfig, create_backbone
from mlic.models.registry import ModelDims, register_arch
from mlic.tasks.base import Phase, StepOutput
from mlic.tasks.multilabel import MultiLabelTask

ATTENTION_WIDTH = 512  # f_att's hidden channels (the paper's)
SR_WIDTH = 512  # f_sr's 1x1 convs, also the number of groups of its whole-map conv
SR_GROUP_OUT = 4  # output channels per group of the whole-map conv: 512 groups x 4 = 2048 as in the paper
# phase name -> the branches whose losses it trains, and the parameter-name prefixes that train (None: all)
PHASES: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {
    "main": (("cls",), ("backbone.", "classifier.")),
    "attention": (("att",), ("attention.", "confidence.")),
    "regularizer": (("sr",), ("regularizer.",)),
    "joint": (("cls", "att", "sr"), None),  # the authors' code: three losses are more stable than the paper's two
}


@dataclass(frozen=True)
class SRNConfig(BackboneConfig):
    """`arch: srn`."""

    backbone: str = "resnet101"  # the paper's; X is its res4 map
    sr_map_size: int = 14  # side of X at the trained image size (image side / 16 on ResNets): f_sr's kernel
    alpha: float = 0.5  # weight of the main net's logits in the prediction; f_sr's get 1 - alpha
    phase_epochs: tuple[int, ...] = (4, 2, 2, 2)  # epochs of main net, attention, f_sr, joint; sum = train.epochs
    # Each phase runs its own warmup + cosine at train.lr times its scale: the joint phase fine-tunes what the first
    # three trained, so it starts lower than they do
    phase_lr_scales: tuple[float, ...] = (1.0, 1.0, 1.0, 0.1)

    def __post_init__(self):
        super().__post_init__()
        if self.sr_map_size < 1:
            invalid("sr_map_size", f"must be >= 1, got {self.sr_map_size}", "the side of X, e.g. 14 at 224 px")
        if not 0.0 <= self.alpha <= 1.0:
            invalid("alpha", f"must be in [0, 1], got {self.alpha}")
        epochs = list(self.phase_epochs)
        if len(epochs) != len(PHASES) or min(epochs) < 0 or sum(epochs) < 1:
            invalid(
                "phase_epochs",
                f"needs {len(PHASES)} epoch counts >= 0 ({', '.join(PHASES)}) with a positive sum, got {epochs}",
                "e.g. [4, 2, 2, 2], or [0, 0, 0, 10] to train everything jointly",
            )
        scales = list(self.phase_lr_scales)
        if len(scales) != len(PHASES) or not all(math.isfinite(s) and s > 0 for s in scales):
            invalid(
                "phase_lr_scales",
                f"needs {len(PHASES)} learning-rate scales > 0 ({', '.join(PHASES)}), got {scales}",
                "e.g. [1.0, 1.0, 1.0, 0.1]",
            )


def conv(in_channels: int, out_channels: int, kernel: int = 1, groups: int = 1) -> nn.Conv2d:
    """A convolution keeping the map's size for odd kernels (padding kernel // 2)."""
    return nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, groups=groups)


class SpatialRegularizer(nn.Module):
    """f_sr: weighted attention maps U (N, C, H, W) -> logits (N, C), from the labels' joint spatial layout.

    The third conv's kernel is the whole `map_size` x `map_size` map, so each of its outputs sees every position of
    its group's channels: it learns where the labels lie relative to each other, which a GAP would lose. Maps of
    another size (another input size) are average-pooled to `map_size` first.
    """

    def __init__(self, num_classes: int, map_size: int):
        super().__init__()
        self.map_size = map_size
        self.layers = nn.Sequential(
            conv(num_classes, SR_WIDTH),
            nn.ReLU(),
            conv(SR_WIDTH, SR_WIDTH),
            nn.ReLU(),
            nn.Conv2d(SR_WIDTH, SR_WIDTH * SR_GROUP_OUT, map_size, groups=SR_WIDTH),  # whole-map kernel, 1 x 1 out
            nn.ReLU(),
            nn.Flatten(1),
        )
        self.fc = nn.Linear(SR_WIDTH * SR_GROUP_OUT, num_classes)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C) logits."""
        if tuple(u.shape[2:]) != (self.map_size, self.map_size):
            u = F.adaptive_avg_pool2d(u, self.map_size)
        return self.fc(self.layers(u))


class SRN(nn.Module):
    """timm features_only backbone (last two stages) -> main net, attention and f_sr -> blended logits.

    Submodule names are the phases' parameter prefixes: `backbone.` and `classifier.` (main net), `attention.` (f_att)
    and `confidence.` (S), `regularizer.` (f_sr).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, cfg: SRNConfig):
        super().__init__()
        self.backbone = backbone
        x_channels, top_channels = backbone.feature_info.channels()
        self.classifier = nn.Linear(top_channels, num_classes)
        self.attention = nn.Sequential(
            conv(x_channels, ATTENTION_WIDTH),
            nn.ReLU(),
            conv(ATTENTION_WIDTH, ATTENTION_WIDTH, 3),
            nn.ReLU(),
            conv(ATTENTION_WIDTH, num_classes),
        )
        self.confidence = conv(x_channels, num_classes)
        self.regularizer = SpatialRegularizer(num_classes, cfg.sr_map_size)
        self.alpha = cfg.alpha

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention maps A (float32, each label's map sums to 1 over its positions) and confidence maps S of X."""
        z = self.attention(x)
        # per image and label over its H * W positions; float32 because bf16 sums of 196 terms drift from 1
        a = torch.softmax(z.flatten(2).float(), dim=-1).view(z.shape)
        return a, self.confidence(x)

    def branches(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three branches' logits, whatever the mode: {"cls", "att", "sr"}, each (N, C)."""
        x, top = self.backbone(images)
        a, s = self.attend(x)
        return {
            "cls": self.classifier(top.mean(dim=(2, 3))),
            "att": (a * s).sum(dim=(2, 3)),  # sum over positions of A * S
            "sr": self.regularizer(torch.sigmoid(s) * a),
        }

    def blend(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        """The prediction's logits: alpha * y_cls + (1 - alpha) * y_sr."""
        return self.alpha * logits["cls"] + (1.0 - self.alpha) * logits["sr"]

    def attention_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Per-label attention maps A at X's resolution, (N, C, H, W), for overlays."""
        x = self.backbone(images)[0]
        return self.attend(x)[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Blended logits (N, C); while training, the dict of the three branches' logits for the task."""
        logits = self.branches(images)
        return logits if self.training else self.blend(logits)


class SRNTask(MultiLabelTask):
    """SRN's four-phase schedule; each phase's loss is that of the branches it trains, each logged as its own part.

    The loss of every branch is the entry's `loss` (with `loss_options`). Outside its schedule (no phase set, or a
    phase that is not one of SRN's) a step takes the joint loss.
    """

    def phases(self, epochs: int) -> list[Phase]:
        """Main net, attention, f_sr, joint, with `phase_epochs`; phases of 0 epochs are skipped.

        The paper trains each stage to convergence before the next: every phase restarts the warmup + cosine over
        its own epochs, at `train.lr` times its `phase_lr_scales` entry (one shared decay would leave the later
        phases only the low tail of the rate).
        """
        lengths = list(self.cfg.phase_epochs)
        if sum(lengths) != epochs:
            invalid(
                "phase_epochs",
                f"{lengths} add up to {sum(lengths)} epochs but train.epochs is {epochs}",
                "make the phase epochs add up to train.epochs",
            )
        trainable = [prefixes for _, prefixes in PHASES.values()]
        specs = zip(PHASES, lengths, trainable, self.cfg.phase_lr_scales, strict=True)
        schedule = [Phase(name, n, train, scale, restart=True) for name, n, train, scale in specs]
        return [phase for phase in schedule if phase.epochs > 0]

    def training_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        """The sum of the current phase's branch losses; parts `cls`, `att`, `sr` (those trained)."""
        if self.loss_fn is None:
            raise RuntimeError("SRNTask.setup(train_labels) builds the loss; call it before training")
        logits = net(*self.inputs(batch))
        if not isinstance(logits, dict):
            raise RuntimeError("SRN returns its branches' logits in training mode only; call net.train() first")
        # outside its own schedule (no phase, or another loop's single phase, e.g. benchmarks/train.py): joint
        branches = PHASES.get(self.phase.name if self.phase is not None else "joint", PHASES["joint"])[0]
        parts = {name: self.loss_fn(logits[name].float(), batch["target"]) for name in branches}
        return StepOutput(sum(parts.values()), {name: value.detach() for name, value in parts.items()})

    def predict_step(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sigmoid of the blended logits alpha * y_cls + (1 - alpha) * y_sr."""
        out = net(*self.inputs(batch))
        if isinstance(out, dict):  # a network left in training mode
            out = self.cfg.alpha * out["cls"] + (1.0 - self.cfg.alpha) * out["sr"]
        return torch.sigmoid(out.float())


@register_arch("srn", SRNConfig, SRNTask, tiny={"backbone": "resnet10t", "sr_map_size": 2})
def srn(cfg: SRNConfig, dims: ModelDims) -> nn.Module:
    """SRN on `backbone`: X and the main net's map are its last two feature stages."""
    return SRN(create_backbone(cfg, out_indices=(-2, -1)), dims.num_classes, cfg)
