"""SRN: branch shapes and gradients, the per-image attention softmax, pooling, ONNX, the four phases, overfitting."""

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import arch_model
from torch import nn

from mlic.config import TrainConfig
from mlic.errors import ConfigError
from mlic.loop.runtime import Runtime
from mlic.tasks.base import check_phases
from mlic.train.engine import fit, make_engine

NUM_CLASSES = 4
SIZE = 64  # resnet10t's X (stride 16) is 4 x 4 here
BRANCH_MODULES = {  # what each branch's loss reaches
    "cls": {"backbone", "classifier"},
    "att": {"backbone", "attention", "confidence"},
    "sr": {"backbone", "attention", "confidence", "regularizer"},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: see conftest.one_torch_thread


def build(**options):
    """A seeded SRN on resnet10t at 64 px and its task."""
    return arch_model("srn", NUM_CLASSES, backbone="resnet10t", sr_map_size=SIZE // 16, **options)


def images(n: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n * size))


def test_each_branch_has_one_logit_per_label_and_reaches_its_own_modules():
    model, _ = build()
    x = images()
    for branch, reached in BRANCH_MODULES.items():
        model.zero_grad(set_to_none=True)
        logits = model.train()(x)
        assert set(logits) == set(BRANCH_MODULES) and all(v.shape == (2, NUM_CLASSES) for v in logits.values())
        logits[branch].square().sum().backward()
        for name, module in model.named_children():
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            if name in reached:  # the backbone's last stage is the main net's alone
                assert grads and all(torch.isfinite(g).all() for g in grads), (branch, name)
            else:
                assert not grads, (branch, name)
    model.eval()
    with torch.no_grad():
        blended, parts = model(x), model.branches(x)
    assert blended.shape == (2, NUM_CLASSES)
    torch.testing.assert_close(blended, 0.5 * parts["cls"] + 0.5 * parts["sr"])


def test_bf16_autocast_on_cpu_gives_finite_logits_and_gradients():
    model, task = build()
    target = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=torch.float32)
    task.setup(target.numpy())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.train()(images())
        step = task.training_step(model, {"image": images(), "target": target})
    assert all(torch.isfinite(v).all() for v in logits.values())
    assert set(step.parts) == {"cls", "att", "sr"} and torch.isfinite(step.loss)
    step.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_attention_is_a_softmax_over_positions_per_image_and_label():
    """Each image's map of each label sums to 1, and is the map of that image alone (no softmax across the batch)."""
    model, _ = build()
    x = images()
    with torch.no_grad():
        a = model.eval().attention_maps(x)
        alone = torch.cat([model.attention_maps(x[i : i + 1]) for i in range(2)])
    assert a.shape == (2, NUM_CLASSES, 4, 4) and a.dtype == torch.float32 and (a >= 0).all()
    torch.testing.assert_close(a.sum(dim=(2, 3)), torch.ones(2, NUM_CLASSES))
    torch.testing.assert_close(a, alone)
    assert (a[0] - a[1]).abs().amax() > 1e-5  # near uniform at init, but the two images differ


def test_attention_logits_are_the_attention_weighted_sum_of_the_confidence_maps():
    model, _ = build()
    x = images()
    with torch.no_grad():
        model.eval()
        a, s = model.attention_maps(x), model.confidence(model.backbone(x)[0])
        torch.testing.assert_close(model.branches(x)["att"], torch.einsum("nchw,nchw->nc", a, s))


@pytest.mark.slow  # an ONNX export: 2-3 s
def test_another_input_size_is_pooled_to_the_configured_map_and_exports_to_onnx(tmp_path):
    """96 px gives a 6 x 6 X, average-pooled to f_sr's 4 x 4 kernel (not a divisor); ONNX computes the same."""
    model, _ = build()
    x = images(2, 96)
    assert model.attention_maps(x).shape == (2, NUM_CLASSES, 6, 6)
    assert all(v.shape == (2, NUM_CLASSES) for v in model.train()(x).values())
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    path = tmp_path / "srn.onnx"
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_shapes=({0: batch},), dynamo=True, verbose=False)  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["logits"], {"image": x.numpy()})[0], expected, rtol=0, atol=1e-4)


def test_phases_follow_phase_epochs_and_skip_empty_ones():
    _, task = build(phase_epochs=(4, 2, 2, 2))
    phases = task.phases(10)
    assert [(p.name, p.epochs, p.trainable) for p in phases] == [
        ("main", 4, ("backbone.", "classifier.")),
        ("attention", 2, ("attention.", "confidence.")),
        ("regularizer", 2, ("regularizer.",)),
        ("joint", 2, None),
    ]
    _, joint_only = build(phase_epochs=(0, 0, 0, 5))
    assert [(p.name, p.epochs) for p in check_phases(joint_only.phases(5), 5, "srn")] == [("joint", 5)]
    with pytest.raises(ConfigError, match="phase_epochs: .* add up to 10 epochs but train.epochs is 12"):
        task.phases(12)


