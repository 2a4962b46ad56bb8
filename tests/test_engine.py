"""The training engine on a tiny linear problem: schedule, accumulation, clipping, EMA, early stopping, resume state,
and the stop at a non-finite loss."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from mlic.config import TrainConfig
from mlic.errors import MlicError
from mlic.loop.batches import CachedSamples
from mlic.loop.runtime import make_runtime
from mlic.models.registry import ArchConfig
from mlic.tasks.base import Phase, StepOutput, Task
from mlic.tasks.multilabel import MultiLabelTask
from mlic.train.augment import create_augmentation
from mlic.train.engine import Engine, fit, load_checkpoint, make_engine, save_checkpoint, seed_epoch, warmup_cosine
from mlic.train.sampling import make_train_loader

N, D, C = 32, 6, 3
STATS = {"hog": {"mean": torch.zeros(D), "std": torch.ones(D)}}


def _problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(N, 1, D)).astype(np.float32)
    labels = (features[:, 0, :C] > 0).astype(np.uint8)
    return features, labels


def _task(labels: np.ndarray) -> MultiLabelTask:
    task = MultiLabelTask(ArchConfig(), sources=("hog",))
    task.setup(labels)
    return task


def _train(cfg: TrainConfig, validate=None, model=None, phases=None, task=None) -> Engine:
    features, labels = _problem()
    dataset = CachedSamples({"hog": features}, np.arange(N), np.zeros(N, dtype=int), labels)
    loader = make_train_loader(dataset, labels, cfg)
    rt = make_runtime(cfg, STATS, torch.device("cpu"))
    torch.manual_seed(0)
    model = model or torch.nn.Linear(D, C)
    engine = make_engine(model, model, cfg, rt, len(loader), phases)
    fit(engine, loader, task or _task(labels), cfg, rt, validate)
    return engine


def _weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def test_warmup_then_cosine_down_to_the_floor():
    lrs = [warmup_cosine(s, 4, 20, 0.1) for s in range(21)]
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))  # non-increasing after warmup
    assert lrs[20] == pytest.approx(0.1) and lrs[12] == pytest.approx(0.1 + 0.9 * 0.5)


def test_accumulating_two_half_batches_equals_one_full_batch():
    base = {"epochs": 2, "warmup_epochs": 0, "optimizer": "sgd", "lr": 0.5, "device": "cpu"}
    torch.manual_seed(0)
    start = _weights(torch.nn.Linear(D, C))
    full = _train(TrainConfig(batch_size=16, **base)).model
    accumulated = _train(TrainConfig(batch_size=8, accumulate_steps=2, **base)).model
    assert not torch.allclose(_weights(full), start, atol=1e-3)  # both really trained
    for a, b in zip(full.parameters(), accumulated.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_gradient_clipping_bounds_the_first_update():
    cfg = TrainConfig(epochs=1, warmup_epochs=0, batch_size=N, optimizer="sgd", lr=1.0, weight_decay=0.0,
                      clip_grad_norm=1e-3, min_lr_ratio=1.0, device="cpu")  # fmt: skip
    torch.manual_seed(0)
    before = _weights(torch.nn.Linear(D, C))
    after = _weights(_train(cfg).model)
    # one SGD step at lr 1 from a gradient clipped to norm 1e-3 moves the weights by exactly that much
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-4)


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
    rt = make_runtime(cfg, STATS, torch.device("cpu"))

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
        fit(engine(), loader, _task(labels), cfg, rt, on_epoch=crash_after_first_epoch)
    torch.manual_seed(123)  # global RNG disturbed between the runs, as in a new process
    resumed = engine()
    resumed.load_state_dict(saved)
    fit(resumed, loader, _task(labels), cfg, rt)
    assert resumed.state.epoch == 3 and len(resumed.state.history) == 3
    assert torch.equal(resumed.model.weight, straight.model.weight)
    assert torch.equal(resumed.eval_model.weight, straight.eval_model.weight)
    assert [r["train_loss"] for r in resumed.state.history] == [r["train_loss"] for r in straight.state.history]


def test_seed_epoch_makes_each_epoch_independent_of_history():
    """The same epoch gives the same batches and augmentation whatever ran before; another epoch differs."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 1, 16, 16, 3), dtype=np.uint8)
    labels = _problem()[1]
    transform = create_augmentation("satellite", 16, seed=0)
    dataset = CachedSamples({"image": images}, np.arange(N), np.zeros(N, dtype=int), labels, transform)
    loader = make_train_loader(dataset, labels, TrainConfig(batch_size=8, sampler="stratified"))

    def epoch(number: int) -> list[torch.Tensor]:
        seed_epoch(loader, 7, number)
        return [b["image"].clone() for b in loader]

    first = epoch(2)
    torch.rand(10), np.random.rand(3), epoch(5)  # history: other draws and another epoch in between
    again = epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, epoch(3), strict=True))


