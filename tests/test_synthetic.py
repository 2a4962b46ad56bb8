import collections

import numpy as np
import pytest

from mlic.data.competitions.planet import PLANET_TAGS
from mlic.data.synthetic import WEATHER_TAGS, make_chip, render_chip, sample_tags

# Tag frequencies of the real train_v2.csv (40,479 chips).
REAL_FREQUENCIES = {
    "primary": 0.9267,
    "clear": 0.7024,
    "agriculture": 0.3042,
    "road": 0.1994,
    "water": 0.1831,
    "partly_cloudy": 0.1794,
    "cultivation": 0.1123,
    "habitation": 0.0904,
    "haze": 0.0666,
    "cloudy": 0.0516,
    "bare_ground": 0.0213,
    "selective_logging": 0.0084,
    "artisinal_mine": 0.0084,
    "blooming": 0.0082,
    "slash_burn": 0.0052,
    "blow_down": 0.0025,
    "conventional_mine": 0.0025,
}


@pytest.fixture(scope="module")
def label_sets():
    rng = np.random.default_rng(123)
    return [sample_tags(rng) for _ in range(20000)]


def test_label_structure_is_planets(label_sets):
    for tags in label_sets:
        assert sum(t in WEATHER_TAGS for t in tags) == 1
        assert set(tags) <= set(PLANET_TAGS) and tags == sorted(tags)
        if "cloudy" in tags:
            assert tags == ["cloudy"]
        else:
            assert len(tags) >= 2  # a weather tag and at least one land tag


def test_tag_frequencies_are_close_to_the_real_ones(label_sets):
    assert set(REAL_FREQUENCIES) == set(PLANET_TAGS)  # every tag is checked, the rare ones too
    counts, n = collections.Counter(t for tags in label_sets for t in tags), len(label_sets)
    for tag, real in REAL_FREQUENCIES.items():
        # Sampling noise of a 20,000-chip estimate (3.5 standard errors) plus 1% of the frequency for the label
        # model's own small bias (e.g. the primary top-up); the rare tags are checked as tightly as noise allows.
        tolerance = 3.5 * np.sqrt(real * (1 - real) / n) + 0.01 * real
        assert abs(counts[tag] / n - real) <= tolerance, (tag, counts[tag] / n, real)
    habitation = [t for t in label_sets if "habitation" in t]
    assert np.mean(["road" in t for t in habitation]) > 0.6  # roads follow settlements, as in the real data


def test_chips_are_deterministic_and_distinct():
    tags_a, image_a = make_chip(7, 3, 64)
    tags_b, image_b = make_chip(7, 3, 64)
    assert tags_a == tags_b and np.array_equal(image_a, image_b)
    assert image_a.shape == (64, 64, 3) and image_a.dtype == np.uint8
    assert not np.array_equal(image_a, make_chip(7, 4, 64)[1])
    assert not np.array_equal(image_a, make_chip(8, 3, 64)[1])


def _mean_render(tags, stat, n=24, size=64):
    rng = np.random.default_rng(0)
    return float(np.mean([stat(render_chip(tags, size, rng).astype(np.float32)) for _ in range(n)]))


@pytest.mark.parametrize(
    ("tag", "stat", "direction"),
    [
        ("water", lambda im: (im[..., 2] - im[..., 1]).mean(), 1),  # blue band
        ("cloudy", lambda im: im.mean(), 1),  # white cover
        ("haze", lambda im: im.std(axis=(0, 1)).mean(), -1),  # lower contrast
        ("habitation", lambda im: (im.min(axis=2) > 180).mean(), 1),  # small bright blocks
        ("road", lambda im: (im.mean(axis=2) > 150).mean(), 1),  # light line
        ("agriculture", lambda im: im[..., 0].mean(), 1),  # lighter fields than forest
        ("slash_burn", lambda im: (im.max(axis=2) < 40).mean(), 1),  # charcoal patch
    ],
)
def test_each_tag_is_visibly_rendered(tag, stat, direction):
    weather = "clear" if tag not in WEATHER_TAGS else tag
    base = ["clear", "primary"]
    with_tag = [weather] if tag == "cloudy" else sorted({*base, weather, tag} - ({"clear"} if tag == "haze" else set()))
    assert direction * (_mean_render(with_tag, stat) - _mean_render(base, stat)) > 0


def test_render_rejects_unknown_tags_and_scales():
    with pytest.raises(ValueError, match="bogus"):
        render_chip(["clear", "bogus"], 64, np.random.default_rng(0))
    assert render_chip(["clear", "primary", "road"], 256, np.random.default_rng(0)).shape == (256, 256, 3)
