"""`mlic export-onnx`: the ONNX graph (folds, normalisation, TTA, sigmoid) gives the pipeline's probabilities."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import tiny_options

from mlic.cli import main
from mlic.config import Config, HogConfig, ModelEntry, PrepareConfig, ProposalsConfig, TrainConfig
from mlic.features.hog import HogParams, hog_dim
from mlic.layout import average_test
from mlic.loop.fold_model import FoldModel
from mlic.loop.runtime import make_runtime
from mlic.models.registry import ModelDims, discover_archs, resolve_entry, resolve_model
from mlic.predict.export import export_onnx
from mlic.run import open_run
from mlic.sources import SOURCES

SIZE = 32
CLASSES = ["a", "b", "c", "d", "e"]


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def metadata(path: Path) -> dict[str, str]:
    return {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}


def signature(values) -> list[tuple[str, int, list]]:
    """(name, element type, shape with dynamic axes as None) of graph inputs or outputs."""
    return [
        (v.name, v.type.tensor_type.elem_type, [d.dim_value if d.HasField("dim_value") else None
                                                for d in v.type.tensor_type.shape.dim])
        for v in values
    ]  # fmt: skip


def export_cli(run: Path, out: Path, *args: str) -> int:
    return main(["export-onnx", "--run", str(run), "--out", str(out), *args])


@pytest.fixture(scope="module")
def run_outputs(finished_run):
    """The run's cached test images (plain resize, uint8 NHWC), classes and per-fold test probabilities."""
    run = open_run(finished_run)
    prep = run.prepared()
    return np.ascontiguousarray(prep.test_images[:, 0]), list(prep.classes), run.fold_predictions(), run.cfg


@pytest.mark.slow
def test_all_folds_export_matches_the_fold_average(finished_run, run_outputs, tmp_path):
    images, classes, per_fold, cfg = run_outputs
    out = tmp_path / "baseline.onnx"
    assert export_cli(finished_run, out, "--model", "baseline", "--fold", "all") == 0

    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert signature(model.graph.input) == [("image", onnx.TensorProto.UINT8, [None, SIZE, SIZE, 3])]
    assert signature(model.graph.output) == [("probs", onnx.TensorProto.FLOAT, [None, len(classes)])]
    meta = metadata(out)
    assert json.loads(meta["classes"]) == classes
    assert meta["image_size"] == str(SIZE) and meta["model"] == "baseline" and json.loads(meta["folds"]) == [0, 1]
    assert json.loads(meta["inputs"]) == ["image"] and meta["tta"] == cfg.train.tta
    assert json.loads(meta["mlic_config"])["prepare"]["image_size"] == SIZE

    expected = average_test(per_fold["baseline"])
    sess = session(out)
    probs = sess.run(["probs"], {"image": images})[0]
    assert probs.shape == expected.shape and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-4)
    one_by_one = np.concatenate([sess.run(["probs"], {"image": images[i : i + 1]})[0] for i in range(len(images))])
    np.testing.assert_allclose(one_by_one, probs, rtol=0, atol=1e-5)  # the batch axis is dynamic


