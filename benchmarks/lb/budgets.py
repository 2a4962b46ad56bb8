"""The leaderboard's budgets: what every row of one table shares (epochs, images, backbone, data, rows), by name.

`--budget NAME` picks one; `--epochs`, `--image-size`, `--backbone`, `--n-splits`, `--limit` and `--archs` override
its values (a smoke run of a budget). Each budget writes its own table and keeps its own work folder.

- `default`: 5 epochs at 64 px (upsampled from the 32 px chips), resnet10t from scratch, fold 0 of 4 (12,000
  training and 4,000 OOF rows), every registered architecture: 107 minutes for its 13 rows and the blend on 2 CPU cores
  (2026-12-04; `benchmarks/leaderboard.py` says how it was sized). The last feature map is 2 x 2.
- `spatial`: the same data and epochs, with the backbone dilated to `output_stride` 8, so that its last map is 8 x 8
  at 64 px, for the heads that attend over positions: baseline, hourglass, csra, ml_decoder, srn and cnn_rnn.
  Measured on 2 cores (resnet10t, batch 64, forward + backward): 319 images/s at 64 px undilated, 133 at
  output_stride 8 (2.4 times the cost), 51 at 128 px with output_stride 16 and 11 at 256 px undilated (8 x 8 the
  plain way, 29 times the cost). Dilation is the cheap way to an 8 x 8 map: stages 3 and 4 run at 8 x 8 instead of
  4 x 4 and 2 x 2, the stem and stages 1-2 cost what they did. Sizing: `benchmarks/train.py --image-size 64
  --output-stride 8` (pipeline on, batch 64, 2 cores shared with other work) trained baseline 74, hourglass 69, csra 81,
  ml_decoder 42, srn 34 and cnn_rnn 79 images/s; idle, about a third faster. Five epochs of 12,000 chips are 60,000
  images a row, about 80 minutes of training for the six rows, and each row's evaluation (5 validation passes over
  the 4,000 OOF chips, then the TTA prediction of OOF and test) runs at 2-3 times the training rate: with the 8
  dihedral views that is 84,000 images a row, about 50 minutes more, over the 2 hours; with `flips` (3 views,
  44,000 images) about 25. So the spatial budget predicts with `train.tta: flips`, for every row alike.
- `gpu`: 224 px (upsampled from the 32 px chips), resnet50 from scratch, 10 epochs, bf16 and channels_last on CUDA,
  data-loader workers for the box, the spatial rows; sized below for one H100-class GPU, under 10 minutes for all.

The `gpu` budget's sizing (an estimate, to be replaced by a measured run): `benchmarks/train.py`'s GPU form
(resnet50, 256 px, bf16, channels_last) is expected at about 2,500 training images/s on an H100 with the pipeline
on (the published ResNet-50 AMP training rates are 2,500-3,000 images/s on an A100 and higher on an H100; at 224 px
a step costs 0.77 of one at 256 px), and evaluation at about 3 times that, 7,500 images/s. A baseline row on 12,000
chips (fold 0 of 4: 9,000 training and 3,000 OOF rows, plus the 4,000 test chips): 10 epochs of 9,000 images, 36 s;
10 validation passes over 3,000, 4 s; the dihedral TTA prediction of OOF and test, 8 x 7,000 = 56,000 images, 7.5 s;
stage overheads about 15 s: about 63 s. The heads cost up to 1.5 times the baseline (ML-Decoder, the CNN-RNN's beam
search), so six rows come to about 6 x 63 x 1.25 = 470 s, and the shared stages (the 224 px cache of 16,000 chips,
3.0 GB of uint8, and HOG) about 40 s: about 510 s, under the 10 minutes with room for a slower loader.
`torch.compile` is off: its compile time (about a minute per model) would be most of a row at this size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPATIAL_ROWS = ("baseline", "hourglass", "csra", "ml_decoder", "srn", "cnn_rnn")


@dataclass(frozen=True)
class Budget:
    """What every row of one leaderboard shares.

    Args:
        epochs: `train.epochs` of every row.
        image_size: `prepare.image_size` (the 32 px chips are upsampled to it).
        backbone: The timm backbone of every image architecture, not pretrained.
        n_splits: `folds.n_splits`; fold 0 is trained and scored.
        archs: The rows (None: every registered architecture and its variants).
        limit: Training rows sampled (seeded) from the data (None: all).
        output_stride: Every backbone's `output_stride` (8 or 16 dilate the last stages).
        train: Keys over the `train` section (precision, memory format, TTA).
        table: The markdown table's file name under benchmarks/results/ (the JSON goes beside it).
    """

    epochs: int
    image_size: int
    backbone: str
    n_splits: int = 4
    archs: tuple[str, ...] | None = None
    limit: int | None = None
    output_stride: int = 32
    train: dict[str, Any] = field(default_factory=dict)
    table: str = "leaderboard.md"


BUDGETS: dict[str, Budget] = {
    "default": Budget(epochs=5, image_size=64, backbone="resnet10t"),
    "spatial": Budget(
        epochs=5,
        image_size=64,
        backbone="resnet10t",
        archs=SPATIAL_ROWS,
        output_stride=8,
        train={"tta": "flips"},
        table="leaderboard_spatial.md",
    ),  # fmt: skip
    "gpu": Budget(
        epochs=10,
        image_size=224,
        backbone="resnet50",
        archs=SPATIAL_ROWS,
        limit=12_000,
        train={"amp": True, "channels_last": True, "compile": False, "device": "auto", "num_workers": "auto"},
        table="leaderboard_gpu.md",
    ),  # fmt: skip
}


def budget_train_keys(budget: Budget) -> dict[str, Any]:
    """The budget's keys over the `train` section (`num_workers: auto` sizes the loader for the box it runs on)."""
    return dict(budget.train)
