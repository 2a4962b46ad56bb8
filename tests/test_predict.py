"""`mlic predict` on a finished run: the pipeline's own test probabilities and tags, batching, inputs, bad files."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mlic.cli import main
from mlic.data.images import read_image

pytestmark = pytest.mark.slow

# The CSV keeps 6 decimals, so two runs whose float32 probabilities agree to ~1e-7 can still differ by one unit
# in the last written digit.
CSV_ATOL = 2e-6


def images_of(run: Path) -> Path:
    return run / "data" / "raw" / "sample" / "test-jpg"


def predict(run: Path, *args: str | Path) -> int:
    return main(["predict", "--run", str(run), *map(str, args)])


def read_predictions(path: Path) -> pd.DataFrame:
    """The predictions CSV indexed by image id (the file stem)."""
    frame = pd.read_csv(path, keep_default_na=False)
    return frame.set_index(frame["image"].map(lambda p: Path(p).stem))


@pytest.fixture(scope="module")
def pipeline(finished_run):
    """The pipeline's blended test probabilities (by id) and its submission's tags (by id)."""
    with np.load(finished_run / "data" / "processed" / "submit" / "test_predictions.npz") as saved:
        classes = [str(c) for c in saved["classes"]]
        probs = pd.DataFrame(saved["probs"], index=[str(i) for i in saved["ids"]], columns=classes)
    submission = pd.read_csv(finished_run / "submissions" / "submission.csv", keep_default_na=False)
    return probs, submission.set_index("image_name")["tags"]


@pytest.fixture(scope="module")
def folder_csv(finished_run, tmp_path_factory) -> Path:
    """`mlic predict` on the run's whole test folder, default batch size."""
    out = tmp_path_factory.mktemp("predict") / "predictions.csv"
    assert predict(finished_run, images_of(finished_run), "--out", out) == 0
    return out


def test_predict_on_the_test_folder_reproduces_the_pipeline(folder_csv, pipeline, finished_run):
    probs, tags = pipeline
    frame = pd.read_csv(folder_csv, keep_default_na=False)
    assert list(frame.columns) == ["image", "tags", *probs.columns]
    expected_files = sorted(images_of(finished_run).glob("*.jpg"))
    assert list(frame["image"]) == [str(p) for p in expected_files]  # a folder gives its files, sorted
    frame = frame.set_index(frame["image"].map(lambda p: Path(p).stem))
    assert sorted(frame.index) == sorted(probs.index) and len(frame) == 30
    np.testing.assert_allclose(frame[probs.columns].to_numpy(), probs.loc[frame.index].to_numpy(), rtol=0, atol=1e-5)
    assert frame["tags"].to_dict() == tags.loc[frame.index].to_dict()
    assert all(frame["tags"] != "")  # thresholds.min_labels is 1


def test_batch_size_and_mixed_files_and_folders_give_the_same_rows(folder_csv, finished_run, tmp_path):
    reference = read_predictions(folder_csv)
    source = images_of(finished_run)
    folder = tmp_path / "more"
    folder.mkdir()
    for k in range(10, 18):
        shutil.copy(source / f"test_{k}.jpg", folder)
    (folder / "test_17.jpg").rename(folder / "test_17.JPG")  # suffixes match whatever their case
    image = read_image(source / "test_20.jpg")
    assert cv2.imwrite(str(folder / "test_20.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # same pixels, lossless
    (folder / "notes.txt").write_text("not an image: folders skip it")
    files = [source / "test_7.jpg", source / "test_2.jpg", source / "test_25.jpg"]  # kept in the order given
    out = tmp_path / "sub" / "mixed.csv"

    assert predict(finished_run, *files, folder, "--out", out, "--batch-size", "7") == 0

    frame = read_predictions(out)
    expected = ["test_7", "test_2", "test_25", *(f"test_{k}" for k in range(10, 18)), "test_20"]
    assert list(frame.index) == expected  # 12 rows over two batches of 7; notes.txt left out
    assert Path(frame.loc["test_17", "image"]).name == "test_17.JPG"
    assert Path(frame.loc["test_20", "image"]).name == "test_20.png"
    classes = list(frame.columns[2:])
    assert classes == list(reference.columns[2:])
    np.testing.assert_allclose(
        frame[classes].to_numpy(), reference.loc[expected, classes].to_numpy(), rtol=0, atol=CSV_ATOL
    )
    assert frame["tags"].to_dict() == reference.loc[expected, "tags"].to_dict()


@pytest.fixture
def bad_folder(finished_run, tmp_path) -> Path:
    """Three good test images, and three files with byte-level problems."""
    source = images_of(finished_run)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("test_0.jpg", "test_1.jpg", "test_2.jpg"):
        shutil.copy(source / name, folder)
    data = (source / "test_3.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.jpg").write_text("this is not a JPEG")
    (folder / "empty.jpg").write_bytes(b"")
    return folder


# Right signature, start of scan and end-of-image marker, so it passes the cheap byte checks; decoding fails.
UNDECODABLE = b"\xff\xd8\xff\xda" + bytes(range(256)) * 2 + b"\xff\xd9"


def test_unreadable_images_fail_naming_each_file_and_write_nothing(finished_run, bad_folder, tmp_path, capsys):
    out = tmp_path / "out" / "predictions.csv"
    assert predict(finished_run, bad_folder, "--out", out) == 2
    err = capsys.readouterr().err
    assert "mlic predict: error: 3 of 6 image(s) cannot be read; nothing was written" in err
    assert f"{bad_folder / 'truncated.jpg'}: image file is truncated" in err
    assert f"{bad_folder / 'text.jpg'}: not an image file" in err
    assert f"{bad_folder / 'empty.jpg'}: image file is empty" in err
    assert "test_0.jpg" not in err and "--skip-unreadable" in err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))  # no temp file left

    # a file that passes the byte checks but does not decode is caught when its batch is decoded
    only_decode = tmp_path / "decode"
    only_decode.mkdir()
    shutil.copy(bad_folder / "test_0.jpg", only_decode)
    (only_decode / "garbled.jpg").write_bytes(UNDECODABLE)
    assert predict(finished_run, only_decode, "--out", out) == 2
    err = capsys.readouterr().err
    assert "1 image(s) cannot be decoded; nothing was written" in err
    assert f"{only_decode / 'garbled.jpg'}: image cannot be decoded" in err
    assert not out.exists()


