"""Checkpoints load with `weights_only=True`: a pickled object in one is refused, and nothing in it ever runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from finished_run import copy_run

from mlic import layout
from mlic.errors import MlicError
from mlic.train.engine import load_checkpoint


class Payload:
    """Pickles as a call to `Path.touch`: unpickling it creates a marker file, i.e. runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_checkpoint_carrying_a_pickled_object_is_refused_and_nothing_in_it_runs(tmp_path):
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


@pytest.mark.slow
def test_a_tampered_fold_stops_mlic_predict_with_one_message(finished_run, tmp_path, capsys):
    from mlic.cli import main as mlic_main

    marker = tmp_path / "pwned"
    run = copy_run(finished_run, tmp_path / "run", outputs_only=True)
    torch.save({"extra": Payload(marker)}, run / "data/processed/train/baseline/fold_0" / layout.CHECKPOINT)
    image = next((run / "data/raw/sample/test-jpg").glob("*.jpg"))
    assert mlic_main(["predict", str(image), "--run", str(run), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "Traceback" not in err and not marker.exists()
