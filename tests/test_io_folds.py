import os
import stat

import numpy as np
import pytest

from mlic.data.folds import assign_folds, fold_label_counts
from mlic.io import atomic_path, write_json


@pytest.fixture
def umask():
    """A umask of 0o027 for the test: it tells a mode that honours the umask (0o640) apart from mkstemp's
    owner-only 0o600 and from a hard-coded 0o644, which the usual 0o022 or 0o077 would not."""
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def test_atomic_file_is_not_left_behind_on_failure(tmp_path, umask):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"b": 1, "a": 2})
    assert target.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # the mode of any normal file, not owner-only


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path, umask):
    target = tmp_path / "dir"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(KeyError), atomic_path(target, is_dir=True) as tmp:
        (tmp / "b.txt").write_text("2")
        raise KeyError("crash")
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask  # like mkdir, not mkdtemp's owner-only 0o700


def test_folds_are_reproducible_and_stratified():
    rng = np.random.default_rng(0)
    labels = (rng.random((600, 5)) < [0.5, 0.2, 0.1, 0.05, 0.02]).astype(np.uint8)
    folds = assign_folds(labels, 3, seed=42)
    assert np.array_equal(folds, assign_folds(labels, 3, seed=42))
    assert not np.array_equal(folds, assign_folds(labels, 3, seed=7))
    assert set(folds.tolist()) == {0, 1, 2} and np.bincount(folds).min() >= 195
    counts = fold_label_counts(labels, folds, 3)
    assert (counts.max(0) - counts.min(0) <= 2).all()  # every label spread evenly over the folds
