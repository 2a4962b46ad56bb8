"""The mlic tools (check, validate-submission, score, download) and prepare's refusal of bad data, via the CLI."""

import shutil

import pytest
from conftest import shared_path

from mlic.cli import main
from mlic.config import config_from_dict
from mlic.errors import DataProblems
from mlic.stages import prepare


@pytest.fixture
def broken(sample_competition, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(sample_competition, root)
    (root / "train-jpg" / "train_1.jpg").unlink()
    (root / "train-jpg" / "train_2.jpg").write_bytes(b"garbage")
    text = (root / "train_v2.csv").read_text().replace("train_3,", "train_3,clear not_a_tag ", 1)
    (root / "train_v2.csv").write_text(text)
    return root


def test_check_lists_every_problem_at_once(broken, capsys):
    assert main(["check", "--root", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "3 problem(s)" in out
    assert "train_1.jpg: train image: image file is missing" in out
    assert "train_2.jpg: train image: not an image file" in out
    assert "train_v2.csv:5: unknown label 'not_a_tag' for 'train_3'" in out
    assert "prepare.skip_bad_rows: true would drop them" in out


def test_check_passes_a_clean_dataset(sample_competition, capsys):
    assert main(["check", "--root", str(sample_competition)]) == 0
    assert "OK, planet: 40 train and 12 test images, 17 labels" in capsys.readouterr().out


def test_prepare_refuses_bad_data_and_writes_nothing(broken, tmp_path):
    out_dir = tmp_path / "prepared"
    cfg = config_from_dict({"data": {"root": str(broken)}, "prepare": {"out_dir": str(out_dir), "image_size": 16}})
    with pytest.raises(DataProblems, match="3 problem"):
        prepare.main(cfg)
    assert not out_dir.exists() and list(tmp_path.glob(".prepared*")) == []


def test_prepare_can_skip_bad_rows_and_reports_them(broken, tmp_path, capsys):
    out_dir = tmp_path / "prepared"
    cfg = config_from_dict(
        {
            "data": {"root": str(broken), "min_label_count": 0},
            "prepare": {"out_dir": str(out_dir), "image_size": 16, "skip_bad_rows": True},
        }
    )
    prepare.main(cfg)
    assert "skipped 3 training row(s)" in capsys.readouterr().out
    stats = (out_dir / "stats.json").read_text()
    assert '"skipped_train_rows": 3' in stats and '"n_train": 37' in stats


def test_validate_submission_cli(sample_competition, tmp_path, capsys):
    good = tmp_path / "good.csv"
    good.write_text("image_name,tags\n" + "".join(f"test_{i},clear primary\n" for i in range(12)))
    assert main(["validate-submission", str(good), "--root", str(sample_competition)]) == 0
    assert "valid planet submission" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("image_name,tags\n" + "".join(f"test_{i},clear primray\n" for i in range(11)))
    assert main(["validate-submission", str(bad), "--root", str(sample_competition)]) == 1
    out = capsys.readouterr().out
    assert "primray" in out and "test_11" in out


def test_score_cli_on_planet_32px(capsys):
    root = shared_path("planet-32px")
    assert main(["score", str(root / "sample_submission_v2.csv"), "--solution", str(root / "solution.csv")]) == 0
    assert '"f2_samples": 0.64' in capsys.readouterr().out


def test_download_without_credentials_says_where_to_put_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(key, raising=False)
    assert main(["download", "imet2019", "--dest", str(tmp_path / "imet")]) == 0
    out = capsys.readouterr().out
    assert "labels.csv" in out and "data.root" in out
    assert main(["download", "cifar"]) == 2
    assert "unknown competition" in capsys.readouterr().err.lower()
