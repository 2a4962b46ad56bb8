"""WSDDN: the two softmaxes and phi, the pooled RoI features, config errors, the phases, bf16, and localisation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import arch_model
from torch import nn

from mlic.errors import ConfigError
from mlic.features.proposals import box_iou, windows
from mlic.models.backbones import feature_map
from mlic.models.regions import region_features
from mlic.models.wsddn import HEAD_MODULES, PHI_EPS, Wsddn, WsddnConfig, WsddnTask
from mlic.tasks.base import check_phases
from mlic.tasks.losses import LOSSES

NUM_CLASSES = 4
SIZE = 64  # resnet10t's last map is 2 x 2 here
PADDED = 3  # the second test image's last boxes have no area, as padding would

pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: see conftest.one_torch_thread


def build(**options):
    """A seeded WSDDN on resnet10t with small heads, and its task."""
    return arch_model("wsddn", NUM_CLASSES, backbone="resnet10t", roi_channels=16, hidden=64, **options)


def batch_inputs(regions: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random images and their sliding windows; the second one's last `PADDED` boxes have no area."""
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    boxes = torch.from_numpy(windows(SIZE, SIZE, regions)).repeat(2, 1, 1)
    boxes[1, -PADDED:, 2:4] = 0.0
    return images, boxes


def entropy(p: torch.Tensor, dim: int) -> torch.Tensor:
    return -(p * p.clamp_min(1e-30).log()).sum(dim)


def test_outputs_are_a_distribution_over_regions_weighted_by_label_probabilities():
    model, _ = build()
    images, boxes = batch_inputs()
    with torch.no_grad():
        out = model.eval().regions(images, boxes, with_features=True)
        pooled = region_features(feature_map(model.backbone, images), boxes, image_size=SIZE, output_size=7)
        alone = model.regions(images[1:], boxes[1:])
    assert out.roi_features.shape == (2, 20, 512, 7, 7)
    torch.testing.assert_close(out.roi_features, pooled)  # the raw map's patches, before the 1x1 reduction
    for t in out[1:4]:
        assert t.shape == (2, 20, NUM_CLASSES) and torch.isfinite(t).all()
    assert out.image_scores.shape == (2, NUM_CLASSES) and out.image_scores.dtype == torch.float32
    labels = torch.softmax(out.class_logits, dim=-1)
    where = out.region_scores / labels  # the detection stream's distribution, recovered from the product
    torch.testing.assert_close(where.sum(dim=1), torch.ones(2, NUM_CLASSES))
    torch.testing.assert_close(where, torch.softmax(out.region_logits / model.detection_temperature, dim=1))
    assert (where[1, -PADDED:] == 0).all() and (where[0, -PADDED:] > 0).all()  # boxes without area get no mass
    torch.testing.assert_close(out.image_scores, out.region_scores.sum(dim=1))
    torch.testing.assert_close(model(images, boxes), out.image_scores)
    torch.testing.assert_close(alone.image_scores, out.image_scores[1:])  # no softmax across the batch
    with torch.no_grad():
        model.region_head.weight.mul_(1e4)  # at init the regions' logits differ by 1e-4: spread them
        spread = model.regions(images, boxes)
        sharp = model.regions(images, boxes, sharpen=4.0)
        model.class_head.weight.mul_(1e4)  # extreme logits in both streams: phi stays a probability
        extreme = model(images, boxes)
    spread_where = spread.region_scores / torch.softmax(spread.class_logits, dim=-1)
    sharp_where = sharp.region_scores / torch.softmax(4.0 * sharp.class_logits, dim=-1)
    assert (entropy(sharp_where, dim=1) < entropy(spread_where, dim=1) - 0.1).all()
    assert torch.isfinite(extreme).all() and (extreme >= 0).all() and (extreme <= 1).all()
    assert (out.image_scores > 0).all() and (out.image_scores < 1).all()


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_the_detection_softmax_divides_the_region_logits_by_the_temperature(temperature):
    """The authors' code halves fc8d's output before the softmax over regions (temperature 2, the default)."""
    assert WsddnConfig().detection_temperature == 2.0
    model, _ = build(detection_temperature=temperature)
    images, boxes = batch_inputs()
    with torch.no_grad():
        model.region_head.weight.mul_(1e3)  # at init the regions' logits differ by 1e-4: spread them
        out = model.eval().regions(images, boxes)
        sharp = model.regions(images, boxes, sharpen=3.0)
    logits = out.region_logits.double()  # by hand: exp(z / T) over the regions, normalised
    weights = torch.exp((logits - logits.amax(dim=1, keepdim=True)) / temperature)
    manual = torch.softmax(out.class_logits.double(), dim=-1) * weights / weights.sum(dim=1, keepdim=True)
    torch.testing.assert_close(out.region_scores.double(), manual, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.image_scores.double(), manual.sum(dim=1), rtol=1e-5, atol=1e-6)
    plain = torch.softmax(out.region_logits, dim=1)  # temperature 1
    assert torch.allclose(out.region_scores / torch.softmax(out.class_logits, -1), plain) == (temperature == 1.0)
    sharp_where = sharp.region_scores / torch.softmax(3.0 * sharp.class_logits, dim=-1)  # sharpen after the division
    torch.testing.assert_close(sharp_where, torch.softmax(sharp.region_logits * (3.0 / temperature), dim=1))


