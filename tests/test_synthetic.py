import collections
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tomllib
from conftest import REPO

from mlic.config import DataConfig, ImetSampleConfig, config_from_dict
from mlic.data.competitions import get_competition
from mlic.data.competitions.planet import PLANET_TAGS
from mlic.data.synthetic.imet import IMET_CULTURES, IMET_TAGS, imet_spec, make_imet_image
from mlic.data.synthetic.planet import LAND_PROBS, LAND_PROBS_FILE, WEATHER_TAGS, make_chip, render_chip, sample_tags
from mlic.errors import ConfigError
from mlic.stages import sample

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


def test_the_land_table_is_package_data():
    """The label model's table is a CSV beside its module: a wheel must ship it."""
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert LAND_PROBS_FILE.endswith(".csv") and "*.csv" in package_data["mlic.data.synthetic"]
    assert len(LAND_PROBS) == 6 and LAND_PROBS[("clear", True)]["road"] == 0.5115  # 3 weathers x agriculture or not


# --- the sample stage's generators ---------------------------------------------------------------------------------

# Digest of a tiny Planet sample (every file's name and bytes) computed once from the code before the iMet generator
# was added: the committed dvc.lock and submission depend on the Planet sample staying byte-identical.
PLANET_TINY_DIGEST = "ea523545381f3775a0fafe24c89cf8e1f8a62674ddece97073d10a2bec16742c"
IMET_TINY = {"cultures": 8, "tags": 20, "tail_ratio": 0.01, "min_side": 24, "max_side": 48}


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _write_sample(out: Path, **sample_keys) -> Path:
    sample.main(config_from_dict({"sample": {"out_dir": str(out), "num_workers": 1, **sample_keys}}))
    return out


def _write_imet(out: Path, seed: int = 0) -> Path:
    return _write_sample(out, competition="imet2019", n_train=200, n_test=20, seed=seed, imet=IMET_TINY)


@pytest.fixture(scope="module")
def imet_root(tmp_path_factory) -> Path:
    return _write_imet(tmp_path_factory.mktemp("imet") / "sample")


def test_the_planet_sample_is_byte_identical_to_before(tmp_path):
    root = _write_sample(tmp_path / "planet", n_train=12, n_test=3, image_size=32)
    assert _digest(root) == PLANET_TINY_DIGEST


def test_imet_sample_has_the_kaggle_layout(imet_root):
    assert {p.name for p in imet_root.iterdir()} == {
        "labels.csv", "train.csv", "sample_submission.csv", "solution.csv", "train", "test"
    }  # fmt: skip
    labels = pd.read_csv(imet_root / "labels.csv", dtype=str)
    assert list(labels.columns) == ["attribute_id", "attribute_name"]
    assert list(labels["attribute_id"]) == [str(i) for i in range(len(labels))]
    kinds = [name.split("::")[0] for name in labels["attribute_name"]]
    assert kinds == ["culture"] * IMET_TINY["cultures"] + ["tag"] * IMET_TINY["tags"]
    train = pd.read_csv(imet_root / "train.csv", dtype=str)
    assert list(train.columns) == ["id", "attribute_ids"] and len(train) == 200
    assert list(train["id"]) == sorted(train["id"]) and all(len(i) == 16 for i in train["id"])
    assert {p.stem for p in (imet_root / "train").glob("*.png")} == set(train["id"])
    for cell in train["attribute_ids"]:
        ids = [int(a) for a in cell.split()]
        assert ids == sorted(ids) and 1 <= sum(a >= IMET_TINY["cultures"] for a in ids) <= 4
        assert sum(a < IMET_TINY["cultures"] for a in ids) <= 1
    submission = pd.read_csv(imet_root / "sample_submission.csv", dtype=str)
    solution = pd.read_csv(imet_root / "solution.csv", dtype=str)
    assert list(submission.columns) == list(solution.columns) == ["id", "attribute_ids"]
    assert list(submission["id"]) == list(solution["id"]) == sorted(submission["id"])
    assert {p.stem for p in (imet_root / "test").glob("*.png")} == set(submission["id"])
    assert not set(submission["id"]) & set(train["id"])


