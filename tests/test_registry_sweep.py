"""Every registry entry gets exercised: a tiny forward and backward pass for models, a call for the rest."""

import dataclasses
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import arch_model, tiny_options

from mlic.config import DataConfig, ModelEntry, ThresholdsConfig, TrainConfig, config_from_dict
from mlic.data.competitions import COMPETITIONS
from mlic.data.submission import read_submission
from mlic.errors import ConfigError
from mlic.loop.runtime import make_runtime
from mlic.loop.tta import TTA_VIEWS, tta_views
from mlic.models.kd_wsd import student_archs
from mlic.models.registry import discover_archs, get_arch, resolve_entry
from mlic.predict.threshold_fitting import THRESHOLD_METHODS, fit_thresholds
from mlic.sources import SOURCES, SourceData
from mlic.tasks.losses import LOSSES, create_loss
from mlic.train.augment import AUGMENTATIONS, create_augmentation
from mlic.train.engine import OPTIMIZERS, make_engine, run_epoch
from mlic.train.sampling import SAMPLERS, make_train_loader

NUM_CLASSES = 5
HOG_DIM = 12
# boxes: the whole image, two halves and two small squares per image, scored from object-like to background
SWEEP_BOXES = torch.tensor([[0, 0, 32, 32, 0.9], [0, 0, 16, 32, 0.6], [16, 0, 16, 32, 0.3], [4, 4, 8, 8, 0.1],
                            [20, 20, 8, 8, 0.05]], dtype=torch.float32)  # fmt: skip
BATCH = {"image": torch.randn(4, 3, 32, 32), "hog": torch.randn(4, HOG_DIM), "boxes": SWEEP_BOXES.repeat(4, 1, 1)}
TARGET = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.float32)


@pytest.mark.parametrize("loss", LOSSES.names())
@pytest.mark.parametrize("name", discover_archs())
def test_every_architecture_trains_with_every_loss(name, loss):
    """Arch x loss on CPU through its task: one training step with finite loss and gradients, then (N, C) scores."""
    model, task = arch_model(name, NUM_CLASSES, {"image": 3, "hog": HOG_DIM}, **tiny_options(name) | {"loss": loss})
    assert set(task.sources) <= set(SOURCES.names())
    task.setup(TARGET.numpy())
    batch = {**{k: BATCH[k] for k in task.sources}, "target": TARGET}
    if hasattr(task, "attach_teacher"):  # a distilled student: a random teacher stands in for stage `teacher`'s
        teacher, _ = arch_model(task.cfg.teacher.arch, NUM_CLASSES, **task.cfg.teacher.options)
        task.attach_teacher(teacher)
        task.begin_phase(task.phases(2)[0])  # feature transfer, the adapter's only loss, adds its gradients
        task.training_step(model.train(), batch).loss.backward()
        task.phase = None
    step = task.training_step(model.train(), batch)
    assert step.loss.ndim == 0 and torch.isfinite(step.loss)
    assert all(torch.isfinite(v) for v in step.parts.values())
    step.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        scores = task.predict_step(model.eval(), {k: BATCH[k] for k in task.predict_sources})
    assert scores.shape == (4, NUM_CLASSES) and ((scores >= 0) & (scores <= 1)).all()


def dilating_archs() -> list[str]:
    """The architectures whose config has `output_stride` (a timm CNN of their own)."""
    return [n for n in discover_archs() if "output_stride" in {f.name for f in dataclasses.fields(get_arch(n).config)}]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", dilating_archs())
