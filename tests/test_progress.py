"""Progress off a terminal: one clean line per training epoch, no carriage returns, `MLIC_PROGRESS` overrides."""

import io
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mlic.config import TrainConfig
from mlic.layout import Prepared
from mlic.loop.batches import CachedSamples
from mlic.loop.runtime import make_runtime
from mlic.models.registry import ArchConfig
from mlic.progress import ENV_VAR, LineProgress, progress_mode, track
from mlic.tasks.base import Phase
from mlic.tasks.multilabel import MultiLabelTask
from mlic.train.engine import fit, make_engine
from mlic.train.fold import FoldData, epoch_callback, epoch_line, make_validate, start_live
from mlic.train.sampling import make_train_loader

N, D, C, EPOCHS = 32, 6, 3, 3
STATS = {"hog": {"mean": torch.zeros(D), "std": torch.ones(D)}}
# The whole epoch line: number/total and phase, loss, lr, validation F2 and mAP, seconds
EPOCH_LINE = re.compile(
    rf"epoch (\d)/{EPOCHS} (head|all) loss \d+\.\d{{4}} lr \d\.\d\de-\d\d val_f2 [01]\.\d{{4}} val_map [01]\.\d{{4}} "
    r"\d+\.\d s"
)


class FakeStream(io.StringIO):
    """A text stream that says whether it is a terminal."""

    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _train_like_a_fold(tmp_path) -> list[dict[str, float]]:
    """A tiny two-phase run through the fold's own validation and epoch callback (DVCLive, checkpoint, line)."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(N, 1, D)).astype(np.float32)
    labels = (features[:, 0, :C] > 0).astype(np.uint8)
    cfg = TrainConfig(epochs=EPOCHS, warmup_epochs=0, batch_size=8, device="cpu")
    dataset = CachedSamples({"hog": features}, np.arange(N), np.zeros(N, dtype=int), labels)
    loader, val = make_train_loader(dataset, labels, cfg), DataLoader(dataset, cfg.batch_size)
    rt = make_runtime(cfg, STATS, torch.device("cpu"))
    task = MultiLabelTask(ArchConfig(), sources=("hog",))
    task.setup(labels)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D, 4), torch.nn.Linear(4, C))
    engine = make_engine(model, model, cfg, rt, len(loader), [Phase("head", 1, trainable=("1.",)), Phase("all", 2)])
    prep = Prepared([str(c) for c in range(C)], [], labels, np.zeros((N, 1, 1, 1, 3), np.uint8), [], None, [], [])
    data = FoldData(prep, {}, np.arange(N), np.arange(N))
    validate = make_validate(SimpleNamespace(thresholds=SimpleNamespace(beta=2.0)), data, val, rt, task)
    on_epoch = epoch_callback(start_live(tmp_path / "live", []), tmp_path / "last.pt", "run", cfg.epochs)
    return fit(engine, loader, task, cfg, rt, validate, on_epoch)


def test_training_off_a_terminal_prints_one_clean_line_per_epoch(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    history = _train_like_a_fold(tmp_path)
    out, err = capfd.readouterr()
    assert "\r" not in out + err
    lines = out.splitlines()
    assert [EPOCH_LINE.fullmatch(line).groups() for line in lines] == [("1", "head"), ("2", "all"), ("3", "all")]
    assert err == ""  # no bar, and no progress line of training or validation
    # the seconds are printed only: the record (DVCLive, checkpoint, tracked outputs) holds no wall-clock figure
    assert all(set(record) == {"epoch", "train_loss", "lr", "val_f2", "val_threshold", "val_map"} for record in history)


def test_training_on_a_terminal_keeps_the_bar_and_prints_the_epoch_lines(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "bar")  # what a terminal gets
    _train_like_a_fold(tmp_path)
    out, err = capfd.readouterr()
    assert "\r" in err and "epoch 1/3 head" in err  # tqdm's bar, on stderr
    assert [EPOCH_LINE.fullmatch(line).group(1) for line in out.splitlines()] == ["1", "2", "3"]


def test_epoch_line_names_the_phase_and_the_loss_parts():
    record = {"epoch": 3, "train_loss": 0.23456, "train_loss_main": 0.2, "train_loss_sr": 0.03456, "lr": 0.0012,
              "val_f2": 0.81234, "val_threshold": 0.25, "val_map": 0.50123}  # fmt: skip
    assert epoch_line(record, 10, 12.34, "attention") == (
        "epoch 3/10 attention loss 0.2346 (main 0.2000 sr 0.0346) lr 1.20e-03 val_f2 0.8123 val_map 0.5012 12.3 s"
    )
    assert epoch_line({"epoch": 1, "train_loss": 1.0, "lr": 0.1}, 2, 0.04) == "epoch 1/2 loss 1.0000 lr 1.00e-01 0.0 s"


def test_policy_is_a_bar_on_a_terminal_only_and_the_environment_overrides(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    terminal, log = FakeStream(tty=True), FakeStream(tty=False)
    assert progress_mode(terminal) == "bar" and progress_mode(log) == "lines"
    monkeypatch.setattr(sys, "stderr", terminal)  # the default stream is tqdm's, stderr
    assert progress_mode() == "bar"
    bar = track(range(3), "x", stream=terminal)
    assert isinstance(bar, tqdm) and not bar.disable
    assert isinstance(track(range(3), "x", stream=log), LineProgress)
    assert track(range(3), "x", stream=log, interval=None).disable  # the caller logs its own summary
    assert track(range(3), "x", stream=terminal, disable=True).disable  # a small job shows nothing
    monkeypatch.setenv(ENV_VAR, "lines")
    assert progress_mode(terminal) == "lines"
    monkeypatch.setenv(ENV_VAR, "bar")
    assert progress_mode(log) == "bar"
    monkeypatch.setenv(ENV_VAR, "off")
    assert progress_mode(terminal) == "off" and track(range(3), stream=terminal).disable
    monkeypatch.setenv(ENV_VAR, "fancy")
    with pytest.warns(UserWarning, match=ENV_VAR):
        assert progress_mode(log) == "lines"


def test_lines_mode_prints_at_most_one_line_per_interval_and_a_final_line():
    now, stream = [0.0], FakeStream(tty=False)
    with LineProgress(None, "decode train", 200, unit="img", interval=10.0, stream=stream, clock=lambda: now[0]) as bar:
        for _ in range(50):  # 4 images every 2 s for 100 s, a line due every 10 s
            now[0] += 2.0
            bar.update(4)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 10 + 1
    assert lines[0] == "decode train: 20/200 (10%) 2.00 img/s"
    assert lines[-1] == "decode train: 200/200 (100%) 2.00 img/s in 100.0 s"


def test_lines_mode_over_an_iterable_without_length_and_a_transient_bar(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    stream = FakeStream(tty=False)
    assert list(track((i for i in range(3)), "scan", unit="img", interval=0.0, stream=stream)) == [0, 1, 2]
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1", "2", "3", "3"]  # one per item (interval 0), then the final
    assert " in " in lines[-1] and lines[-1].endswith(" s")
    quiet = FakeStream(tty=False)
    assert list(track(range(3), "predict", leave=False, stream=quiet)) == [0, 1, 2]
    assert quiet.getvalue() == ""  # a quick transient job leaves no line in the log
