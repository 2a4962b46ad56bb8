import numpy as np
import pytest

from mlic.folds import assign_folds, fold_label_counts
from mlic.io import atomic_path, write_json


def test_atomic_file_is_not_left_behind_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"b": 1, "a": 2})
    assert target.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert target.stat().st_mode & 0o044  # readable by others, like any normal file


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "dir"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(KeyError), atomic_path(target, is_dir=True) as tmp:
        (tmp / "b.txt").write_text("2")
        raise KeyError("crash")
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]
    assert [p.name for p in target.iterdir()] == ["a.txt"]


def test_folds_are_reproducible_and_stratified():
    rng = np.random.default_rng(0)
    labels = (rng.random((600, 5)) < [0.5, 0.2, 0.1, 0.05, 0.02]).astype(np.uint8)
    folds = assign_folds(labels, 3, seed=42)
    assert np.array_equal(folds, assign_folds(labels, 3, seed=42))
    assert not np.array_equal(folds, assign_folds(labels, 3, seed=7))
    assert set(folds.tolist()) == {0, 1, 2} and np.bincount(folds).min() >= 195
    counts = fold_label_counts(labels, folds, 3)
    assert (counts.max(0) - counts.min(0) <= 2).all()  # every label spread evenly over the folds