def test_the_loss_is_bce_on_phi_and_prediction_is_phi():
    model, task = build()
    images, boxes = batch_inputs()
    target = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=torch.float32)
    task.setup(target.numpy())
    assert task.sources == ("image", "boxes")
    batch = {"image": images, "boxes": boxes, "target": target}
    model.eval()
    with torch.no_grad():
        phi = model(images, boxes)
        loss = task.training_step(model, batch).loss
        torch.testing.assert_close(task.predict_step(model, {"image": images, "boxes": boxes}), phi)
    expected = -(target * torch.log(phi + PHI_EPS) + (1 - target) * torch.log(1 - phi + PHI_EPS)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, F.binary_cross_entropy(phi, target), rtol=1e-5, atol=1e-6)  # phi in (0, 1)


class FixedScores(nn.Module):
    """A network whose image scores phi are a parameter: the loss's gradient with respect to phi, read directly."""

    def __init__(self, phi: torch.Tensor):
        super().__init__()
        self.phi = nn.Parameter(phi)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.phi


# a rare present label at phi = 1e-6 (below the old clamp at 1e-4, which passed it no gradient), and the extremes
RARE_PHI = torch.tensor([[1e-6, 0.5, 0.2], [0.0, 1.0, 0.3]])
RARE_TARGET = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]])


@pytest.mark.parametrize("loss", LOSSES.names())
def test_a_present_label_learns_at_any_phi_and_the_loss_stays_finite(loss):
    task = WsddnTask(WsddnConfig(loss=loss))
    task.setup(RARE_TARGET.numpy())
    net = FixedScores(RARE_PHI.clone())
    images, boxes = torch.zeros(2, 3, SIZE, SIZE), torch.zeros(2, 1, 5)
    step = task.training_step(net, {"image": images, "boxes": boxes, "target": RARE_TARGET})
    step.loss.backward()
    grad = net.phi.grad
    assert torch.isfinite(step.loss) and torch.isfinite(grad).all()  # phi = 0 for a positive, 1 for a negative
    assert grad[0, 0] < 0 and grad[1, 0] < 0  # raising phi of a present label lowers the loss, even from 0
    if loss == "bce":  # the paper's BCE on phi: d/dphi -log(phi) = -1 / phi, over the mean's N * C elements
        assert grad[0, 0].item() * RARE_PHI.numel() == pytest.approx(-1 / (1e-6 + PHI_EPS), rel=1e-4)
        assert grad[0, 0].item() * RARE_PHI.numel() < -0.9e6
        terms = [1e-6, 1 - 0.5, 1 - 0.2, 0.0, 1 - 1.0, 0.3]  # phi of each positive, 1 - phi of each negative
        assert step.loss.item() == pytest.approx(-np.mean(np.log(np.array(terms) + PHI_EPS)), rel=1e-5)


def test_bf16_autocast_on_cpu_gives_finite_scores_loss_and_gradients():
    model, task = build()
    images, boxes = batch_inputs()
    target = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=torch.float32)
    task.setup(target.numpy())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.train().regions(images, boxes)
        step = task.training_step(model, {"image": images, "boxes": boxes, "target": target})
    assert out.image_scores.dtype == torch.float32 and torch.isfinite(out.image_scores).all()
    assert ((out.image_scores >= 0) & (out.image_scores <= 1)).all()
    torch.testing.assert_close(out.region_scores.sum(dim=(1, 2)), torch.ones(2), atol=1e-2, rtol=0)
    step.loss.backward()
    assert torch.isfinite(step.loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"roi_size": 0}, "roi_size: must be >= 1"),
        ({"roi_channels": -1}, "roi_channels: must be >= 0"),
        ({"hidden": 0}, "hidden: must be >= 1"),
        ({"dropout": 1.0}, "dropout: must be in"),
        ({"head_warmup_epochs": -1}, "head_warmup_epochs: must be >= 0"),
        ({"lr_scale": 0.0}, "lr_scale: must be > 0"),
        ({"detection_temperature": 0.0}, "detection_temperature: must be > 0"),
        ({"detection_temperature": -2.0}, "detection_temperature: must be > 0"),
        ({"detection_temperature": float("inf")}, "detection_temperature: must be > 0"),
    ],
)
def test_bad_settings_name_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        WsddnConfig(**options)


