"""The image cache with the iMet study's crop expansion, and how training and prediction use its views."""

import numpy as np
import torch
from torch.utils.data import DataLoader

from mlic.config import TrainConfig
from mlic.data.images import build_image_cache, channel_stats, image_views, open_image_cache
from mlic.loop.batches import CachedSamples, expand_views
from mlic.loop.runtime import make_runtime
from mlic.loop.tta import predict_loader
from mlic.models.registry import ArchConfig
from mlic.tasks.multilabel import MultiLabelTask


def test_image_views_are_a_resize_plus_random_crops():
    image = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    views = image_views(image, 56, crops=5, crop_scale=56 / 64, rng=np.random.default_rng(1))
    assert views.shape == (6, 56, 56, 3) and views.dtype == np.uint8
    assert len({v.tobytes() for v in views}) == 6
    same = image_views(image, 56, crops=5, crop_scale=56 / 64, rng=np.random.default_rng(1))
    assert np.array_equal(views, same)


def test_cache_build_is_deterministic_and_complete(sample_competition, tmp_path):
    paths = sorted((sample_competition / "train-jpg").glob("*.jpg"))[:10]
    for name in ("a.npy", "b.npy"):
        build_image_cache(paths, 24, tmp_path / name, workers=2, crops=2, crop_scale=0.75, seed=5)
    a, b = open_image_cache(tmp_path / "a.npy"), open_image_cache(tmp_path / "b.npy")
    assert a.shape == (10, 3, 24, 24, 3) and isinstance(a, np.memmap)
    assert np.array_equal(a, b)
    mean, std = channel_stats(a)
    assert len(mean) == 3 and all(0 < m < 1 for m in mean) and all(s > 0 for s in std)


def test_samples_expand_views_and_read_only_what_the_model_needs():
    images = np.arange(4 * 2 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 2, 8, 8, 3)
    hog = np.random.default_rng(0).random((4, 2, 5)).astype(np.float16)
    labels = np.eye(4, 3, dtype=np.uint8)
    rows, views = expand_views(np.array([1, 3]), 2)
    assert rows.tolist() == [1, 1, 3, 3] and views.tolist() == [0, 1, 0, 1]
    item = CachedSamples({"hog": hog}, rows, views, labels)[1]
    assert set(item) == {"hog", "target"} and torch.equal(item["hog"], torch.from_numpy(hog[1, 1].astype(np.float32)))
    item = CachedSamples({"image": images}, rows, views)[2]
    assert set(item) == {"image"} and torch.equal(item["image"], torch.from_numpy(images[3, 0].transpose(2, 0, 1)))


class MeanOfImage(torch.nn.Module):
    def forward(self, image):
        return image.mean(dim=(1, 2, 3)).unsqueeze(1)


def test_predict_averages_cached_views_per_row():
    images = np.zeros((2, 3, 4, 4, 3), dtype=np.uint8)
    images[0, 1] = 255  # one of row 0's three views is white
    rt = make_runtime(TrainConfig(device="cpu"), {"image": {"mean": torch.zeros(3), "std": torch.ones(3)}})
    loader = DataLoader(CachedSamples({"image": images}, *expand_views(np.arange(2), 3)), batch_size=4)
    task = MultiLabelTask(ArchConfig())
    probs = predict_loader(task, MeanOfImage(), loader, rt, [lambda x: x], cached_views=3)
    expected = (torch.sigmoid(torch.tensor(1.0)) + 2 * torch.sigmoid(torch.tensor(0.0))) / 3
    assert probs.shape == (2, 1) and np.isclose(probs[0, 0], expected) and np.isclose(probs[1, 0], 0.5)
    noisy = np.random.default_rng(0).integers(0, 256, size=(7, 3, 4, 4, 3), dtype=np.uint8)
    samples = CachedSamples({"image": noisy}, *expand_views(np.arange(7), 3))
    per_sample = predict_loader(task, MeanOfImage(), DataLoader(samples, batch_size=5), rt, [lambda x: x])
    streamed = predict_loader(task, MeanOfImage(), DataLoader(samples, batch_size=4), rt, [lambda x: x], 3)
    assert np.array_equal(streamed, per_sample.reshape(7, 3, 1).mean(axis=1))  # batches split rows: same bytes


