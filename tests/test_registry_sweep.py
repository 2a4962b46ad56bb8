"""Every registry entry gets exercised: a tiny forward and backward pass for models, a call for the rest."""

import numpy as np
import pytest
import torch

from mlic.augment import AUGMENTATIONS, TTA_VIEWS, create_augmentation, tta_views
from mlic.competitions import COMPETITIONS
from mlic.config import DataConfig, ModelConfig, ThresholdsConfig, TrainConfig
from mlic.engine import OPTIMIZERS
from mlic.errors import ConfigError
from mlic.losses import LOSSES, create_loss
from mlic.models import MODELS, create_model, model_inputs
from mlic.sampling import SAMPLERS, make_train_loader
from mlic.thresholds import THRESHOLD_METHODS, fit_thresholds
from mlic.training import split_outputs, supervised_loss

NUM_CLASSES = 5


@pytest.mark.parametrize("loss", LOSSES.names())
@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_trains_with_every_loss(name, loss):
    """Model x loss on CPU: one forward and backward pass, finite loss and gradients, (N, C) logits."""
    torch.manual_seed(0)
    deep = name == "hourglass"  # its deeply supervised variant returns auxiliary logits too
    cfg = ModelConfig(arch=name, backbone="resnet10t", extra_filters=8, hog_projection=4, deep_supervision=deep)
    model = create_model(cfg, NUM_CLASSES, hog_dim=12).train()
    batch = {"image": torch.randn(4, 3, 32, 32), "hog": torch.randn(4, 12)}
    target = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.float32)
    loss_fn = create_loss(loss, label_freq=target.mean(0).numpy())
    value = supervised_loss(model, batch, model_inputs(name), target, loss_fn)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        logits, aux = split_outputs(model.eval()(*(batch[k] for k in model_inputs(name))))
    assert logits.shape == (4, NUM_CLASSES) and torch.isfinite(logits).all() and not aux


def test_hog_models_say_when_hog_is_missing():
    with pytest.raises(ConfigError, match="needs HOG features"):
        create_model(ModelConfig(arch="hog_linear"), NUM_CLASSES)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_is_a_finite_scalar_with_gradient(name):
    logits = torch.randn(4, NUM_CLASSES, requires_grad=True)
    loss = create_loss(name, label_freq=torch.full((NUM_CLASSES,), 0.3))(
        logits, (torch.rand(4, NUM_CLASSES) > 0.5).float()
    )
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and logits.grad is not None


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_every_augmentation_keeps_shape_and_dtype(name):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    transform = create_augmentation(name, image_size=32, seed=3)
    out = image if transform is None else transform(image=image)["image"]
    assert out.shape == image.shape and out.dtype == np.uint8
    again = create_augmentation(name, image_size=32, seed=3)
    assert np.array_equal(out, image if again is None else again(image=image)["image"])  # seeded


@pytest.mark.parametrize("name", TTA_VIEWS.names())
def test_every_tta_preset_gives_distinct_same_shape_views(name):
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    views = [view(x) for view in tta_views(name)]
    assert all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x)
    assert len({tuple(v.flatten().tolist()) for v in views}) == len(views)


@pytest.mark.parametrize("name", THRESHOLD_METHODS.names())
def test_every_threshold_method_returns_a_threshold_per_class(name, tmp_path):
    rng = np.random.default_rng(0)
    labels = (rng.random((60, NUM_CLASSES)) < 0.3).astype(np.uint8)
    probs = np.clip(labels * 0.6 + rng.random(labels.shape) * 0.4, 0, 1)
    cfg = ThresholdsConfig(method=name, grid_step=0.05, optuna_trials=5, optuna_storage=str(tmp_path / "o.db"))
    thresholds = fit_thresholds(probs, labels, cfg)
    assert thresholds.shape == (NUM_CLASSES,) and ((thresholds > 0) & (thresholds < 1)).all()


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_steps(name):
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = OPTIMIZERS.get(name)([param], lr=0.1, weight_decay=0.0)
    param.sum().backward()
    optimizer.step()
    assert (param < 1).all()


def test_every_competition_has_a_reader_and_writer():
    for name in COMPETITIONS.names():
        comp = COMPETITIONS.get(name)(DataConfig(competition=name))
        assert comp.name == name and comp.submission.id_column and comp.submission.label_column


def test_unknown_names_list_the_choices():
    with pytest.raises(ConfigError) as info:
        MODELS.get("baselin")
    assert "Did you mean 'baseline'?" in str(info.value) and "models.<entry>.arch" in str(info.value)
    with pytest.raises(ConfigError, match="unknown timm backbone"):
        create_model(ModelConfig(backbone="resnet_does_not_exist"), NUM_CLASSES)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_sampler_gives_full_batches_of_distinct_samples(name):
    labels = (np.random.default_rng(0).random((100, NUM_CLASSES)) < 0.2).astype(np.uint8)
    dataset = torch.utils.data.TensorDataset(torch.arange(100))
    cfg = TrainConfig(sampler=name, batch_size=16)
    loader = make_train_loader(dataset, labels, cfg)
    batches = [b[0].tolist() for b in loader]
    assert len(batches) == 6 and all(len(b) == 16 for b in batches)
    seen = [i for b in batches for i in b]
    assert len(set(seen)) == len(seen)


def test_oversampling_needs_the_stratified_sampler():
    with pytest.raises(ConfigError, match="oversample_power"):
        make_train_loader(torch.utils.data.TensorDataset(torch.arange(4)), np.ones((4, 2)),
                          TrainConfig(oversample_power=0.5, batch_size=2))  # fmt: skip
