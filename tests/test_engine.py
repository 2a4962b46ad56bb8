"""The training engine on a tiny linear problem: schedule, accumulation, clipping, EMA, early stopping, resume state."""

import copy

import numpy as np
import pytest
import torch

from mlic.config import TrainConfig
from mlic.engine import Engine, fit, make_engine, seed_epoch, warmup_cosine
from mlic.losses import create_loss
from mlic.sampling import make_train_loader
from mlic.training import CachedSamples, make_runtime

N, D, C = 32, 6, 3


def _problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(N, 1, D)).astype(np.float32)
    labels = (features[:, 0, :C] > 0).astype(np.uint8)
    return features, labels


def _train(cfg: TrainConfig, validate=None) -> Engine:
    features, labels = _problem()
    dataset = CachedSamples({"hog": features}, np.arange(N), np.zeros(N, dtype=int), labels)
    loader = make_train_loader(dataset, labels, cfg)
    rt = make_runtime(cfg, [0.0] * 3, [1.0] * 3, (np.zeros(D), np.ones(D)), torch.device("cpu"))
    torch.manual_seed(0)
    model = torch.nn.Linear(D, C)
    engine = make_engine(model, model, cfg, rt, len(loader))
    fit(engine, loader, create_loss("bce"), cfg, rt, ("hog",), validate)
    return engine


def test_warmup_then_cosine_down_to_the_floor():
    lrs = [warmup_cosine(s, 4, 20, 0.1) for s in range(21)]
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))  # non-increasing after warmup
    assert lrs[20] == pytest.approx(0.1) and lrs[12] == pytest.approx(0.1 + 0.9 * 0.5)


def test_accumulating_two_half_batches_equals_one_full_batch():
    base = {"epochs": 2, "warmup_epochs": 0, "optimizer": "sgd", "lr": 0.5, "device": "cpu"}
    full = _train(TrainConfig(batch_size=16, **base)).model
    accumulated = _train(TrainConfig(batch_size=8, accumulate_steps=2, **base)).model
    for a, b in zip(full.parameters(), accumulated.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_gradient_clipping_bounds_the_first_update():
    cfg = TrainConfig(epochs=1, warmup_epochs=0, batch_size=N, optimizer="sgd", lr=1.0, weight_decay=0.0,
                      clip_grad_norm=1e-3, min_lr_ratio=1.0, device="cpu")  # fmt: skip
    torch.manual_seed(0)
    before = torch.cat([p.detach().flatten() for p in torch.nn.Linear(D, C).parameters()])
    after = torch.cat([p.detach().flatten() for p in _train(cfg).model.parameters()])
    assert (after - before).norm() <= 1e-3 + 1e-7


def test_ema_weights_lag_the_model_and_are_what_gets_evaluated():
    engine = _train(TrainConfig(epochs=3, warmup_epochs=0, batch_size=8, ema_decay=0.9, device="cpu"))
    assert engine.eval_model is engine.ema.module
    assert not torch.allclose(engine.eval_model.weight, engine.model.weight)


def test_early_stopping_stops_after_patience_and_keeps_the_best_epoch():
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])
    weights = []

    def validate(model):
        weights.append(model.weight.detach().clone())
        score = next(scores)
        return score, {"val_f2": score}

    cfg = TrainConfig(epochs=6, warmup_epochs=0, batch_size=8, early_stopping_patience=2, device="cpu")
    engine = _train(cfg, validate)
    assert engine.state.epoch == 4 and engine.state.best_epoch == 2  # epochs 3 and 4 did not beat epoch 2
    assert [r["val_f2"] for r in engine.state.history] == [0.5, 0.7, 0.6, 0.65]
    assert torch.equal(engine.eval_model.weight, weights[1])  # the best epoch's weights are restored


def test_engine_state_round_trips_and_continues_identically():
    """Stopping after epoch 1 and continuing from a restored state gives the same weights as 3 epochs in one go."""
    cfg = TrainConfig(epochs=3, warmup_epochs=1, batch_size=8, ema_decay=0.5, augment="none", device="cpu")
    straight = _train(cfg)
    features, labels = _problem()
    dataset = CachedSamples({"hog": features}, np.arange(N), np.zeros(N, dtype=int), labels)
    loader = make_train_loader(dataset, labels, cfg)
    rt = make_runtime(cfg, [0.0] * 3, [1.0] * 3, (np.zeros(D), np.ones(D)), torch.device("cpu"))

    def engine():
        torch.manual_seed(0)
        model = torch.nn.Linear(D, C)
        return make_engine(model, model, cfg, rt, len(loader))

    saved = {}

    class Crash(Exception):
        pass

    def crash_after_first_epoch(engine, record):
        saved.update(copy.deepcopy(engine.state_dict()))  # what the checkpoint holds
        raise Crash

    with pytest.raises(Crash):
        fit(engine(), loader, create_loss("bce"), cfg, rt, ("hog",), on_epoch=crash_after_first_epoch)
    torch.manual_seed(123)  # global RNG disturbed between the runs, as in a new process
    resumed = engine()
    resumed.load_state_dict(saved)
    fit(resumed, loader, create_loss("bce"), cfg, rt, ("hog",))
    assert resumed.state.epoch == 3 and len(resumed.state.history) == 3
    assert torch.equal(resumed.model.weight, straight.model.weight)
    assert torch.equal(resumed.eval_model.weight, straight.eval_model.weight)
    assert [r["train_loss"] for r in resumed.state.history] == [r["train_loss"] for r in straight.state.history]


def test_seed_epoch_makes_each_epoch_independent_of_history():
    features, labels = _problem()
    dataset = CachedSamples({"hog": features}, np.arange(N), np.zeros(N, dtype=int), labels)
    loader = make_train_loader(dataset, labels, TrainConfig(batch_size=8))
    seed_epoch(loader, 7, 2)
    first = [b["target"].clone() for b in loader]
    torch.rand(10)
    seed_epoch(loader, 7, 2)
    again = [b["target"] for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