def test_skip_unreadable_predicts_the_good_images_and_lists_the_rest(
    finished_run, bad_folder, folder_csv, tmp_path, capsys
):
    (bad_folder / "garbled.jpg").write_bytes(UNDECODABLE)
    out = tmp_path / "predictions.csv"
    assert predict(finished_run, bad_folder, "--out", out, "--skip-unreadable", "--batch-size", "2") == 0
    stdout = capsys.readouterr().out
    assert "skipped 4 unreadable image(s):" in stdout
    for name in ("truncated.jpg", "text.jpg", "empty.jpg", "garbled.jpg"):
        assert str(bad_folder / name) in stdout
    assert "predict: 3 image(s)" in stdout
    frame = read_predictions(out)
    assert list(frame.index) == ["test_0", "test_1", "test_2"]
    reference = read_predictions(folder_csv).loc[frame.index]
    classes = list(frame.columns[2:])
    np.testing.assert_allclose(frame[classes].to_numpy(), reference[classes].to_numpy(), rtol=0, atol=CSV_ATOL)
    assert list(frame["tags"]) == list(reference["tags"])


def test_missing_paths_and_empty_folders_are_user_errors(finished_run, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    missing = tmp_path / "no_such_image.jpg"
    assert predict(finished_run, images_of(finished_run) / "test_0.jpg", missing, "--out", out) == 2
    err = capsys.readouterr().err
    assert f"mlic predict: error: {missing}: no such file or folder" in err

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    assert predict(finished_run, empty, "--out", out) == 2
    err = capsys.readouterr().err
    assert f"mlic predict: error: {empty}: no image files to predict" in err and ".jpg" in err
    assert not out.exists()


def test_a_run_folder_without_params_is_a_user_error(finished_run, tmp_path, capsys):
    image = images_of(finished_run) / "test_0.jpg"
    assert main(["predict", "--run", str(tmp_path), str(image), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "mlic predict: error:" in err and "params.yaml" in err and str(tmp_path) in err
    assert not (tmp_path / "p.csv").exists()


def test_bad_batch_size_and_device_are_user_errors(finished_run, tmp_path, capsys):
    image, out = images_of(finished_run) / "test_0.jpg", tmp_path / "p.csv"
    for value in ("0", "-1"):
        assert predict(finished_run, image, "--out", out, "--batch-size", value) == 2
        assert f"--batch-size must be >= 1, got {value}" in capsys.readouterr().err
    assert predict(finished_run, image, "--out", out, "--device", "tpu") == 2
    assert "--device must be cpu, cuda, cuda:N or auto, got 'tpu'" in capsys.readouterr().err
    if not torch_cuda_available():
        assert predict(finished_run, image, "--out", out, "--device", "cuda") == 2
        assert "no CUDA device is available" in capsys.readouterr().err
    assert not out.exists()


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_skip_unreadable_with_nothing_readable_is_an_error(finished_run, tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    out = tmp_path / "p.csv"
    assert predict(finished_run, tmp_path / "empty.jpg", "--out", out, "--skip-unreadable") == 2
    assert "none of the 1 image(s) can be read" in capsys.readouterr().err
    assert not out.exists()
