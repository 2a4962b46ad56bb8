"""StratifiedBatchSampler: coverage, sizes, reproducibility, stratification quality, DataLoader use, oversampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import shared_path
from torch.utils.data import DataLoader, TensorDataset

from mlic.train.sampling import (
    RandomBatchSampler,
    ShardedBatchSampler,
    StratifiedBatchSampler,
    batch_label_deviation,
    make_train_loader,
    random_batches,
    reference_batches,
)


@pytest.fixture(scope="module")
def imbalanced() -> np.ndarray:
    """5,000 x 20 independent labels with frequencies from 0.5 down to 0.005 (log-spaced)."""
    freq = np.logspace(np.log10(0.5), np.log10(0.005), 20)
    return (np.random.default_rng(0).random((5000, 20)) < freq).astype(np.uint8)


def mean_deviation(labels: np.ndarray, make_batches, epochs: int = 3) -> float:
    return float(np.mean([batch_label_deviation(labels, make_batches(e)) for e in range(epochs)]))


@pytest.mark.parametrize("drop_last", [True, False])
def test_every_sample_once_and_batch_sizes(imbalanced, drop_last):
    n, batch_size = 1003, 64  # 15 full batches and a remainder of 43
    sampler = StratifiedBatchSampler(imbalanced[:n], batch_size, seed=1, drop_last=drop_last)
    batches = list(sampler)
    sizes = [len(b) for b in batches]
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    assert all(isinstance(i, int) for i in flat)
    if drop_last:
        assert len(sampler) == len(batches) == 15 and set(sizes) == {64}
        assert len(flat) == 15 * 64 and set(flat) <= set(range(n))
    else:
        assert len(sampler) == len(batches) == 16 and sizes == [64] * 15 + [43]
        assert sorted(flat) == list(range(n))


def test_exact_multiple_and_tiny_sets(imbalanced):
    assert sorted(i for b in StratifiedBatchSampler(imbalanced[:640], 64) for i in b) == list(range(640))
    assert list(StratifiedBatchSampler(imbalanced[:10], 64)) == []
    assert list(StratifiedBatchSampler(imbalanced[:10], 64, drop_last=False))[0] != []
    unlabelled = np.zeros((100, 3), dtype=np.uint8)  # no positives at all: still a plain partition
    assert sorted(i for b in StratifiedBatchSampler(unlabelled, 10) for i in b) == list(range(100))


def test_reproducible_per_epoch_and_different_across_epochs(imbalanced):
    a, b = StratifiedBatchSampler(imbalanced, 64, seed=3), StratifiedBatchSampler(imbalanced, 64, seed=3)
    assert a.epoch_batches(2) == b.epoch_batches(2)
    assert a.epoch_batches(0) != a.epoch_batches(1)
    assert a.epoch_batches(0) != StratifiedBatchSampler(imbalanced, 64, seed=4).epoch_batches(0)
    # Auto-advance: successive iterations are epochs 0, 1, ...; set_epoch pins the epoch like DistributedSampler
    assert list(a) == b.epoch_batches(0) and list(a) == b.epoch_batches(1)
    a.set_epoch(7)
    assert list(a) == list(a) == b.epoch_batches(7)


def test_batches_come_out_in_random_order(imbalanced):
    batches = StratifiedBatchSampler(imbalanced, 50).epoch_batches(0)
    firsts = [min(b) for b in batches]
    assert firsts != sorted(firsts)


def test_deviation_clearly_below_random_and_close_to_reference(imbalanced):
    n, batch_size = len(imbalanced), 64
    sampler = StratifiedBatchSampler(imbalanced, batch_size, seed=0)
    stratified = mean_deviation(imbalanced, sampler.epoch_batches)
    shuffled = mean_deviation(imbalanced, lambda e: random_batches(n, batch_size, seed=e))
    reference = mean_deviation(imbalanced, lambda e: reference_batches(imbalanced, batch_size, seed=e), epochs=1)
    assert stratified < 0.5 * shuffled
    assert stratified < 1.1 * reference  # the bulk dealing matches the one-sample-at-a-time algorithm


def test_batch_label_deviation_by_hand():
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    assert batch_label_deviation(labels, [[0, 2], [1, 3]]) == 0.0
    assert batch_label_deviation(labels, [[0, 1], [2, 3]]) == pytest.approx(0.5)


def test_random_batches():
    batches = random_batches(10, 3, seed=0)
    assert [len(b) for b in batches] == [3, 3, 3]
    assert [len(b) for b in random_batches(10, 3, seed=0, drop_last=False)] == [3, 3, 3, 1]
    assert sorted(i for b in random_batches(10, 3, seed=0, drop_last=False) for i in b) == list(range(10))
    assert random_batches(10, 3, seed=0) == batches != random_batches(10, 3, seed=1)


def test_works_as_dataloader_batch_sampler(imbalanced):
    dataset = TensorDataset(torch.arange(len(imbalanced)), torch.from_numpy(imbalanced))
    sampler = StratifiedBatchSampler(imbalanced, 100, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler)
    assert len(loader) == 50
    epochs = [[batch[0].tolist() for batch in loader] for _ in range(2)]
    for epoch, seen in enumerate(epochs):
        assert seen == sampler.epoch_batches(epoch)
        assert sorted(i for b in seen for i in b) == list(range(len(imbalanced)))
    assert epochs[0] != epochs[1]


def test_oversampling_raises_rare_label_share(imbalanced):
    rare = imbalanced.shape[1] - 1  # frequency 0.005
    plain = StratifiedBatchSampler(imbalanced, 64, oversample_power=0.0).epoch_batches(0)
    boosted = StratifiedBatchSampler(imbalanced, 64, oversample_power=0.5).epoch_batches(0)

    def share(batches):
        flat = np.concatenate(batches)
        return imbalanced[flat, rare].mean()

    assert len(np.concatenate(boosted)) == len(np.concatenate(plain))  # the epoch keeps its length
    assert share(boosted) > 3 * share(plain)
    with pytest.raises(ValueError):
        StratifiedBatchSampler(imbalanced, 64, oversample_power=-1)


def test_real_planet_labels_stratified_below_random():
    from mlic.data.competitions.planet import PLANET_TAGS
    from mlic.data.labels import encode_labels

    frame = pd.read_csv(shared_path("planet-32px", "train_v2.csv"))
    labels = encode_labels([tags.split() for tags in frame["tags"]], PLANET_TAGS)
    sampler = StratifiedBatchSampler(labels, 64, seed=0)
    stratified = mean_deviation(labels, sampler.epoch_batches, epochs=2)
    shuffled = mean_deviation(labels, lambda e: random_batches(len(labels), 64, seed=e), epochs=2)
    assert stratified < 0.6 * shuffled


def test_random_batch_sampler_is_a_function_of_seed_and_epoch():
    sampler = RandomBatchSampler(50, 8, seed=3)
    sampler.set_epoch(4)
    first = list(sampler)
    sampler.set_epoch(5)
    assert list(sampler) != first
    sampler.set_epoch(4)
    assert list(sampler) == first and len(first) == len(sampler) == 6


def test_sharded_batches_split_every_global_batch_between_processes():
    labels = (np.random.default_rng(0).random((40, 4)) < 0.3).astype(np.uint8)
    for make in (lambda: StratifiedBatchSampler(labels, 8, seed=1), lambda: RandomBatchSampler(40, 8, seed=1)):
        whole, shards = make(), [ShardedBatchSampler(make(), rank, 2) for rank in range(2)]
        for sampler in (whole, *shards):
            sampler.set_epoch(2)
        for batch, half0, half1 in zip(whole, *shards, strict=True):
            assert sorted(half0 + half1) == sorted(batch) and len(half0) == len(half1) == 4


def seeded_images(num_workers: int, rank: int = 0, world_size: int = 1, epoch: int = 1) -> list[torch.Tensor]:
    """One epoch of augmented training images through `make_train_loader`, as one process of `world_size` sees it."""
    from mlic.config import TrainConfig
    from mlic.loop.batches import CachedSamples
    from mlic.loop.runtime import loader_options
    from mlic.train.augment import create_augmentation

    rng = np.random.default_rng(0)
    n = 24
    images = rng.integers(0, 256, (n, 1, 16, 16, 3), dtype=np.uint8)
    labels = (rng.random((n, 4)) < 0.4).astype(np.uint8)
    cfg = TrainConfig(batch_size=8, seed=3, num_workers=num_workers, prefetch_factor=2)
    transform = create_augmentation("satellite", 16, cfg.seed)
    dataset = CachedSamples({"image": images}, np.arange(n), np.zeros(n, dtype=int), labels, transform)
    loader = make_train_loader(dataset, labels, cfg, rank, world_size, **loader_options(cfg))
    loader.batch_sampler.set_epoch(epoch)
    return [batch["image"] for batch in loader]


def test_augmentation_is_the_same_whatever_the_workers_or_ranks():
    """Each item carries its own augmentation seed (SeededBatchSampler), drawn before DDP slices the batches.

    So 0 or 2 loader workers, and one process or two, see the same augmented images; another epoch sees others.
    """
    alone = seeded_images(num_workers=0)
    assert all(torch.equal(a, b) for a, b in zip(alone, seeded_images(num_workers=2), strict=True))
    ranks = [seeded_images(num_workers=0, rank=r, world_size=2) for r in (0, 1)]
    for batch, first, second in zip(alone, *ranks, strict=True):
        assert torch.equal(batch[0::2], first) and torch.equal(batch[1::2], second)
    assert not torch.equal(alone[0], seeded_images(num_workers=0, epoch=2)[0])


FORK_AFTER_OPENCV_THREADS = """
import cv2, numpy as np
from mlic.config import TrainConfig
from mlic.loop.batches import CachedSamples
from mlic.loop.runtime import loader_options
from mlic.train.augment import create_augmentation
from mlic.train.sampling import make_train_loader

