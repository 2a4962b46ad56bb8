"""Readers for planet, imet2019 and folder datasets, on small made-up copies and on the real label files."""

import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from PIL import Image

from mlic.config import DataConfig, FolderConfig
from mlic.data.competitions import get_competition
from mlic.data.competitions.planet import PLANET_TAGS
from mlic.data.images import read_image
from mlic.data.labels import drop_rare_labels, encode_labels
from mlic.errors import DataProblems, MlicError

PLANET = DataConfig(competition="planet")


def scan(root, data=PLANET, **kw):
    return get_competition(data).scan(root, **kw)


def messages(scan_result):
    return [p.format() for p in scan_result.problems]


@pytest.fixture
def planet_copy(sample_competition, tmp_path):
    root = tmp_path / "planet"
    shutil.copytree(sample_competition, root)
    return root


def edit_csv(path, edit):
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(frame)
    frame.to_csv(path, index=False)


def test_reads_the_sample_competition(sample_competition):
    raw = get_competition(PLANET).read(sample_competition)
    assert raw.classes == PLANET_TAGS
    assert len(raw.train_ids) == 40 and len(raw.test_ids) == 12
    assert read_image(raw.train_paths[0]).shape == (32, 32, 3)


@pytest.mark.slow  # 100,000 rows and a file check per image: about 4 s
def test_parses_the_full_real_planet_labels():
    result = scan(shared_path("planet"))
    raw = result.raw
    assert len(raw.train_ids) == 40479 and len(raw.test_ids) == 61191
    assert np.mean([len(t) for t in raw.train_tags]) == pytest.approx(2.87, abs=0.01)
    assert raw.test_paths[-1].parent.name == "test-jpg-additional" and raw.test_paths[0].parent.name == "test-jpg"
    # Only 27 chips ship with the real labels: every other problem is a missing image, nothing in the CSVs.
    found = messages(result)
    assert found and all("image file is missing" in m or "folder is missing" in m for m in found)


@pytest.mark.slow  # 150,000 rows: about 4 s
def test_parses_the_full_real_imet_labels_and_drops_rare_ones():
    result = scan(shared_path("imet2019"), DataConfig(competition="imet2019"))
    raw = result.raw
    assert len(raw.train_ids) == 109237 and len(raw.test_ids) == 38801 and len(raw.classes) == 1103
    labels = encode_labels(raw.train_tags, raw.classes)
    assert labels.sum(axis=1).mean() == pytest.approx(3.17, abs=0.01)
    kept, classes, dropped = drop_rare_labels(labels, raw.classes, 3)
    assert len(dropped) == 26 and all(n < 3 for n in dropped.values())
    assert kept.shape == (109237, 1103 - 26) and set(classes).isdisjoint(dropped)
    found = messages(result)  # no images ship with the real iMet labels
    assert found and all("image folder is missing" in m for m in found)


def test_decodes_real_cmyk_chips_to_the_same_rgb_as_pillow():
    chips = sorted(shared_path("planet", "train-jpg").glob("*.jpg"))[:5]
    assert len(chips) == 5  # of the 27 real chips; an empty folder would make the loop check nothing
    for chip in chips:
        assert Image.open(chip).mode == "CMYK"
        ours = read_image(chip).astype(np.int16)
        pillow = np.asarray(Image.open(chip).convert("RGB")).astype(np.int16)
        assert ours.shape == (256, 256, 3)
        assert np.abs(ours - pillow).max() <= 2  # the two decoders differ by rounding only


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda f: f.loc.__setitem__((4, "tags"), "clear primray"), "train_v2.csv:6: unknown label 'primray'"),
        (lambda f: f.loc.__setitem__((2, "tags"), ""), "train_v2.csv:4: empty labels cell for 'train_2'"),
        (lambda f: f.loc.__setitem__((9, "image_name"), "train_0"), "train_v2.csv:11: duplicate id 'train_0'"),
    ],
)
def test_bad_training_rows_name_file_row_and_fix(planet_copy, edit, expected):
    edit_csv(planet_copy / "train_v2.csv", edit)
    result = scan(planet_copy)
    assert len(result.problems) == 1 and not result.fatal
    assert expected in messages(result)[0] and "fix:" in messages(result)[0]
    with pytest.raises(DataProblems, match=expected.split(":")[-1].strip()):
        result.usable(skip_bad_rows=False)
    assert len(result.usable(skip_bad_rows=True).train_ids) == 39


def test_missing_columns_and_malformed_csv_are_fatal(planet_copy):
    edit_csv(planet_copy / "train_v2.csv", lambda f: f.rename(columns={"tags": "labels"}, inplace=True))
    result = scan(planet_copy)
    assert result.fatal and "train_v2.csv:1: missing column(s) ['tags']" in messages(result)[0]
    (planet_copy / "train_v2.csv").write_bytes(b'image_name,tags\ntrain_0,"clear\ntrain_1,a,b,c\n')
    assert "malformed CSV" in messages(scan(planet_copy))[0]
    (planet_copy / "train_v2.csv").unlink()
    assert "train_v2.csv: the training labels file is missing" in messages(scan(planet_copy))[0]
    with pytest.raises(DataProblems):
        scan(planet_copy).usable(skip_bad_rows=True)


