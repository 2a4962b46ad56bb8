import os
import stat
import threading
import time

import numpy as np
import pytest

from mlic.data.folds import assign_folds, fold_label_counts
from mlic.io import atomic_path, write_json, write_npy_rows
from mlic.parallel import ordered_map


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


def test_npy_rows_are_np_saves_bytes_and_a_short_or_misshapen_stream_leaves_nothing(tmp_path):
    views = np.arange(5 * 2 * 3, dtype=np.int64).reshape(5, 2, 3)
    offsets = np.arange(5 * 4, dtype=np.int32).reshape(5, 2, 2)
    np.save(tmp_path / "expected_views.npy", views.astype(np.uint8))
    np.save(tmp_path / "expected_offsets.npy", offsets)
    files = [(tmp_path / "views.npy", np.uint8, views.shape), (tmp_path / "offsets.npy", np.int32, offsets.shape)]
    write_npy_rows(files, zip(views, offsets, strict=True))
    for name in ("views", "offsets"):
        assert (tmp_path / f"{name}.npy").read_bytes() == (tmp_path / f"expected_{name}.npy").read_bytes()
    assert np.load(tmp_path / "views.npy", mmap_mode="r")[4, 1, 2] == 29
    before = sorted(tmp_path.iterdir())
    short = [(tmp_path / "short.npy", np.uint8, views.shape)]
    with pytest.raises(ValueError, match=r"4 rows written, expected \[5\]"):
        write_npy_rows(short, ((row,) for row in views[:4]))
    with pytest.raises(ValueError, match=r"row 1 of short.npy: shape \(3,\), expected \(2, 3\)"):
        write_npy_rows(short, [(views[0],), (views[1, 0],)])
    assert sorted(tmp_path.iterdir()) == before  # no partial file, no temp left behind


def test_ordered_map_keeps_the_order_and_a_bounded_number_of_items_ahead():
    started, lock = [], threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.001 * (i % 3))  # later items often finish first
        return i * i

    results = ordered_map(work, iter(range(200)), workers=3, ahead=6)
    assert [next(results) for _ in range(10)] == [i * i for i in range(10)]
    time.sleep(0.05)
    assert len(started) <= 10 + 6  # read 10; never more than `ahead` submitted beyond what was read
    assert list(results) == [i * i for i in range(10, 200)]
    with pytest.raises(ZeroDivisionError):
        list(ordered_map(lambda i: 1 // (i - 7), range(100), workers=2))


def test_folds_are_reproducible_and_stratified():
    rng = np.random.default_rng(0)
    labels = (rng.random((600, 5)) < [0.5, 0.2, 0.1, 0.05, 0.02]).astype(np.uint8)
    folds = assign_folds(labels, 3, seed=42)
    assert np.array_equal(folds, assign_folds(labels, 3, seed=42))
    assert not np.array_equal(folds, assign_folds(labels, 3, seed=7))
    assert set(folds.tolist()) == {0, 1, 2} and np.bincount(folds).min() >= 195
    counts = fold_label_counts(labels, folds, 3)
    assert (counts.max(0) - counts.min(0) <= 2).all()  # every label spread evenly over the folds


@pytest.mark.parametrize(
    ("rows", "classes", "n_splits", "seed"),
    [(600, 5, 3, 42), (997, 40, 5, 0), (300, 12, 4, 7), (50, 3, 5, 1), (2000, 120, 5, 3)],
)
def test_folds_are_iterstrats_folds(rows, classes, n_splits, seed):
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    rng = np.random.default_rng(seed)
    rates = np.geomspace(0.3, 0.002, classes)  # a long tail: labels of equal counts, ties to break
    labels = (rng.random((rows, classes)) < rates).astype(np.uint8)
    labels[rng.random(rows) < 0.1] = 0  # label-less rows
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    expected = np.full(rows, -1)
    for fold, (_, val_rows) in enumerate(splitter.split(np.zeros(rows), labels)):
        expected[val_rows] = fold
    assert np.array_equal(assign_folds(labels, n_splits, seed), expected)


def test_folds_refuse_what_cannot_be_split():
    with pytest.raises(ValueError, match="N, C >= 2"):
        assign_folds(np.ones((10, 1), dtype=np.uint8), 2, 0)
    with pytest.raises(ValueError, match="cannot split 3 rows into 5 folds"):
        assign_folds(np.ones((3, 4), dtype=np.uint8), 5, 0)


def test_feature_stats_read_chunks_of_values_not_rows():
    from mlic.data.stats import mean_std

    rng = np.random.default_rng(0)
    features = rng.normal(3.0, 2.0, size=(50, 4, 300)).astype(np.float16)
    flat = features.reshape(-1, 300).astype(np.float64)
    for chunk_values in (1, 999, 1 << 22):  # a row per chunk, 3 rows per chunk, everything at once
        mean, std = mean_std(features, chunk_values=chunk_values)
        np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(std, flat.std(axis=0), rtol=1e-9)

    class RowsOnly:  # reads by rows only, like mlic.layout.CropViews
        shape, dtype = features.shape, features.dtype
        reads: list[int] = []

        def __len__(self) -> int:
            return len(features)

        def __getitem__(self, rows: slice) -> np.ndarray:
            self.reads.append(len(features[rows]))
            return features[rows]

    mean, _ = mean_std(RowsOnly(), chunk_values=2 * 4 * 300)
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-12)
    assert set(RowsOnly.reads) == {2}  # 1,200 values: two rows of 4 x 300 at a time