def test_every_phase_restarts_the_rate_at_its_own_scale():
    """Through the real engine: each phase warms up from near 0 and peaks at lr x its scale (the joint one at 0.1)."""
    model, task = build(phase_epochs=(2, 1, 1, 1))
    phases = check_phases(task.phases(5), 5, "srn")
    assert [(p.restart, p.lr_scale) for p in phases] == [(True, 1.0), (True, 1.0), (True, 1.0), (True, 0.1)]
    cfg = TrainConfig(epochs=5, lr=0.01, warmup_epochs=1.0, min_lr_ratio=0.0, device="cpu")
    rt = Runtime(torch.device("cpu"), nn.ModuleDict({"image": nn.Identity()}))
    engine = make_engine(model, model, cfg, rt, 10, phases, task.lr_multiplier)
    rates = []
    for _ in range(50):
        rates.append(engine.optimizer.param_groups[0]["lr"])
        engine.optimizer.step()
        engine.scheduler.step()
    spans = [rates[0:20], rates[20:30], rates[30:40], rates[40:50]]
    for span, peak in zip(spans, (0.01, 0.01, 0.01, 0.001), strict=True):
        assert span[0] <= 0.5 * peak and max(span) == pytest.approx(peak) and span[-1] < 0.1 * peak


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"phase_epochs": (1, 1, 1)}, "phase_epochs: needs 4 epoch counts"),
        ({"phase_epochs": (0, 0, 0, 0)}, "phase_epochs: needs 4 epoch counts"),
        ({"phase_epochs": (2, -1, 1, 1)}, "phase_epochs: needs 4 epoch counts"),
        ({"alpha": 1.5}, "alpha: must be in"),
        ({"sr_map_size": 0}, "sr_map_size: must be >= 1"),
        ({"phase_lr_scales": (1.0, 1.0, 0.1)}, "phase_lr_scales: needs 4 learning-rate scales"),
        ({"phase_lr_scales": (1.0, 0.0, 1.0, 1.0)}, "phase_lr_scales: needs 4 learning-rate scales"),
    ],
)
def test_bad_settings_name_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        arch_model("srn", NUM_CLASSES, backbone="resnet10t", **options)


def test_each_phase_trains_its_loss_and_predict_blends():
    model, task = build()
    target = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=torch.float32)
    task.setup(target.numpy())
    batch = {"image": images(), "target": target}
    for phase in task.phases(10):
        task.begin_phase(phase)
        step = task.training_step(model.train(), batch)
        expected = {"main": {"cls"}, "attention": {"att"}, "regularizer": {"sr"}, "joint": {"cls", "att", "sr"}}
        assert set(step.parts) == expected[phase.name]
        assert step.loss.item() == pytest.approx(sum(v.item() for v in step.parts.values()), rel=1e-6)
    with torch.no_grad():
        scores = task.predict_step(model.eval(), {"image": batch["image"]})
        torch.testing.assert_close(scores, torch.sigmoid(model(batch["image"])))
        left_training = task.predict_step(model.train(), {"image": batch["image"]})  # blends the branches' dict
    assert left_training.shape == scores.shape and ((left_training > 0) & (left_training < 1)).all()


def coloured_squares(n: int = 8, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with a square of each present label's colour at a random place, on dark noise; and their labels."""
    rng = np.random.default_rng(0)
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=np.float32)
    labels = (rng.random((n, NUM_CLASSES)) < 0.5).astype(np.float32)
    labels[labels.sum(axis=1) == 0, rng.integers(NUM_CLASSES)] = 1
    pictures = rng.random((n, 3, size, size), dtype=np.float32) * 0.2
    side = size // 4
    for i, j in zip(*np.nonzero(labels), strict=True):
        top, left = rng.integers(0, size - side, 2)
        pictures[i, :, top : top + side, left : left + side] = colours[j][:, None, None]
    return torch.from_numpy((pictures - 0.5) / 0.3), torch.from_numpy(labels)


def test_frozen_tensors_are_bit_identical_through_the_attention_and_regularizer_phases():
    """The real engine over the four phases (one epoch each): what a phase freezes, BN statistics included, stays."""
    model, task = build(phase_epochs=(1, 1, 1, 1))
    x, y = coloured_squares()
    task.setup(y.numpy())
    cfg = TrainConfig(epochs=4, batch_size=4, lr=0.003, warmup_epochs=0.0, min_lr_ratio=1.0, device="cpu")
    loader = torch.utils.data.DataLoader([{"image": a, "target": b} for a, b in zip(x, y, strict=True)], batch_size=4)
    rt = Runtime(torch.device("cpu"), nn.ModuleDict({"image": nn.Identity()}))
    engine = make_engine(model, model, cfg, rt, len(loader), check_phases(task.phases(cfg.epochs), cfg.epochs, "srn"))
    snapshots = [copy.deepcopy(model.state_dict())]
    history = fit(
        engine, loader, task, cfg, rt, on_epoch=lambda e, r: snapshots.append(copy.deepcopy(e.model.state_dict()))
    )
    trained = {1: ("backbone.", "classifier."), 2: ("attention.", "confidence."), 3: ("regularizer.",)}
    for epoch, prefixes in trained.items():
        before, after = snapshots[epoch - 1], snapshots[epoch]
        frozen = [k for k in before if not k.startswith(prefixes)]
        assert all(torch.equal(before[k], after[k]) for k in frozen), epoch  # weights and BN buffers
        moved = [k for k in before if k.startswith(prefixes) and k.endswith(".weight")]
        assert moved and all(not torch.equal(before[k], after[k]) for k in moved), epoch
    assert [sorted(k[len("train_loss_") :] for k in r if k.startswith("train_loss_")) for r in history] == [
        ["cls"], ["att"], ["sr"], ["att", "cls", "sr"]
    ]  # fmt: skip


@pytest.mark.slow  # trained to convergence: about 4 s
def test_joint_training_overfits_eight_coloured_square_images():
    model, task = arch_model("srn", NUM_CLASSES, backbone="resnet10t", sr_map_size=2, phase_epochs=(0, 0, 0, 1))
    x, y = coloured_squares(size=32)  # 32 px: X is 2 x 2, and the 50 steps take a few seconds
    task.setup(y.numpy())
    (joint,) = task.phases(1)
    task.begin_phase(joint)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(50):
        step = task.training_step(model, {"image": x, "target": y})
        optimizer.zero_grad()
        step.loss.backward()
        optimizer.step()
        losses.append(step.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