@pytest.mark.slow
def test_single_fold_export_of_the_hourglass_matches_that_fold(finished_run, run_outputs, tmp_path):
    images, classes, per_fold, _ = run_outputs
    out = tmp_path / "hourglass_1.onnx"
    assert export_cli(finished_run, out, "--model", "hourglass", "--fold", "1") == 0
    assert json.loads(metadata(out)["folds"]) == [1] and metadata(out)["model"] == "hourglass"
    folds = {f.fold: f.test for f in per_fold["hourglass"]}
    probs = session(out).run(["probs"], {"image": images[:7]})[0]
    np.testing.assert_allclose(probs, folds[1][:7], rtol=0, atol=1e-4)
    assert np.abs(probs - folds[0][:7]).max() > 1e-3  # the other fold predicts differently: this is fold 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fold", "7"], "--fold '7' is not a trained fold"),
        (["--fold", "first"], "--fold 'first' is not a trained fold"),
        (["--model", "no_such_model"], "no entry 'no_such_model'"),
    ],
)
def test_bad_fold_or_model_is_a_user_error(finished_run, tmp_path, capsys, args, message):
    out = tmp_path / "model.onnx"
    assert export_cli(finished_run, out, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlic export-onnx: error:") and message in err
    if "--fold" in args:
        assert "[0, 1]" in err  # the trained folds to choose from
    assert not out.exists()


BOXES = 6  # proposals per image


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, BOXES, 5) float32 boxes inside a SIZE x SIZE image, different per image."""
    xy = rng.random((n, BOXES, 2)) * SIZE * 0.6
    wh = 2 + rng.random((n, BOXES, 2)) * (SIZE - 2 - xy)
    return np.concatenate([xy, wh, rng.random((n, BOXES, 1))], axis=-1).astype(np.float32)


def tiny_fold_models(arch: str, n_folds: int, tta: str = "flips") -> list[FoldModel]:
    """Randomly initialised folds of a tiny `arch`, with non-trivial image and HOG normalisation statistics."""
    cfg = Config(
        prepare=PrepareConfig(image_size=SIZE),
        hog=HogConfig(image_size=SIZE),
        proposals=ProposalsConfig(max_boxes=BOXES),
        models={"tiny": ModelEntry(arch, tiny_options(arch))},
        train=TrainConfig(models=("tiny",), folds=tuple(range(n_folds)), tta=tta),
    )
    resolved = resolve_model(cfg, "tiny")
    dim = hog_dim(SIZE, HogParams())
    rng = np.random.default_rng(1)
    all_stats = {
        "image": {"mean": torch.tensor([0.3, 0.4, 0.5]), "std": torch.tensor([0.2, 0.25, 0.3])},
        "hog": {"mean": torch.from_numpy(rng.random(dim, dtype=np.float32) * 0.1),
                "std": torch.from_numpy(0.05 + rng.random(dim, dtype=np.float32) * 0.1)},
    }  # fmt: skip
    task = resolved.task()
    stats = {name: all_stats.get(name, {}) for name in task.sources}  # boxes have no statistics
    runtime = make_runtime(cfg.train, stats, torch.device("cpu"))
    folds = []
    for fold in range(n_folds):
        torch.manual_seed(fold)
        net = resolved.build(ModelDims(len(CLASSES), {"image": 3, "hog": dim})).eval()
        if "max_steps" in net.state_dict():  # a sequence decoder: as if trained on sets of <= 2 labels (shorter unroll)
            net.load_state_dict(net.state_dict() | {"max_steps": torch.tensor(3)})
        folds.append(FoldModel("tiny", fold, net, task, runtime, stats, cfg, CLASSES))
    return folds


# The fast tier exports the HOG-only arch (a linear layer: 1 s once the exporter is loaded); the others' exports
# take 3-12 s each on two cores, so they run in the slow tier
FAST_EXPORTS = ("hog_linear",)
# TTA views in the graph are the exporter's, the same for every arch but for how each source follows the flips: an
# image arch, a boxes arch and the HOG arch export with flips (each view a copy of the net in the graph); the others
# without, 2-3x quicker (sca: 21 s against 7)
FLIPPED = ("baseline", "wsddn", "hog_linear")


def test_the_flipped_exports_read_every_source():
    """A new batch source gets its flips in the graph checked: some arch of FLIPPED reads it."""
    read = {
        source
        for arch in FLIPPED
        for source in resolve_entry(arch, ModelEntry(arch, tiny_options(arch))).task().sources
    }
    assert read == set(SOURCES.names())


@pytest.mark.parametrize(
    "arch", [a if a in FAST_EXPORTS else pytest.param(a, marks=pytest.mark.slow) for a in discover_archs()]
)
def test_every_architecture_exports_to_an_equivalent_onnx_graph(arch, tmp_path):
    tta = "flips" if arch in FLIPPED else "none"
    folds = tiny_fold_models(arch, n_folds=2, tta=tta)
    inputs = folds[0].sources
    if "image" in inputs:
        folds = folds[:1]  # two image nets double the export time
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    hog = (rng.random((5, hog_dim(SIZE, HogParams())), dtype=np.float32) * 0.3).astype(np.float32)
    boxes = random_boxes(rng, 5)
    feeds = {"image": images, "hog": hog, "boxes": boxes}
    # the pipeline's own prediction path: uint8 batches normalised by the runtime, TTA views, fold average
    arrays = {"image": images[:, None], "hog": hog[:, None], "boxes": boxes[:, None]}
    pipeline = np.mean([fm.predict(arrays, batch_size=4) for fm in folds], axis=0)

    out = tmp_path / f"{arch}.onnx"
    exported = export_onnx(folds, out)

    assert exported.inputs == inputs
    with torch.no_grad():
        torch_probs = exported(*(torch.from_numpy(feeds[name]) for name in inputs)).numpy()
    np.testing.assert_allclose(torch_probs, pipeline, rtol=0, atol=1e-5)
    sess = session(out)
    assert [i.name for i in sess.get_inputs()] == list(inputs)
    onnx_probs = sess.run(["probs"], {name: feeds[name] for name in inputs})[0]
    np.testing.assert_allclose(onnx_probs, torch_probs, rtol=0, atol=1e-4)
    single = sess.run(["probs"], {name: feeds[name][:1] for name in inputs})[0]
    np.testing.assert_allclose(single, torch_probs[:1], rtol=0, atol=1e-4)
    assert np.ptp(onnx_probs, axis=0).max() > 1e-4  # the rows differ: the inputs reach the output
    meta = metadata(out)
    assert json.loads(meta["inputs"]) == list(inputs) and json.loads(meta["classes"]) == CLASSES
    assert json.loads(meta["folds"]) == [fm.fold for fm in folds] and meta["tta"] == tta

    if "image" in inputs and tta != "none":  # the flips are in the graph: without them the pipeline predicts otherwise
        no_tta_cfg = replace(folds[0].cfg, train=replace(folds[0].cfg.train, tta="none"))
        no_tta = [replace(fm, cfg=no_tta_cfg) for fm in folds]
        plain = np.mean([fm.predict(arrays, batch_size=4) for fm in no_tta], axis=0)
        assert np.abs(plain - onnx_probs).max() > 1e-4
