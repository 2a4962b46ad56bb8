"""mlic.features.hog against skimage.feature.hog: max abs difference <= HOG_TOLERANCE (1e-6), real and edge cases."""

import numpy as np
import pytest
from conftest import shared_path
from skimage.feature import hog as skimage_hog

from mlic.features.hog import HOG_TOLERANCE, HogParams, extract_hog, hog_batch, hog_dim

PARAMS = [HogParams(9, 8, 2), HogParams(9, 16, 3), HogParams(12, 8, 3), HogParams(6, 10, 2)]  # 256 % 10 != 0
EDGE_PARAMS = [HogParams(9, 8, 2), HogParams(12, 3, 1), HogParams(4, 2, 2), HogParams(1, 1, 1)]


def reference(images: np.ndarray, p: HogParams) -> np.ndarray:
    """skimage's HOG image by image, with the settings mlic.features.hog replicates."""
    ppc, cpb = (p.pixels_per_cell,) * 2, (p.cells_per_block,) * 2
    return np.stack([skimage_hog(im, p.orientations, ppc, cpb, block_norm="L2-Hys", channel_axis=-1) for im in images])


def assert_matches_skimage(images: np.ndarray, p: HogParams) -> None:
    got, want = hog_batch(images, p), reference(images, p)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() <= HOG_TOLERANCE, (p, np.abs(got - want).max())


@pytest.fixture(scope="module")
def planet_chips() -> np.ndarray:
    from mlic.data.images import read_image

    paths = sorted(shared_path("planet", "train-jpg").glob("*.jpg"))
    if not paths:
        pytest.skip("no Planet chips in ../shared/data/planet/train-jpg")
    return np.stack([read_image(path) for path in paths])


@pytest.mark.parametrize("p", PARAMS, ids=str)
def test_matches_skimage_on_real_256px_chips(planet_chips, p):
    assert_matches_skimage(planet_chips, p)


@pytest.mark.parametrize("p", PARAMS, ids=str)
def test_matches_skimage_on_chips_resized_to_64px(planet_chips, p):
    import cv2

    small = np.stack([cv2.resize(im, (64, 64), interpolation=cv2.INTER_AREA) for im in planet_chips])
    assert_matches_skimage(small, p)


def test_matches_skimage_on_real_32px_chips():
    from mlic.data.images import read_image

    paths = sorted(shared_path("planet-32px", "train-jpg").glob("*.jpg"))[:200]
    if not paths:
        pytest.skip("no chips in ../shared/data/planet-32px/train-jpg")
    assert_matches_skimage(np.stack([read_image(path) for path in paths]), HogParams(9, 8, 2))


@pytest.mark.parametrize("shape", [(17, 23), (16, 16), (3, 5), (40, 33)])
@pytest.mark.parametrize("p", EDGE_PARAMS, ids=str)
def test_matches_skimage_on_edge_cases(shape, p):
    """Odd and non-square sizes, full-contrast (+-255) gradients, grey images (channel ties), bins on 45/90 deg."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (4, *shape, 3), dtype=np.uint8)
    binary = (rng.integers(0, 2, (4, *shape, 3)) * 255).astype(np.uint8)
    grey = np.repeat(rng.integers(0, 256, (4, *shape, 1), dtype=np.uint8), 3, axis=-1)
    images = np.concatenate([noise, binary, grey])
    if min(shape) < p.pixels_per_cell * p.cells_per_block:
        with pytest.raises(ValueError, match="too small"):
            hog_batch(images, p)
        return
    assert_matches_skimage(images, p)


@pytest.mark.parametrize("size", [16, 32, 64, 250])
@pytest.mark.parametrize("p", PARAMS, ids=str)
def test_hog_dim_is_the_feature_length(size, p):
    if size < p.pixels_per_cell * p.cells_per_block:
        with pytest.raises(ValueError, match="too small"):
            hog_dim(size, p)
        return
    images = np.zeros((1, size, size, 3), dtype=np.uint8)
    assert hog_batch(images, p).shape == (1, hog_dim(size, p))
    assert hog_dim(size, p) == len(reference(images, p)[0])


def test_too_small_or_wrong_images_raise():
    with pytest.raises(ValueError, match="too small.*at least 16x16"):
        hog_batch(np.zeros((2, 15, 32, 3), dtype=np.uint8), HogParams(9, 8, 2))
    with pytest.raises(ValueError, match="uint8"):
        hog_batch(np.zeros((2, 32, 32, 3), dtype=np.float32), HogParams())
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        hog_batch(np.zeros((32, 32, 3), dtype=np.uint8), HogParams())
    with pytest.raises(ValueError, match="too small"):
        extract_hog(np.zeros((2, 32, 32, 3), dtype=np.uint8), HogParams(9, 8, 2), image_size=8)


@pytest.mark.parametrize("image_size", [32, 24])
def test_extract_hog_on_a_memmap(tmp_path, image_size):
    rng = np.random.default_rng(0)
    path = tmp_path / "cache.npy"
    np.save(path, rng.integers(0, 256, (37, 32, 32, 3), dtype=np.uint8))
    cache = np.load(path, mmap_mode="r")
    p = HogParams(9, 8, 2)
    features = extract_hog(cache, p, image_size, batch_size=8, workers=2)
    assert features.dtype == np.float16 and features.shape == (37, hog_dim(image_size, p))
    import cv2

    resized = np.stack([cv2.resize(im, (image_size, image_size), interpolation=cv2.INTER_AREA) for im in cache])
    expected = hog_batch(resized if image_size != 32 else np.asarray(cache), p)
    assert np.array_equal(features, expected.astype(np.float16))  # float16 rounding of the same float32 values
    assert np.abs(features - expected).max() <= 1e-3  # features are <= 1: float16 spacing there is <= 2**-11