def test_every_backbone_arch_dilates_to_output_stride_8(name):
    """The spatial budget: at output_stride 8 a 32 px image gives a 4 x 4 last map (1 x 1 undilated), and trains."""
    from mlic.models.backbones import create_backbone, feature_map

    options = tiny_options(name) | {"output_stride": 8}
    if name == "srn":
        options["sr_map_size"] = 4  # X, the map before the last, is dilated too
    config = resolve_entry(name, ModelEntry(name, options)).config
    backbone = create_backbone(config, out_indices=(-1,)) if hasattr(config, "backbone") else None
    if backbone is not None:
        assert feature_map(backbone, BATCH["image"][:1]).shape[-1] == 4
    model, task = arch_model(name, NUM_CLASSES, {"image": 3, "hog": HOG_DIM}, **options)
    task.setup(TARGET.numpy())
    if hasattr(task, "attach_teacher"):
        teacher, _ = arch_model(task.cfg.teacher.arch, NUM_CLASSES, **task.cfg.teacher.options)
        task.attach_teacher(teacher)
    step = task.training_step(model.train(), {**{k: BATCH[k] for k in task.sources}, "target": TARGET})
    step.loss.backward()
    assert torch.isfinite(step.loss)


def test_a_backbone_without_output_stride_is_a_config_error():
    with pytest.raises(ConfigError, match="output_stride"):
        arch_model("baseline", NUM_CLASSES, backbone="vit_tiny_patch16_224", output_stride=8)


def kd_wsd_with(student: str) -> tuple[torch.nn.Module, object]:
    """A tiny kd_wsd whose student is a tiny `student` (its own tiny settings), and its task, set up with a teacher."""
    options = tiny_options("kd_wsd") | {"student": {"arch": student, **tiny_options(student)}}
    model, task = arch_model("kd_wsd", NUM_CLASSES, {"image": 3, "hog": HOG_DIM}, **options)
    teacher, _ = arch_model("wsddn", NUM_CLASSES, **{k: v for k, v in options["teacher"].items() if k != "arch"})
    task.attach_teacher(teacher)
    task.setup(TARGET.numpy())
    return model, task


@pytest.mark.usefixtures("one_thread")  # small ops: see conftest.one_torch_thread
@pytest.mark.parametrize("student", student_archs())
def test_kd_wsd_trains_with_every_image_classifier_as_its_student(student):
    """Each registered arch a student may have: a step of both phases, whose trained parameters all get gradients."""
    model, task = kd_wsd_with(student)
    batch = {**{k: BATCH[k] for k in task.sources}, "target": TARGET}
    features, predictions = task.phases(2)
    for phase, trained in ((features, ("student.backbone.", "adapter.")), (predictions, ("student.", "scale"))):
        task.begin_phase(phase)
        model.zero_grad(set_to_none=True)
        step = task.training_step(model.train(), batch)
        assert step.loss.ndim == 0 and torch.isfinite(step.loss)
        assert set(step.parts) == {"features"} if phase is features else "distill" in step.parts
        step.loss.backward()
        grads = {name: p.grad for name, p in model.named_parameters() if name.startswith(trained)}
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values()), phase.name
    with torch.no_grad():
        scores = task.predict_step(model.eval(), {"image": BATCH["image"]})
    assert scores.shape == (4, NUM_CLASSES) and ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize("arch", sorted(set(discover_archs()) - set(student_archs())))
def test_kd_wsd_refuses_every_other_arch_as_its_student(arch):
    with pytest.raises(ConfigError, match=rf"(?s)models.<entry>.student.arch: arch '{arch}'.*use one of: baseline, "):
        kd_wsd_with(arch)


@pytest.mark.parametrize("name", discover_archs())
def test_every_architecture_declares_tiny_settings_its_config_accepts(name):
    """The sweeps (here, the ONNX export's, the heads' tests) read them: `register_arch(..., tiny={...})`."""
    spec = get_arch(name)
    assert spec.tiny, f"{name}: declare its tiny settings, register_arch(..., tiny={{...}}), in mlic/models/{name}.py"
    resolved = resolve_entry(name, ModelEntry(name, tiny_options(name)))  # a key the arch lacks is a ConfigError
    for entry in (resolved.config, *(resolve_entry(e.arch, e).config for e in resolved.config.nested_entries())):
        assert getattr(entry, "backbone", "resnet10t") == "resnet10t"  # the smallest timm ResNet: seconds on a CPU