def test_missing_corrupt_and_truncated_images(planet_copy):
    (planet_copy / "train-jpg" / "train_3.jpg").write_bytes(b"not a jpeg")
    data = (planet_copy / "train-jpg" / "train_5.jpg").read_bytes()
    (planet_copy / "train-jpg" / "train_5.jpg").write_bytes(data[: len(data) - 40])
    (planet_copy / "train-jpg" / "train_7.jpg").unlink()
    (planet_copy / "train-jpg" / "train_8.jpg").write_bytes(b"")
    (planet_copy / "train-jpg" / "train_4.jpg").write_bytes(b"\xff\xd8\xff\xda" + bytes(range(200)) + b"\xff\xd9")
    assert len(scan(planet_copy).problems) == 4  # the cheap byte checks miss only the well-formed but corrupt one
    found = "\n".join(messages(scan(planet_copy, decode_images=True)))
    assert "train_3.jpg: train image: not an image file" in found
    assert "train_4.jpg: train image: image cannot be decoded" in found
    assert "train_5.jpg: train image: image file is truncated" in found
    assert "train_7.jpg: train image: image file is missing" in found
    assert "train_8.jpg: train image: image file is empty" in found
    with pytest.raises(MlicError, match="truncated"):
        read_image(planet_copy / "train-jpg" / "train_5.jpg")


def test_test_set_problems_cannot_be_skipped(planet_copy):
    shutil.copy(planet_copy / "test-jpg" / "test_0.jpg", planet_copy / "test-jpg" / "test_999.jpg")
    (planet_copy / "test-jpg" / "test_4.jpg").unlink()
    result = scan(planet_copy)
    found = "\n".join(messages(result))
    assert "test_4.jpg: test image: image file is missing" in found
    assert "sample_submission_v2.csv: 1 test image(s) in" in found and "test_999.jpg" in found
    with pytest.raises(DataProblems):
        result.usable(skip_bad_rows=True)


def write_image(path, mode, size):
    rng = np.random.default_rng(len(str(path)))
    channels = {"L": 1, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8).squeeze()
    Image.fromarray(array, mode=mode).save(path)


@pytest.fixture
def folder_dataset(tmp_path):
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "holdout").mkdir()
    kinds = [
        ("a.jpg", "RGB", (40, 30)),
        ("b.png", "L", (20, 20)),
        ("c.png", "RGBA", (33, 50)),
        ("d.jpg", "CMYK", (64, 64)),
    ]
    for name, mode, size in kinds:
        write_image(root / "images" / name, mode, size)
    for name in ("x.png", "y.jpg"):
        write_image(root / "holdout" / name, "RGB", (16, 16))
    pd.DataFrame({"file": [k[0] for k in kinds], "labels": ["cat", "cat dog", "bird", "dog"]}).to_csv(
        root / "labels.csv", index=False
    )
    return root


def test_folder_reader_takes_any_image_kind(folder_dataset):
    cfg = DataConfig(
        competition="folder",
        folder=FolderConfig(
            train_csv="labels.csv", id_column="file", tags_column="labels", train_dir="images", test_dir="holdout"
        ),
    )
    raw = get_competition(cfg).read(folder_dataset)
    assert raw.classes == ("bird", "cat", "dog") and raw.train_tags[1] == ["cat", "dog"]
    assert raw.test_ids == ["x.png", "y.jpg"]
    for path in raw.train_paths:
        image = read_image(path)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def test_folder_reader_one_hot_columns(folder_dataset):
    frame = pd.DataFrame({"id": ["a", "d"], "cat": ["1", "0"], "dog": ["0", "2"]})
    frame.to_csv(folder_dataset / "onehot.csv", index=False)
    cfg = DataConfig(
        competition="folder",
        folder=FolderConfig(
            train_csv="onehot.csv",
            tags_column="",
            label_columns=("cat", "dog"),
            train_dir="images",
            test_dir="holdout",
            image_ext=".jpg",
        ),
    )
    result = get_competition(cfg).scan(folder_dataset)
    assert result.raw.classes == ("cat", "dog") and result.raw.train_tags[0] == ["cat"]
    assert messages(result) == [
        f"{folder_dataset / 'onehot.csv'}:3: dog is '2', not 0 or 1\n  fix: one-hot label columns hold 0 or 1"
    ]


@pytest.fixture
def imet_copy(tmp_path):
    root = tmp_path / "imet"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
    pd.DataFrame({"attribute_id": ["0", "1", "2"], "attribute_name": ["culture::a", "tag::b", "tag::c"]}).to_csv(
        root / "labels.csv", index=False
    )
    pd.DataFrame({"id": ["i1", "i2", "i3"], "attribute_ids": ["2 0", "1", "0 7"]}).to_csv(
        root / "train.csv", index=False
    )
    pd.DataFrame({"id": ["t1"], "attribute_ids": ["0"]}).to_csv(root / "sample_submission.csv", index=False)
    for name in ("train/i1", "train/i2", "train/i3", "test/t1"):
        cv2.imwrite(str(root / f"{name}.png"), np.full((24, 24, 3), 90, np.uint8))
    return root


def test_imet_reader_checks_attribute_ids_and_png_truncation(imet_copy):
    data = (imet_copy / "train" / "i2.png").read_bytes()
    (imet_copy / "train" / "i2.png").write_bytes(data[:-20])
    result = scan(imet_copy, DataConfig(competition="imet2019"))
    found = messages(result)
    assert any("train.csv:4: unknown label '7' for 'i3'" in m for m in found)
    assert any("i2.png: train image: image file is truncated (PNG has no IEND chunk)" in m for m in found)
    assert result.raw.train_tags[0] == ["0", "2"]  # attribute ids in numeric order
    assert len(result.usable(skip_bad_rows=True).train_ids) == 1