class TwoPartTask(MultiLabelTask):
    """The default loss plus a weight penalty, as two logged parts; it records the phase of every step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.phase_of_step: list[str] = []

    def training_step(self, net, batch):
        self.phase_of_step.append(self.phase.name)
        main = super().training_step(net, batch).loss
        penalty = 0.01 * sum((p**2).sum() for p in net.parameters())
        return StepOutput(main + penalty, {"main": main.detach(), "penalty": penalty.detach()})


def test_phases_freeze_parameters_scale_the_lr_and_log_loss_parts():
    """Phase 1 trains the head only (body bit-identical, batch-norm statistics still); phase 2 trains everything."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, C))
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("2.")}
    phases = [Phase("head", 2, trainable=("2.",), lr_scale=0.5), Phase("all", 1)]
    seen = []

    def record(engine, _):
        seen.append(({k: v.clone() for k, v in engine.model.state_dict().items()},))

    cfg = TrainConfig(epochs=3, warmup_epochs=0, batch_size=8, min_lr_ratio=1.0, device="cpu")
    features, labels = _problem()
    dataset = CachedSamples({"hog": features}, np.arange(N), np.zeros(N, dtype=int), labels)
    loader = make_train_loader(dataset, labels, cfg)
    rt = make_runtime(cfg, STATS, torch.device("cpu"))
    engine = make_engine(model, model, cfg, rt, len(loader), phases)
    task = TwoPartTask(ArchConfig(), sources=("hog",))
    task.setup(labels)
    history = fit(engine, loader, task, cfg, rt, on_epoch=record)
    after_head = seen[1][0]
    assert all(torch.equal(after_head[k], v) for k, v in body.items())  # weights, biases and running stats
    assert not torch.equal(seen[0][0]["2.weight"], seen[1][0]["2.weight"])  # the head trained in phase 1
    assert not torch.equal(after_head["0.weight"], seen[2][0]["0.weight"])  # the body trains in phase 2
    assert not torch.equal(after_head["1.running_mean"], seen[2][0]["1.running_mean"])
    assert [r["lr"] for r in history] == pytest.approx([cfg.lr * 0.5, cfg.lr * 0.5, cfg.lr])  # each epoch's own LR
    for record_ in history:
        assert record_["train_loss"] == pytest.approx(record_["train_loss_main"] + record_["train_loss_penalty"])
    steps = len(loader)  # the task is told each epoch's phase before its first step (SRN's loss depends on it)
    assert task.phase_of_step == ["head"] * 2 * steps + ["all"] * steps

    resumed = make_engine(model, model, cfg, rt, len(loader), phases)
    resumed.state.epoch = 2  # a run resumed in the last phase: the task learns the phase anew
    task.phase, task.phase_of_step = None, []
    fit(resumed, loader, task, cfg, rt)
    assert task.phase_of_step == ["all"] * steps


def test_early_stopping_waits_for_the_last_phase():
    scores = iter([0.9, 0.1, 0.1, 0.1, 0.1])
    cfg = TrainConfig(epochs=5, warmup_epochs=0, batch_size=8, early_stopping_patience=1, device="cpu")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D, 4), torch.nn.Linear(4, C))
    phases = [Phase("head", 3, trainable=("1.",)), Phase("all", 2)]
    engine = _train(cfg, lambda m: (next(scores), {}), model=model, phases=phases)
    assert engine.state.epoch == 4  # not stopped during the head phase; stopped one epoch into the last one


