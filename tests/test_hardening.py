"""Bad predictions, a diverging loss and a booby-trapped checkpoint each stop with one message, and nothing runs.

Issue 13, gaps 1 and 3: every stage that reads predictions refuses NaN or values outside [0, 1] (naming the file,
the model, the fold and the first bad rows); training stops at a non-finite loss and keeps the last good
checkpoint; checkpoints load with `weights_only=True`, so a pickled object in one is refused and never runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mlic import layout
from mlic.cli import main as mlic_main
from mlic.config import TrainConfig
from mlic.errors import MlicError
from mlic.models.registry import ArchConfig
from mlic.tasks.base import StepOutput, Task
from mlic.tasks.multilabel import MultiLabelTask
from mlic.train.batches import CachedSamples
from mlic.train.engine import fit, load_checkpoint, make_engine, save_checkpoint
from mlic.train.runtime import make_runtime
from mlic.train.sampling import make_train_loader


@pytest.fixture
def project(finished_run, tmp_path, monkeypatch) -> Path:
    """A private copy of the finished tiny run (outputs only, no git or DVC cache), as the working directory."""
    copy = Path(shutil.copytree(finished_run, tmp_path / "run", ignore=shutil.ignore_patterns(".git", ".dvc", "src")))
    monkeypatch.chdir(copy)
    return copy


def _corrupt_npy(path: Path, cells: list[tuple[int, int | slice]], value: float) -> None:
    probs = np.load(path)
    for row, col in cells:
        probs[row, col] = value
    np.save(path, probs)


def _corrupt_npz(path: Path, cells: list[tuple[int, int | slice]], value: float) -> None:
    with np.load(path) as saved:
        arrays = dict(saved)
    for row, col in cells:
        arrays["probs"][row, col] = value
    np.savez(path, **arrays)


ENSEMBLE_TEST = "data/processed/ensemble/test.npy"
ENSEMBLE_OOF = "data/processed/ensemble/oof.npz"
FOLD_TEST = "data/processed/train/hourglass/fold_1/test.npy"
FOLD_OOF = "data/processed/train/baseline/fold_0/oof.npz"

CASES = {  # stage, file, cells, value, the words the message must hold
    "submit-nan-cell": ("submit", ENSEMBLE_TEST, [(3, 2)], np.nan, ["model ensemble", "row 3 (class 2 = nan)"]),
    "submit-nan-row": ("submit", ENSEMBLE_TEST, [(0, slice(None))], np.nan, ["model ensemble", "row 0"]),
    "submit-above-one": ("submit", ENSEMBLE_TEST, [(5, 1)], 1.7, ["row 5 (class 1 = 1.7)"]),
    "submit-negative": ("submit", ENSEMBLE_TEST, [(7, 0)], -0.2, ["row 7 (class 0 = -0.2)"]),
    "thresholds-oof": ("thresholds", ENSEMBLE_OOF, [(4, 0)], np.inf, ["out-of-fold", "(fold "]),
    "evaluate-oof": ("evaluate", ENSEMBLE_OOF, [(2, 3)], np.nan, ["model ensemble, out-of-fold"]),
    "ensemble-fold-test": ("ensemble", FOLD_TEST, [(1, 0)], np.nan, ["model hourglass, fold 1, test", "row 1"]),
    "ensemble-fold-oof": ("ensemble", FOLD_OOF, [(0, 1)], 2.5, ["model baseline, fold 0, out-of-fold"]),
}
OUTPUT_OF = {
    "submit": "submissions/submission.csv",
    "thresholds": "data/processed/thresholds.json",
    "evaluate": "reports/metrics.json",
    "ensemble": ENSEMBLE_TEST,
}


@pytest.mark.parametrize("case", CASES)
def test_bad_predictions_stop_the_stage_naming_file_model_fold_and_rows(project, case, capsys):
    stage, file, cells, value, words = CASES[case]
    (_corrupt_npz if file.endswith(".npz") else _corrupt_npy)(project / file, cells, value)
    output = project / OUTPUT_OF[stage]
    before = output.read_bytes()
    assert mlic_main([stage]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mlic {stage}: error: {file}: ") and "Traceback" not in err
    assert "NaN, infinite or out-of-[0, 1] predictions" in err and "fix:" in err
    for word in words:
        assert word in err
    assert output.read_bytes() == before  # nothing rewritten


def test_predict_refuses_a_fold_that_outputs_nan_naming_model_fold_and_image(finished_run, tmp_path, monkeypatch,
                                                                             capsys):  # fmt: skip
    from mlic.predict import inference

    original = inference.FoldModel.predict

    def nan_in_second_row(self, arrays, batch_size):
        probs = original(self, arrays, batch_size)
        if self.model == "hourglass" and self.fold == 1:
            probs[1, 0] = np.nan
        return probs

    monkeypatch.setattr(inference.FoldModel, "predict", nan_in_second_row)
    images = sorted((finished_run / "data/raw/sample/test-jpg").glob("*.jpg"))[:3]
    out = tmp_path / "predictions.csv"
    args = ["predict", *map(str, images), "--run", str(finished_run), "--out", str(out)]
    assert mlic_main(args) == 2
    err = capsys.readouterr().err
    assert "model hourglass, fold 1" in err and f"{images[1]} (class 0 = nan)" in err
    assert not out.exists()


class NanAtStep(Task):
    """A task whose loss turns NaN at one (epoch, step): as a diverging run would."""

    def __init__(self, labels: np.ndarray, epoch: int, step: int):
        super().__init__(ArchConfig())
        self.inner = MultiLabelTask(ArchConfig(), sources=("hog",))
        self.inner.setup(labels)
        self.sources, self.at, self.calls, self.per_epoch = ("hog",), (epoch, step), 0, 0

    def training_step(self, net, batch) -> StepOutput:
        self.calls += 1
        out = self.inner.training_step(net, batch)
        epoch, step = divmod(self.calls - 1, self.per_epoch)
        if (epoch + 1, step + 1) == self.at:
            return StepOutput(out.loss * float("nan"), out.parts)
        return out


def test_a_non_finite_loss_stops_training_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    n, d, c = 32, 6, 3
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, 1, d)).astype(np.float32)
    labels = (features[:, 0, :c] > 0).astype(np.uint8)
    cfg = TrainConfig(epochs=3, batch_size=8, augment="none", device="cpu")
    loader = make_train_loader(CachedSamples({"hog": features}, np.arange(n), np.zeros(n, dtype=int), labels), labels,
                               cfg)  # fmt: skip
    rt = make_runtime(cfg, {"hog": {"mean": torch.zeros(d), "std": torch.ones(d)}}, torch.device("cpu"))

    def engine():
        torch.manual_seed(0)
        model = torch.nn.Linear(d, c)
        return make_engine(model, model, cfg, rt, len(loader))

    task = NanAtStep(labels, epoch=2, step=3)
    task.per_epoch = len(loader)
    checkpoint = tmp_path / "last.pt"
    trained = engine()
    with pytest.raises(MlicError, match=r"training loss is nan at epoch 2, step 3 of 4") as raised:
        fit(trained, loader, task, cfg, rt, on_epoch=lambda e, _: save_checkpoint(e, checkpoint, "run"))
    assert "keeps the last good epoch (1)" in str(raised.value) and "--resume" in str(raised.value)
    restored = engine()
    assert load_checkpoint(restored, checkpoint, "run") and restored.state.epoch == 1
    assert all(torch.isfinite(p).all() for p in restored.model.parameters())


class Payload:
    """Pickles as a call to `Path.touch`: unpickling it creates a marker file, i.e. runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_checkpoint_carrying_a_pickled_object_is_refused_and_nothing_in_it_runs(tmp_path, finished_run, capsys):
    marker = tmp_path / "pwned"
    fold_dir = tmp_path / "fold_0"
    fold_dir.mkdir()
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": Payload(marker)}, fold_dir / layout.CHECKPOINT)
    with pytest.raises(MlicError, match="refused to load: the file holds objects other than tensors") as raised:
        layout.load_checkpoint(fold_dir)
    assert str(fold_dir / layout.CHECKPOINT) in str(raised.value) and "fix: delete the fold folder" in str(raised.value)

    resume = tmp_path / layout.RESUME_FILE  # the per-epoch resume state goes through the same door
    torch.save({"fingerprint": "run", "train_state": Payload(marker)}, resume)
    with pytest.raises(MlicError, match="refused to load"):
        load_checkpoint(None, resume, "run")
    assert not marker.exists()

    # and a tampered fold in a finished run stops `mlic predict` with one message
    run = Path(shutil.copytree(finished_run, tmp_path / "run", ignore=shutil.ignore_patterns(".git", ".dvc", "src")))
    torch.save({"extra": Payload(marker)}, run / "data/processed/train/baseline/fold_0" / layout.CHECKPOINT)
    image = next((run / "data/raw/sample/test-jpg").glob("*.jpg"))
    assert mlic_main(["predict", str(image), "--run", str(run), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "Traceback" not in err and not marker.exists()
