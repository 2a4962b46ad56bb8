"""Stratified mini-batches for multi-label data: every batch's label frequencies track those of the whole set.

Under label imbalance a plain shuffled batch of 64 often holds none of a rare label and then three at once,
so the gradient of that label's loss swings from batch to batch. `StratifiedBatchSampler` deals each epoch's
samples into batches by iterative stratification (Sechidis, Tsoumakas & Vlahavas, 2011), applied to batches
instead of folds: repeatedly take the label with the fewest samples still to place and deal those samples to
the batches that most lack that label, within each batch's remaining capacity.

The dealing is done one label at a time in bulk (a water-filling over the batches' desires, see `_deal`) instead
of one sample at a time, which gives the same per-label counts as the sequential algorithm up to how exact ties
are broken, and runs iMet's 109k x 1,103 labels in well under a second per epoch. `reference_batches` is the
sequential textbook version, kept to check that claim (benchmarks/sampler.py compares the two).

Use it through a DataLoader's `batch_sampler=` with the labels of the samples the dataset serves, one row per
sample index: for `CachedSamples` over (row, view) pairs that is `labels[dataset.rows]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from mlic.config import TrainConfig
from mlic.errors import ConfigError
from mlic.registry import Registry


class StratifiedBatchSampler(Sampler[list[int]]):
    """Batches of sample indices whose label frequencies track the whole set's; a fresh split every epoch.

    Each epoch draws a permutation from `np.random.default_rng([seed, epoch])` (so epochs differ and runs
    repeat), drops the `n % batch_size` remainder when `drop_last`, stratifies the rest into batches and yields
    them in random order (a short last batch, when kept, comes last, as with a plain DataLoader). Call
    `set_epoch(epoch)` before each epoch like DistributedSampler; without it the epoch advances by one at every
    `__iter__`, and once it is called the epoch only changes when it is called again.

    Oversampling (`oversample_power > 0`): the epoch's samples are drawn with replacement instead of permuted,
    n draws, sample i with probability proportional to max over its positive labels c of (1 / f_c) **
    oversample_power, f_c being label c's frequency in `labels` (a sample with no positive label weighs 1). So at
    power 0.5 a label 100 times rarer than another gets its samples drawn about 10 times as often. The epoch
    keeps n samples (some repeated, some absent) and those are then stratified into batches as usual.

    Args:
        labels: (n_samples, C) binary matrix, row i the labels of dataset index i.
        batch_size: Samples per batch.
        seed: Base seed; each epoch's randomness comes from `[seed, epoch]`.
        drop_last: Drop the `n % batch_size` remainder (chosen at random each epoch) instead of a short batch.
        oversample_power: Exponent of the rare-label oversampling above; 0 gives each sample once per epoch.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        seed: int = 0,
        drop_last: bool = True,
        oversample_power: float = 0.0,
    ):
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise ValueError(f"labels must be a 2-D (n_samples, C) matrix, got shape {labels.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if oversample_power < 0:
            raise ValueError(f"oversample_power must be >= 0, got {oversample_power}")
        self.n_samples, self.n_labels = labels.shape
        self.batch_size, self.seed, self.drop_last = int(batch_size), int(seed), bool(drop_last)
        self.oversample_power = float(oversample_power)
        # The sparse (row -> positive labels) form is all the dealing needs, and is ~250x smaller than iMet's matrix
        self.indptr, self.cols = _csr(labels)
        self.weights = _oversample_weights(self.indptr, self.cols, labels.shape, self.oversample_power)
        self.epoch, self._explicit_epoch = 0, False

    def __len__(self) -> int:
        return len(self._sizes())

    def set_epoch(self, epoch: int) -> None:
        """Use `epoch` for the next iterations (and stop advancing it automatically)."""
        self.epoch, self._explicit_epoch = int(epoch), True

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches(self.epoch)
        if not self._explicit_epoch:
            self.epoch += 1
        yield from batches

    def _sizes(self) -> np.ndarray:
        """Batch capacities: full batches, then the short remainder batch when it is kept."""
        full, rest = divmod(self.n_samples, self.batch_size)
        sizes = [self.batch_size] * full + ([rest] if rest and not self.drop_last else [])
        return np.asarray(sizes, dtype=np.int64)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The batches of one epoch, a pure function of (seed, epoch): lists of dataset indices."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        sizes = self._sizes()
        if self.weights is None:
            items = rng.permutation(self.n_samples)
        else:
            items = rng.choice(self.n_samples, size=self.n_samples, replace=True, p=self.weights)  # iid: random order
        items = items[: int(sizes.sum())]  # drop_last: the remainder is whatever the random order put at the end
        pair_item, pair_col = _gather(self.indptr, self.cols, items)
        batch_of = _assign(pair_item, pair_col, len(items), sizes, self.n_labels, rng)
        return _split(items, batch_of, sizes, rng)


def _csr(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row pointers and column indices of the positive entries of a binary (n, C) matrix."""
    rows, cols = np.nonzero(labels)
    indptr = np.zeros(len(labels) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(labels)), out=indptr[1:])
    return indptr, cols.astype(np.int64)


def _oversample_weights(
    indptr: np.ndarray, cols: np.ndarray, shape: tuple[int, int], power: float
) -> np.ndarray | None:
    """Draw probabilities: max over a row's labels of (1 / f_c) ** power, normalised; None when power is 0."""
    if power == 0 or shape[0] == 0:
        return None
    freq = np.bincount(cols, minlength=shape[1]) / shape[0]
    per_pair = np.power(1.0 / freq[cols], power)
    weights = np.ones(shape[0])  # rows with no positive label weigh as a label present everywhere would
    has = np.diff(indptr) > 0
    weights[has] = np.maximum.reduceat(per_pair, indptr[:-1][has]) if per_pair.size else 1.0
    return weights / weights.sum()


def _gather(indptr: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in `rows`, label) of every positive entry of the given rows, in row order (vectorised)."""
    lengths = indptr[rows + 1] - indptr[rows]
    starts = np.cumsum(lengths) - lengths
    offsets = np.arange(int(lengths.sum())) - np.repeat(starts - indptr[rows], lengths)
    return np.repeat(np.arange(len(rows)), lengths), cols[offsets]


def _assign(
    pair_item: np.ndarray, pair_col: np.ndarray, n_items: int, sizes: np.ndarray, n_labels: int, rng
) -> np.ndarray:
    """Batch id of each item by iterative stratification, one label at a time.

    Items are positions 0..n_items-1 of an already shuffled epoch, so taking a label's items in position order
    hands them to the batches at random, as the sequential algorithm's random sample order would.
    """
    k = len(sizes)
    by_label = np.argsort(pair_col, kind="stable")
    label_items, label_ptr = pair_item[by_label], _pointers(pair_col, n_labels)
    item_ptr = _pointers(pair_item, n_items)  # pairs are in item order already
    freq = np.diff(label_ptr) / max(n_items, 1)
    remaining = np.diff(label_ptr)
    tie = rng.permutation(n_labels)  # random order among labels with equally many samples left
    batch_of = np.full(n_items, -1, dtype=np.int64)
    capacity = sizes.copy()
    while remaining.any():
        # Rarest first: the labels with the fewest samples left have the least freedom, so they choose first
        c = int(np.argmin(np.where(remaining > 0, remaining * n_labels + tie, np.iinfo(np.int64).max)))
        members = label_items[label_ptr[c] : label_ptr[c + 1]]
        placed = batch_of[members]
        todo = members[placed < 0]
        have = np.bincount(placed[placed >= 0], minlength=k)
        counts = _deal(freq[c] * sizes - have, capacity, len(todo), rng)
        batch_of[todo] = np.repeat(np.arange(k), counts)
        capacity -= counts
        remaining -= np.bincount(_gather(item_ptr, pair_col, todo)[1], minlength=n_labels)
    rest = np.flatnonzero(batch_of < 0)  # items with no positive label fill whatever room is left
    batch_of[rest] = np.repeat(np.arange(k), capacity)
    return batch_of


def _pointers(sorted_keys: np.ndarray, n: int) -> np.ndarray:
    """Start offsets (n + 1) of each key's run in an array grouped by key."""
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(sorted_keys, minlength=n), out=ptr[1:])
    return ptr


def _deal(desire: np.ndarray, capacity: np.ndarray, m: int, rng) -> np.ndarray:
    """How many of `m` samples of a label each batch gets: the bulk form of dealing them one at a time.

    Dealing one by one to the batch with the largest desire (then the most room, then at random) and lowering
    that desire by one each time hands out the m largest values of {desire_b - j : 0 <= j < capacity_b}. The
    m-th largest lies in [T, T + 1) for the integer T found by bisection; the values above T + 1 are all taken,
    and the batches with a value in [T, T + 1) (at most one each) share the rest by (fractional desire, room,
    random): exactly the sequential order.
    """
    counts = np.zeros(len(desire), dtype=np.int64)
    if m == 0:
        return counts
    whole = np.floor(desire).astype(np.int64)

    def taken(t: int) -> np.ndarray:  # per batch, how many of its values are >= t
        return np.minimum(np.maximum(whole - t + 1, 0), capacity)  # np.clip's dispatch costs more than this

    lo, hi = int((whole - capacity).min()) + 1, int(whole.max()) + 1  # taken(lo) sums to all room, taken(hi) to 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if taken(mid).sum() >= m else (lo, mid)
    counts = taken(hi)
    marginal = np.flatnonzero(taken(lo) > counts)
    room = (capacity - counts)[marginal]
    order = np.lexsort((rng.random(len(marginal)), -room, -(desire - whole)[marginal]))
    counts[marginal[order[: m - int(counts.sum())]]] += 1
    return counts


def _split(items: np.ndarray, batch_of: np.ndarray, sizes: np.ndarray, rng) -> list[list[int]]:
    """Group items by batch (keeping their random order inside), then put the full batches in random order."""
    grouped = items[np.argsort(batch_of, kind="stable")].tolist()
    ends = np.cumsum(sizes).tolist()
    batches = [grouped[end - size : end] for end, size in zip(ends, sizes.tolist(), strict=True)]
    n_full = int((sizes == sizes.max()).sum()) if len(sizes) else 0  # a short batch is always the last one
    return [batches[i] for i in rng.permutation(n_full)] + batches[n_full:]


def batch_label_deviation(labels: np.ndarray, batches: Iterable[Sequence[int]]) -> float:
    """Mean absolute deviation of per-batch label frequencies from the dataset's (mean over batches and labels).

    Args:
        labels: (n_samples, C) binary matrix; its row means are the reference frequencies.
        batches: Lists of row indices; empty batches are skipped.

    Returns:
        The mean over batches and labels of |mean of the batch's labels - mean of all labels|.
    """
    labels = np.asarray(labels)
    reference = labels.mean(axis=0)
    # A loop over batches reads each batch's rows once; a dense gather of all of them would copy the whole matrix
    per_batch = [np.abs(labels[np.asarray(b)].mean(axis=0) - reference).mean() for b in batches if len(b)]
    return float(np.mean(per_batch)) if per_batch else 0.0


def random_batches(n: int, batch_size: int, seed: int, drop_last: bool = True) -> list[list[int]]:
    """The plain shuffled baseline: a permutation of range(n) cut into batches of `batch_size`."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    stop = (n // batch_size) * batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def reference_batches(labels: np.ndarray, batch_size: int, seed: int, drop_last: bool = True) -> list[list[int]]:
    """Textbook sequential iterative stratification into batches, one sample at a time (slow; for checking).

    Same epoch layout as `StratifiedBatchSampler` (permutation, dropped remainder, capacities), but each sample
    goes to the batch with the largest desire for the current label, then the most room, then at random.
    """
    labels = np.asarray(labels).astype(bool)
    rng = np.random.default_rng(seed)
    n = len(labels)
    n_batches = n // batch_size if drop_last else math.ceil(n / batch_size)
    sizes = np.asarray([min(batch_size, n - b * batch_size) for b in range(n_batches)], dtype=np.int64)
    items = rng.permutation(n)[: int(sizes.sum())]
    sub = labels[items]
    desire = sub.mean(axis=0)[None, :] * sizes[:, None]
    capacity, batch_of = sizes.copy(), np.full(len(items), -1)
    remaining = sub.sum(axis=0).astype(np.int64)
    while remaining.any():
        counts = np.where(remaining > 0, remaining, np.iinfo(np.int64).max)
        c = int(rng.choice(np.flatnonzero(counts == counts.min())))
        for i in np.flatnonzero(sub[:, c] & (batch_of < 0)):
            batch_of[i] = b = _best_batch(desire[:, c], capacity, rng)
            desire[b] -= sub[i]
            capacity[b] -= 1
            remaining -= sub[i]
    rest = np.flatnonzero(batch_of < 0)
    batch_of[rest] = np.repeat(np.arange(len(sizes)), capacity)
    return _split(items, batch_of, sizes, rng)


def _best_batch(desire: np.ndarray, capacity: np.ndarray, rng) -> int:
    """The open batch with the largest desire, then the most room, then a random one of those."""
    key = np.where(capacity > 0, desire, -np.inf)
    best = np.flatnonzero(key == key.max())
    best = best[capacity[best] == capacity[best].max()]
    return int(rng.choice(best))


class RandomBatchSampler(Sampler[list[int]]):
    """The plain shuffled batches (`random_batches`), a fresh permutation from `[seed, epoch]` every epoch.

    A pure function of (seed, epoch), like `StratifiedBatchSampler`, so that a resumed run sees the same batches;
    call `set_epoch` before each epoch.
    """

    def __init__(self, n_samples: int, batch_size: int, seed: int = 0, drop_last: bool = True):
        self.n_samples, self.batch_size, self.seed, self.drop_last = n_samples, batch_size, seed, drop_last
        self.epoch = 0

    def __len__(self) -> int:
        full, rest = divmod(self.n_samples, self.batch_size)
        return full + int(bool(rest) and not self.drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Use `epoch` for the next iterations."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        yield from random_batches(self.n_samples, self.batch_size, seed, self.drop_last)


class ShardedBatchSampler(Sampler[list[int]]):
    """One process's share of every batch under DDP: `batch[rank::world_size]`.

    All processes draw the same global batches (same seed), and each takes its slice, so `train.batch_size` stays
    the global batch and DDP's gradient average equals the one-process gradient when the slices are equal.
    """

    def __init__(self, batches: Sampler[list[int]], rank: int, world_size: int):
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the global batch sampler."""
        self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield list(batch)[self.rank :: self.world_size]


class SeededBatchSampler(Sampler[list[tuple[int, int]]]):
    """Each batch's items paired with an augmentation seed: `(index, seed)`.

    The seed is a pure function of (train.seed, epoch, batch number, position in the batch), drawn before DDP slices
    the batches, so a sample's augmentation is the same whatever the data-loader workers (each item re-seeds the
    transform, `CachedSamples`) and whatever the number of processes.
    """

    def __init__(self, batches: Sampler[list[int]], seed: int):
        self.batches, self.seed, self.epoch = batches, seed, 0

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        """Use `epoch` for the next iterations, here and in the batches."""
        self.epoch = int(epoch)
        self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for number, batch in enumerate(self.batches):
            seeds = np.random.SeedSequence([self.seed, self.epoch, number]).generate_state(len(batch))
            yield [(int(index), int(seed)) for index, seed in zip(batch, seeds, strict=True)]


def _random_batches(labels: np.ndarray, cfg: TrainConfig, drop_last: bool) -> Sampler[list[int]]:
    if cfg.oversample_power:
        raise ConfigError("train.oversample_power needs train.sampler: stratified", path="params.yaml")
    return RandomBatchSampler(len(labels), cfg.batch_size, cfg.seed, drop_last)


def _stratified_batches(labels: np.ndarray, cfg: TrainConfig, drop_last: bool) -> Sampler[list[int]]:
    return StratifiedBatchSampler(labels, cfg.batch_size, cfg.seed, drop_last, cfg.oversample_power)


# train.sampler -> the batch sampler that decides how training batches are drawn (each has `set_epoch`).
SAMPLERS: Registry[Callable[..., Sampler[list[int]]]] = Registry("sampler", "train.sampler")
SAMPLERS.register("random")(_random_batches)
SAMPLERS.register("stratified")(_stratified_batches)


def make_train_loader(
    dataset: Dataset, labels: np.ndarray, cfg: TrainConfig, rank: int = 0, world_size: int = 1, **common
) -> DataLoader:
    """The training DataLoader for `train.sampler`: "random" (shuffled) or "stratified" (label-balanced batches).

    Batches are a pure function of (train.seed, epoch): call `loader.batch_sampler.set_epoch(epoch)` before each
    epoch. A dataset that `takes_seeds` gets each item with its augmentation seed (`SeededBatchSampler`). Under DDP
    each of the `world_size` processes gets its slice of every batch.

    Args:
        dataset: The training samples.
        labels: (len(dataset), C) labels of those samples, in dataset order.
        cfg: The `train` section (batch_size, sampler, oversample_power, seed).
        rank: This process's rank under DDP.
        world_size: Number of DDP processes (1: no DDP).
        **common: Other DataLoader arguments (num_workers, pin_memory, persistent_workers, ...).
    """
    drop_last = len(dataset) > cfg.batch_size
    batches = SAMPLERS.get(cfg.sampler)(labels, cfg, drop_last)
    if getattr(dataset, "takes_seeds", False):  # items (index, augmentation seed): see SeededBatchSampler
        batches = SeededBatchSampler(batches, cfg.seed)
    if world_size > 1:
        batches = ShardedBatchSampler(batches, rank, world_size)
    return DataLoader(dataset, batch_sampler=batches, **common)