class NanAtStep(Task):
    """A task whose loss turns NaN at one (epoch, step): as a diverging run would."""

    def __init__(self, labels: np.ndarray, epoch: int, step: int, per_epoch: int):
        super().__init__(ArchConfig())
        self.inner = _task(labels)
        self.sources, self.at, self.calls, self.per_epoch = ("hog",), (epoch, step), 0, per_epoch

    def training_step(self, net, batch) -> StepOutput:
        self.calls += 1
        out = self.inner.training_step(net, batch)
        epoch, step = divmod(self.calls - 1, self.per_epoch)
        if (epoch + 1, step + 1) == self.at:
            return StepOutput(out.loss * float("nan"), out.parts)
        return out


def test_a_non_finite_loss_stops_training_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    features, labels = _problem()
    # the losses are read every 2 steps: the NaN at step 3 is seen at the end of the epoch, and still named
    cfg = TrainConfig(epochs=3, batch_size=8, augment="none", device="cpu", log_every=2)
    loader = make_train_loader(CachedSamples({"hog": features}, np.arange(N), np.zeros(N, dtype=int), labels), labels,
                               cfg)  # fmt: skip
    rt = make_runtime(cfg, STATS, torch.device("cpu"))

    def engine():
        torch.manual_seed(0)
        model = torch.nn.Linear(D, C)
        return make_engine(model, model, cfg, rt, len(loader))

    task = NanAtStep(labels, epoch=2, step=3, per_epoch=len(loader))
    checkpoint = tmp_path / "last.pt"
    trained = engine()
    with pytest.raises(MlicError, match=r"training loss is not finite at epoch 2, step 3 of 4") as raised:
        fit(trained, loader, task, cfg, rt, on_epoch=lambda e, _: save_checkpoint(e, checkpoint, "run"))
    assert "keeps the last good epoch (1)" in str(raised.value) and "--resume" in str(raised.value)
    restored = engine()
    assert load_checkpoint(restored, checkpoint, "run") and restored.state.epoch == 1
    assert all(torch.isfinite(p).all() for p in restored.model.parameters())


def _lrs(engine: Engine, updates: int) -> list[float]:
    """The base group's learning rate at each of `updates` optimiser steps (the scheduler alone, no training)."""
    rates = []
    for _ in range(updates):
        rates.append(engine.optimizer.param_groups[0]["lr"])
        engine.optimizer.step()
        engine.scheduler.step()
    return rates


def test_restarting_phases_each_run_their_own_warmup_and_cosine():
    """SRN-style phases: the rate warms up and decays within each phase, peaking at lr times the phase's scale."""
    cfg = TrainConfig(epochs=6, warmup_epochs=1.5, lr=0.1, min_lr_ratio=0.0, device="cpu")
    rt = make_runtime(cfg, STATS, torch.device("cpu"))
    phases = [Phase("a", 2, restart=True), Phase("b", 2, restart=True), Phase("c", 2, lr_scale=0.1, restart=True)]
    model = torch.nn.Linear(D, C)
    rates = _lrs(make_engine(model, model, cfg, rt, 4, phases), 24)
    per_phase = [rates[0:8], rates[8:16], rates[16:24]]
    # each 2-epoch phase warms up over its share (1.5 * 2/6 epochs = 2 of its 8 steps), then decays toward 0
    for phase, scale in zip(per_phase, (1.0, 1.0, 0.1), strict=True):
        assert phase[:2] == pytest.approx([0.05 * scale, 0.1 * scale])
        assert max(phase) == pytest.approx(0.1 * scale)
        assert all(a >= b for a, b in zip(phase[1:], phase[2:], strict=False)) and phase[-1] < 0.1 * scale * 0.1
    # without restarts the same phases share one schedule, and the later phases run on its tail
    shared = [dataclasses.replace(p, restart=False) for p in phases]
    tail = _lrs(make_engine(model, model, cfg, rt, 4, shared), 24)[16:24]
    assert max(tail) < 0.5 * 0.1 * 0.1


