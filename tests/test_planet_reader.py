import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from mlic.competitions import get_competition
from mlic.competitions.planet import PLANET_TAGS
from mlic.errors import MlicError
from mlic.images import read_image


@pytest.fixture
def planet_copy(sample_competition, tmp_path):
    root = tmp_path / "planet"
    shutil.copytree(sample_competition, root)
    return root


def test_reads_the_sample_competition(sample_competition):
    raw = get_competition("planet").read(sample_competition)
    assert raw.classes == PLANET_TAGS
    assert len(raw.train_ids) == 40 and len(raw.test_ids) == 12
    assert all(p.is_file() for p in raw.train_paths + raw.test_paths)
    assert read_image(raw.train_paths[0]).shape == (32, 32, 3)


def test_reads_the_full_real_train_labels():
    root = shared_path("planet")
    raw = get_competition("planet").read(root)
    assert len(raw.train_ids) == 40479 and len(raw.test_ids) == 61191
    assert np.mean([len(t) for t in raw.train_tags]) == pytest.approx(2.87, abs=0.01)
    assert raw.test_paths[-1].parent.name == "test-jpg-additional" and raw.test_paths[0].parent.name == "test-jpg"


def test_decodes_real_cmyk_chips_to_rgb():
    chips = sorted(shared_path("planet", "train-jpg").glob("*.jpg"))[:3]
    for chip in chips:
        image = read_image(chip)
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert 10 < image.mean() < 245  # a correct decode, not an inverted or blank one


def _edit_train(root, edit):
    path = root / "train_v2.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(frame)
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda f: f.__setitem__("tags", f["tags"].where(f.index != 4, "clear primray")),
            "row 6|:6: unknown tag 'primray'",
        ),
        (lambda f: f.__setitem__("tags", f["tags"].where(f.index != 2, "")), ":4: empty tags cell"),
        (lambda f: f.__setitem__("image_name", f["image_name"].where(f.index != 9, "train_0")), ":11: duplicate id"),
        (lambda f: f.rename(columns={"tags": "labels"}, inplace=True), ":1: missing column(s) ['tags']"),
    ],
)
def test_bad_training_csv_names_file_row_and_fix(planet_copy, edit, message):
    path = _edit_train(planet_copy, edit)
    with pytest.raises(MlicError) as info:
        get_competition("planet").read(planet_copy)
    text = str(info.value)
    assert str(path) in text and "fix:" in text
    assert any(m in text for m in message.split("|"))


def test_missing_and_corrupt_images_are_named(planet_copy):
    (planet_copy / "train-jpg" / "train_3.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(MlicError, match="train_3.jpg: image cannot be decoded"):
        read_image(planet_copy / "train-jpg" / "train_3.jpg")
    with pytest.raises(MlicError, match="train_99.jpg: image file is missing"):
        read_image(planet_copy / "train-jpg" / "train_99.jpg")
    (planet_copy / "train_v2.csv").unlink()
    with pytest.raises(MlicError, match="train_v2.csv: the Planet training labels file is missing"):
        get_competition("planet").read(planet_copy)


def test_submission_is_in_the_exact_format(tmp_path):
    out = tmp_path / "sub.csv"
    get_competition("planet").write_submission(out, ["test_0", "file_1"], [["clear", "primary"], ["cloudy"]])
    assert out.read_text() == "image_name,tags\ntest_0,clear primary\nfile_1,cloudy\n"