def test_predict_cuts_the_crops_prepare_cached_whatever_the_file_order(sample_competition, tmp_path):
    """Crop positions depend on the seed and the file name only, so `mlic predict` matches the cache in any order."""
    from mlic.config import PrepareConfig
    from mlic.predict.inference import decode_views

    paths = sorted((sample_competition / "test-jpg").glob("*.jpg"))
    build_image_cache(paths, 32, tmp_path / "cache.npy", crops=2, crop_scale=0.75, seed=3)
    cache = np.load(tmp_path / "cache.npy")
    prep = PrepareConfig(image_size=32, crop_views=2, crop_scale=0.75, seed=3)
    views = decode_views(paths[::-1], prep, workers=2)[::-1]
    np.testing.assert_array_equal(np.stack(views), cache)
    assert not np.array_equal(cache[:, 1], cache[:, 2])  # the two crops of an image differ


def test_a_crop_source_cache_serves_the_same_views_from_less_disk(sample_competition, tmp_path):
    """`prepare.crop_store: source`: plain views, crop sources and offsets on disk; crops cut when read (`CropViews`).

    Every view is the very bytes of the six-view cache, and HOG, channel statistics and training samples read it.
    """
    from mlic.config import HogConfig
    from mlic.data.images import build_crop_source_cache
    from mlic.features.hog import hog_of_views
    from mlic.layout import CropViews

    paths = sorted((sample_competition / "train-jpg").glob("*.jpg"))[:12]
    build_image_cache(paths, 32, tmp_path / "views.npy", crops=3, crop_scale=0.75, seed=3)
    files = (tmp_path / "plain.npy", tmp_path / "sources.npy", tmp_path / "offsets.npy")
    build_crop_source_cache(paths, 32, files, workers=2, crops=3, crop_scale=0.75, seed=3)
    cached = open_image_cache(tmp_path / "views.npy")
    views = CropViews(*(np.load(f, mmap_mode="r") for f in files))
    assert views.shape == cached.shape and len(views) == 12
    stored = sum(f.stat().st_size for f in files)
    assert stored < 0.8 * tmp_path.joinpath("views.npy").stat().st_size  # (32^2 + 43^2) against 4 x 32^2 pixels
    np.testing.assert_array_equal(np.asarray(views), cached)
    np.testing.assert_array_equal(views[[2, 5], 1], cached[[2, 5], 1])
    np.testing.assert_array_equal(views[4, 2], cached[4, 2])
    np.testing.assert_array_equal(views[3:5, 1:3], cached[3:5, 1:3])
    np.testing.assert_array_equal(views.reshape(-1, 32, 32, 3)[5:9], cached.reshape(-1, 32, 32, 3)[5:9])
    hog = HogConfig(image_size=32, num_workers=1)
    np.testing.assert_array_equal(hog_of_views(views, hog), hog_of_views(cached, hog))
    assert channel_stats(views) == channel_stats(cached)
    item = CachedSamples({"image": views}, *expand_views(np.arange(12), 4))[9]  # row 2, crop 1
    assert torch.equal(item["image"], torch.from_numpy(cached[2, 1].transpose(2, 0, 1).copy()))


def test_prepare_with_a_crop_source_cache_gives_what_the_views_cache_gives(sample_competition, tmp_path):
    """The stage: `crop_store: source` writes no images files, yet `load_prepared` serves the same views and stats."""
    import json

    from mlic.config import config_from_dict
    from mlic.layout import CropViews, load_prepared
    from mlic.stages import prepare

    prepared = {}
    for store in ("views", "source"):
        out = tmp_path / store
        prepare_keys = {"out_dir": str(out), "image_size": 32, "crop_views": 2, "crop_store": store}
        prepare.main(config_from_dict({"data": {"root": str(sample_competition)}, "prepare": prepare_keys}))
        prepared[store] = (load_prepared(out), json.loads((out / "stats.json").read_text()))
    (views, views_stats), (source, source_stats) = prepared["views"], prepared["source"]
    assert isinstance(source.train_images, CropViews) and not (tmp_path / "source" / "train_images.npy").exists()
    np.testing.assert_array_equal(np.asarray(source.train_images), views.train_images)
    np.testing.assert_array_equal(np.asarray(source.test_images), views.test_images)
    assert source_stats == views_stats