def test_imet_sample_has_a_long_tail(imet_root):
    train = pd.read_csv(imet_root / "train.csv", dtype=str)
    counts = collections.Counter(a for cell in train["attribute_ids"] for a in cell.split())
    per_attribute = [counts[str(a)] for a in range(IMET_TINY["cultures"] + IMET_TINY["tags"])]
    rare = [n for n in per_attribute if n < DataConfig().min_label_count]
    assert 1 <= len(rare) <= len(per_attribute) // 3  # some below data.min_label_count, most kept
    assert max(per_attribute) >= 50


def test_imet_images_vary_in_size(imet_root):
    shapes = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape for p in sorted((imet_root / "train").glob("*.png"))]
    assert all(len(s) == 3 and s[2] == 3 for s in shapes)  # RGB, no alpha
    sides = np.array([s[:2] for s in shapes])
    assert sides.min() >= IMET_TINY["min_side"] and sides.max() <= IMET_TINY["max_side"]
    assert len(set(map(tuple, sides))) > 50 and np.mean(sides[:, 0] != sides[:, 1]) > 0.8


def test_imet_sample_is_deterministic(imet_root, tmp_path):
    assert _digest(_write_imet(tmp_path / "again")) == _digest(imet_root)
    assert _digest(_write_imet(tmp_path / "other", seed=1)) != _digest(imet_root)


def test_the_imet_reader_reads_the_sample_back(imet_root):
    scan = get_competition(DataConfig(competition="imet2019", root=str(imet_root))).scan(imet_root, decode_images=True)
    assert scan.problems == []
    raw = scan.raw
    train = pd.read_csv(imet_root / "train.csv", dtype=str)
    assert raw.classes == tuple(str(i) for i in range(IMET_TINY["cultures"] + IMET_TINY["tags"]))
    assert raw.train_ids == list(train["id"])
    assert [" ".join(t) for t in raw.train_tags] == list(train["attribute_ids"])
    assert raw.test_ids == list(pd.read_csv(imet_root / "sample_submission.csv", dtype=str)["id"])


def test_imet_attributes_are_drawn_in_the_pixels():
    spec = imet_spec(6, 14, 0.05, seed=0)
    images = [make_imet_image(spec, 0, i, 32, 48) for i in range(300)]
    # Cultures: the backdrop's median colour alone tells them apart (nearest centroid, fitted and scored in-sample).
    cultured = [(a[0], np.median(im.reshape(-1, 3), axis=0)) for a, im in images if a[0] < spec.n_cultures]
    labels, colours = np.array([c for c, _ in cultured]), np.array([c for _, c in cultured])
    centroids = {c: colours[labels == c].mean(axis=0) for c in set(labels)}
    guess = [min(centroids, key=lambda c: np.linalg.norm(x - centroids[c])) for x in colours]
    assert np.mean(np.array(guess) == labels) > 0.9
    # Tags: the most frequent tag's ink covers far more of the images that carry it than of the others.
    top = spec.n_cultures + spec.ranks[spec.n_cultures :].index(0)
    ink = np.array([220, 30, 30])  # rank 0 is drawn as red discs
    share = np.array([(np.abs(im.astype(int) - ink).max(axis=2) < 45).mean() for _, im in images])
    has = np.array([top in a for a, _ in images])
    assert share[has].mean() > 0.05 > 5 * share[~has].mean()


def test_unknown_sample_competition_and_sizes_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"sample\.competition") as error:
        _write_sample(tmp_path / "x", competition="imet")
    assert "imet2019" in str(error.value) and "planet" in str(error.value)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match=r"sample\.imet\.tags"):
        config_from_dict({"sample": {"imet": {"tags": ImetSampleConfig.MAX_TAGS + 1}}})
    with pytest.raises(ConfigError, match=r"sample\.imet\.min_side"):
        config_from_dict({"sample": {"imet": {"min_side": 64, "max_side": 48}}})
    limits = (ImetSampleConfig.MAX_CULTURES, ImetSampleConfig.MAX_TAGS)
    assert (len(IMET_CULTURES), len(IMET_TAGS)) == limits  # the config's limits are the generator's