def test_hog_models_say_when_hog_is_missing():
    with pytest.raises(ConfigError, match="needs hog features"):
        arch_model("hog_linear", NUM_CLASSES)


@pytest.mark.slow  # a fresh interpreter that imports torch: 2 s
def test_architectures_are_found_by_name_without_importing_the_others():
    """`get_arch` imports only the module of the arch asked for (the exact DVC deps of a train stage rely on it)."""
    import subprocess
    import sys

    code = ("import sys; from mlic.models.registry import get_arch; get_arch('hog_linear'); "
            "print(sorted(m for m in sys.modules if m.startswith('mlic.models.')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['mlic.models.hog_linear', 'mlic.models.registry']"
    assert get_arch("baseline").name == "baseline"


@pytest.mark.parametrize("name", SOURCES.names())
def test_every_source_serves_normalises_and_recomputes_its_items(name, tmp_path):
    """Each batch source: one served item, its normaliser on a batch, and its arrays recomputed from image views."""
    source = SOURCES.get(name)
    views = np.random.default_rng(0).integers(0, 256, (2, 1, 32, 32, 3), dtype=np.uint8)
    cfg = config_from_dict({"prepare": {"image_size": 32}, "hog": {"image_size": 32}})
    arrays = source.from_views(views, cfg)
    assert arrays.shape[:2] == (2, 1)
    item = source.sample(arrays[0, 0], None)
    data = SourceData(arrays, arrays, {"mean": np.zeros(arrays.shape[-1]), "std": np.ones(arrays.shape[-1])})
    stats = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in data.stats.items()}
    if name == "image":
        stats = {"mean": torch.full((3,), 0.5), "std": torch.full((3,), 0.25)}
        assert item.shape == (3, 32, 32) and item.dtype == torch.uint8
    normalised = source.normaliser(stats)(torch.stack([item, item]))
    assert normalised.dtype == torch.float32 and torch.isfinite(normalised).all()
    example = source.to_batch(source.example(2, cfg, stats))
    assert example.shape[1:] == item.shape


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

    def augmented(seed: int) -> np.ndarray:
        transform = create_augmentation(name, image_size=32, seed=seed)
        return image if transform is None else transform(image=image)["image"]

    out = augmented(3)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, augmented(3))  # seeded
    if name != "none":  # a preset that changes nothing, or ignores its seed, fails here
        outputs = [augmented(seed) for seed in range(3, 9)]
        assert any(not np.array_equal(o, image) for o in outputs)
        assert any(not np.array_equal(o, out) for o in outputs[1:])


@pytest.mark.parametrize("name", TTA_VIEWS.names())
def test_every_tta_preset_gives_distinct_same_shape_views(name):
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    views = [view(x) for view in tta_views(name)]
    assert all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x)
    assert len({tuple(v.flatten().tolist()) for v in views}) == len(views)


@pytest.mark.parametrize("name", THRESHOLD_METHODS.names())
def test_every_threshold_method_returns_a_threshold_per_class(name, sqlite_dir):
    rng = np.random.default_rng(0)
    labels = (rng.random((60, NUM_CLASSES)) < 0.3).astype(np.uint8)
    probs = np.clip(labels * 0.6 + rng.random(labels.shape) * 0.4, 0, 1)
    cfg = ThresholdsConfig(method=name, grid_step=0.05, optuna_trials=5, optuna_storage=str(sqlite_dir / "o.db"))
    thresholds = fit_thresholds(probs, labels, cfg)
    assert thresholds.shape == (NUM_CLASSES,) and ((thresholds > 0) & (thresholds < 1)).all()


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_steps(name):
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = OPTIMIZERS.get(name)([param], lr=0.1, weight_decay=0.0)
    param.sum().backward()
    optimizer.step()
    assert (param < 1).all()