def test_the_heads_phase_trains_all_but_the_backbone_then_everything_trains():
    model, task = build(head_warmup_epochs=2, lr_scale=0.1)
    assert [name for name, _ in model.named_children()] == ["backbone", *HEAD_MODULES]
    heads, everything = check_phases(task.phases(5), 5, "wsddn")
    assert (heads.name, heads.epochs, heads.lr_scale) == ("heads", 2, 0.1)
    assert (everything.name, everything.epochs, everything.trainable, everything.lr_scale) == ("all", 3, None, 0.1)
    names = [name for name, _ in model.named_parameters()]
    trained = {name for name in names if heads.trains(name)}
    assert trained == {name for name in names if not name.startswith("backbone.")}
    assert trained and any(name.startswith("backbone.") for name in names)
    # a warm-up as long as training leaves one epoch to the whole network; none, or one epoch, is a single phase
    assert [(p.name, p.epochs) for p in task.phases(2)] == [("heads", 1), ("all", 1)]
    assert [(p.name, p.epochs) for p in task.phases(1)] == [("all", 1)]
    assert [(p.name, p.epochs) for p in WsddnTask(WsddnConfig(head_warmup_epochs=0)).phases(4)] == [("all", 4)]


SQUARE = 16  # side of the drawn squares, on multiples of 8: exactly one of the 16 x 16 sliding windows
WINDOWS = 147  # windows(64, 64, 147) ends with all 49 of the 16 x 16 windows (the boxes are sorted by scale)
COLOURS = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)  # label 0 red, label 1 green


def squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """`n` dark noisy 64 px images with 0-2 non-overlapping squares, one per label; their labels and (x, y)."""
    rng = np.random.default_rng(seed)
    pictures = rng.random((n, 3, SIZE, SIZE), dtype=np.float32) * 0.2
    labels = np.zeros((n, len(COLOURS)), dtype=np.float32)
    corners = np.full((n, len(COLOURS), 2), -SIZE)
    for i in range(n):
        for c in rng.permutation(len(COLOURS))[: rng.integers(0, 3)]:
            xy = rng.integers(0, (SIZE - SQUARE) // 8 + 1, 2) * 8
            while np.abs(xy - corners[i, 1 - c]).max() < SQUARE:  # the other label's square stays whole
                xy = rng.integers(0, (SIZE - SQUARE) // 8 + 1, 2) * 8
            pictures[i, :, xy[1] : xy[1] + SQUARE, xy[0] : xy[0] + SQUARE] = COLOURS[c][:, None, None]
            labels[i, c], corners[i, c] = 1.0, xy
    return torch.from_numpy((pictures - 0.5) / 0.3), torch.from_numpy(labels), corners


class TinyBackbone(nn.Module):
    """Two stride-2 convs: a 16 x 16 map at 64 px, fine enough to tell 16 px windows 8 px apart (resnet10t: 2 x 2)."""

    num_features = 32

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


@pytest.mark.slow  # 100 training steps: about 5 s
def test_a_tiny_wsddn_trained_on_image_labels_finds_the_squares():
    """From image labels alone, the top region of each present label is its square's window (IoU >= 0.5)."""
    steps, batch = 100, 8
    boxes = torch.from_numpy(windows(SIZE, SIZE, WINDOWS))
    assert ((boxes[:, 2] == SQUARE) & (boxes[:, 3] == SQUARE)).sum() == ((SIZE - SQUARE) // 8 + 1) ** 2
    torch.manual_seed(0)
    cfg = WsddnConfig(roi_size=4, roi_channels=0, hidden=32, dropout=0.0)
    model, task = Wsddn(TinyBackbone(), len(COLOURS), cfg), WsddnTask(cfg)
    images, labels, _ = squares(steps * batch, seed=1)
    task.setup(labels.numpy())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        rows = slice(step * batch, (step + 1) * batch)
        b = {"image": images[rows], "boxes": boxes.expand(batch, -1, -1), "target": labels[rows]}
        loss = task.training_step(model, b).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    images, labels, corners = squares(64, seed=2)
    with torch.no_grad():
        scores = model.eval().regions(images, boxes.expand(len(images), -1, -1)).region_scores
    hits = []
    for i, c in zip(*np.nonzero(labels.numpy()), strict=True):
        top = boxes[scores[i, :, c].argmax()].numpy()
        drawn = np.array([[*corners[i, c], SQUARE, SQUARE]], dtype=np.float32)
        hits.append(box_iou(top[None], drawn)[0, 0] >= 0.5)
    assert len(hits) > 40 and np.mean(hits) >= 0.8, np.mean(hits)  # at random init, about 2 %