cv2.setNumThreads(2)
big = np.zeros((2048, 2048, 3), np.uint8)
for _ in range(20):  # OpenCV's thread pool is started, its threads wait on its condition variables
    cv2.warpAffine(big, np.float32([[1, 0.1, 3], [0.1, 1, 2]]), (2048, 2048))
    cv2.resize(big, (1500, 1500))
n = 16
images = np.zeros((n, 1, 64, 64, 3), np.uint8)
labels = np.eye(n, 4, dtype=np.uint8)
cfg = TrainConfig(batch_size=8, num_workers=1, prefetch_factor=2)
dataset = CachedSamples({"image": images}, np.arange(n), np.zeros(n, dtype=int), labels,
                        create_augmentation("satellite", 64, cfg.seed))
loader = make_train_loader(dataset, labels, cfg, **loader_options(cfg), timeout=60)
print(sum(len(batch["image"]) for batch in loader))
"""


@pytest.mark.slow
def test_loader_workers_start_after_opencv_used_its_threads():
    """A forked worker must not touch the OpenCV thread pool it inherited: its threads are not there, and
    reconfiguring it waited forever on their condition variable (seen in benchmarks/loader.py at 384 px)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FORK_AFTER_OPENCV_THREADS], capture_output=True, text=True,
                          timeout=240)  # fmt: skip
    assert done.returncode == 0 and done.stdout.split()[-1] == "16", done.stderr[-2000:]