@pytest.mark.parametrize("name", COMPETITIONS.names())
def test_every_competition_writes_a_submission_it_reads_back(name, tmp_path):
    comp = COMPETITIONS.get(name)(DataConfig(competition=name))
    assert comp.name == name
    ids, tags = ["b_2", "a_1", "c_3"], [["x", "y"], ["z"], []]
    path = tmp_path / "submission.csv"
    comp.write_submission(path, ids, tags)
    frame = read_submission(path, comp.submission)
    assert list(frame.columns) == [comp.submission.id_column, comp.submission.label_column]
    assert list(frame[comp.submission.id_column]) == ids  # row order kept
    assert [sorted(t.split()) for t in frame[comp.submission.label_column]] == [["x", "y"], ["z"], []]
    assert pd.read_csv(path, dtype=str).shape == (3, 2)


def test_unknown_names_list_the_choices():
    with pytest.raises(ConfigError) as info:
        get_arch("baselin")
    assert "Did you mean 'baseline'?" in str(info.value) and "models.<entry>.arch" in str(info.value)
    with pytest.raises(ConfigError, match="unknown timm backbone"):
        arch_model("baseline", NUM_CLASSES, backbone="resnet_does_not_exist")


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


# What makes the host wait for the device when called on a CUDA tensor
HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextmanager
def counting_host_reads() -> Iterator[list[str]]:
    """Count calls of `HOST_READS` on tensors inside the block, each as `name file:line` of its caller.

    torch.optim's own reads are left out: they read step counters that live on the host.
    """
    calls: list[str] = []
    saved = {name: torch.Tensor.__dict__.get(name) for name in HOST_READS}

    def counted(name: str, method):
        def wrapper(self, *args, **kwargs):
            caller = sys._getframe(1)
            if f"torch{os.sep}optim" not in caller.f_code.co_filename:
                calls.append(f"{name} {caller.f_code.co_filename}:{caller.f_lineno}")
            return method(self, *args, **kwargs)

        return wrapper

    for name in HOST_READS:
        setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    try:
        yield calls
    finally:
        for name, method in saved.items():
            if method is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)


def host_reads_of_an_epoch(name: str, steps: int) -> list[str]:
    """The host reads of one training epoch of `steps` batches of the tiny `name` (losses read at the end only)."""
    model, task = arch_model(name, NUM_CLASSES, {"image": 3, "hog": HOG_DIM}, **tiny_options(name))
    if hasattr(task, "attach_teacher"):
        teacher, _ = arch_model(task.cfg.teacher.arch, NUM_CLASSES, **task.cfg.teacher.options)
        task.attach_teacher(teacher)
    task.setup(TARGET.numpy())
    cfg = TrainConfig(epochs=10, warmup_epochs=0, batch_size=4, device="cpu", log_every=0)  # SRN: its 4 phases
    stats = {"image": {"mean": torch.full((3,), 0.5), "std": torch.full((3,), 0.25)},
             "hog": {"mean": torch.zeros(HOG_DIM), "std": torch.ones(HOG_DIM)},
             "boxes": {"mean": torch.zeros(5), "std": torch.ones(5)}}  # fmt: skip
    rt = make_runtime(cfg, {k: stats[k] for k in task.sources})
    image = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    batch = {**{k: BATCH[k] for k in task.sources if k != "image"}, "target": TARGET}
    loader = [batch | ({"image": image} if "image" in task.sources else {})] * steps
    engine = make_engine(model, model, cfg, rt, steps, task.phases(cfg.epochs), task.lr_multiplier)
    with counting_host_reads() as calls:
        run_epoch(engine, loader, task, cfg, rt)
    return calls


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", discover_archs())
def test_every_architecture_trains_without_a_host_read_per_step(name):
    """No `.item()`, `.cpu()` or the like per training step: on a GPU each would drain the queue (issue 27).

    An epoch of 4 steps reads the device as often as one of 2: the losses once at its end, nothing per step.
    """
    short, long = host_reads_of_an_epoch(name, 2), host_reads_of_an_epoch(name, 4)
    assert len(long) == len(short) <= 2, "\n".join(long)