def _crash_and_resume(cfg: TrainConfig, phases: list[Phase], crash_after: int) -> tuple[Engine, Engine]:
    """An uninterrupted run, and one stopped after epoch `crash_after` and resumed from its state."""
    straight = _train(cfg, phases=phases)
    features, labels = _problem()
    dataset = CachedSamples({"hog": features}, np.arange(N), np.zeros(N, dtype=int), labels)
    loader = make_train_loader(dataset, labels, cfg)
    rt = make_runtime(cfg, STATS, torch.device("cpu"))

    def engine() -> Engine:
        torch.manual_seed(0)
        model = torch.nn.Linear(D, C)
        return make_engine(model, model, cfg, rt, len(loader), phases)

    saved = {}

    class Crash(Exception):
        pass

    def crash(engine: Engine, record: dict) -> None:
        if engine.state.epoch == crash_after:
            saved.update(copy.deepcopy(engine.state_dict()))
            raise Crash

    with pytest.raises(Crash):
        fit(engine(), loader, _task(labels), cfg, rt, on_epoch=crash)
    torch.manual_seed(123)
    resumed = engine()
    resumed.load_state_dict(saved)
    fit(resumed, loader, _task(labels), cfg, rt)
    return straight, resumed


def test_resume_in_the_middle_of_a_restarted_phase_is_exact():
    cfg = TrainConfig(epochs=5, warmup_epochs=1, batch_size=8, augment="none", device="cpu")
    phases = [Phase("a", 2, restart=True), Phase("b", 3, lr_scale=0.5, restart=True)]
    straight, resumed = _crash_and_resume(cfg, phases, crash_after=3)  # one epoch into phase b's three
    assert torch.equal(resumed.model.weight, straight.model.weight)
    assert [r["lr"] for r in resumed.state.history] == [r["lr"] for r in straight.state.history]
    assert resumed.scheduler.get_last_lr() == straight.scheduler.get_last_lr()


class Headed(torch.nn.Module):
    """A 'backbone' and a 'head', named as the architectures name them."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(D, 4), torch.nn.BatchNorm1d(4))
        self.classifier = torch.nn.Linear(4, C)

    def forward(self, x):
        return self.classifier(self.backbone(x))


def test_head_parameters_train_at_the_arch_multiplier():
    """With head_lr_multiplier 10, one SGD step moves the head 10 times as far per unit of gradient as the backbone."""
    from mlic.models.backbones import BackboneConfig

    cfg = TrainConfig(epochs=2, warmup_epochs=0, lr=0.01, weight_decay=0.0, optimizer="sgd", device="cpu")
    rt = make_runtime(cfg, STATS, torch.device("cpu"))
    task = MultiLabelTask(BackboneConfig(head_lr_multiplier=10.0), sources=("hog",))
    torch.manual_seed(0)
    model = Headed()
    engine = make_engine(model, model, cfg, rt, 4, lr_multiplier=task.lr_multiplier)
    rates = {id(p): g["lr"] for g in engine.optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert rates[id(p)] == pytest.approx(0.01 if name.startswith("backbone.") else 0.1), name
    assert engine.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # the logged rate is the backbone's
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(8, D)).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    engine.optimizer.step()
    for name, p in model.named_parameters():  # SGD's first step: the move is lr * gradient exactly
        expected = (0.01 if name.startswith("backbone.") else 0.1) * grads[name]
        assert torch.allclose(before[name] - p.detach(), expected, atol=1e-7), name
    engine.scheduler.step()  # the schedule scales every group alike: the ratio stays 10
    head, base = engine.optimizer.param_groups[-1]["lr"], engine.optimizer.param_groups[0]["lr"]
    assert head == pytest.approx(10 * base)


def test_every_parameter_at_multiplier_one_keeps_timms_groups():
    """The default (no head multiplier): the same two weight-decay groups, in timm's order, as before groups existed."""
    from timm.optim import param_groups_weight_decay

    cfg = TrainConfig(epochs=2, weight_decay=0.05, device="cpu")
    rt = make_runtime(cfg, STATS, torch.device("cpu"))
    model = Headed()
    engine = make_engine(model, model, cfg, rt, 4, lr_multiplier=MultiLabelTask(ArchConfig()).lr_multiplier)
    expected = param_groups_weight_decay(model, cfg.weight_decay)
    got = engine.optimizer.param_groups
    assert [[id(p) for p in g["params"]] for g in got] == [[id(p) for p in g["params"]] for g in expected]
    assert [g["weight_decay"] for g in got] == [g["weight_decay"] for g in expected]
