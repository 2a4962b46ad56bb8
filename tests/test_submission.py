import sys

import pandas as pd
import pytest
from conftest import shared_path

from mlic.data.competitions.planet import PLANET_TAGS
from mlic.data.download import download
from mlic.data.scoring import score_submission
from mlic.data.submission import SubmissionFormat, read_submission, validate_submission, write_submission
from mlic.errors import MlicError

FMT = SubmissionFormat("image_name", "tags", "sample_submission_v2.csv")
IMET = SubmissionFormat("id", "attribute_ids", "sample_submission.csv")
VOCAB = ("a", "b", "c")
IDS = [f"t{i}" for i in range(6)]


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.csv"
    write_submission(path, FMT, IDS, [["a"]] * len(IDS))
    return path


def write_text(tmp_path, text, name="sub.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def rows_text(rows, header="image_name,tags"):
    return "\n".join([header, *(f"{i},{t}" for i, t in rows)]) + "\n"


def good_rows():
    return [(i, "a b") for i in IDS]


def problems_for(tmp_path, sample, rows, **kwargs):
    return validate_submission(write_text(tmp_path, rows_text(rows)), FMT, sample, VOCAB, **kwargs)


def only(problems):
    assert len(problems) == 1, [p.format() for p in problems]
    return problems[0]


def test_valid_submission_has_no_problems(tmp_path, sample):
    path = tmp_path / "sub.csv"
    write_submission(path, FMT, IDS, [["a", "b"], ["c"], ["a"], ["b"], ["a", "c"], ["a", "b", "c"]])
    assert validate_submission(path, FMT, sample, VOCAB) == []
    assert list(read_submission(path, FMT).columns) == ["image_name", "tags"]


def test_extra_spaces_between_labels_are_accepted(tmp_path, sample):
    rows = good_rows()
    rows[2] = ("t2", " a   b ")
    assert problems_for(tmp_path, sample, rows) == []


def test_wrong_header(tmp_path, sample):
    path = write_text(tmp_path, rows_text(good_rows(), header="id,tags"))
    problem = only(validate_submission(path, FMT, sample, VOCAB))
    assert problem.row == 1 and "wrong header 'id,tags'" in problem.message
    assert "image_name,tags" in problem.fix and str(path) in problem.format()
    with pytest.raises(MlicError, match="wrong header"):
        read_submission(path, FMT)


def test_header_in_wrong_order(tmp_path, sample):
    path = write_text(tmp_path, "tags,image_name\n" + "".join(f"a,{i}\n" for i in IDS))
    problems = validate_submission(path, FMT, sample, VOCAB)
    assert problems[0].row == 1 and "wrong header 'tags,image_name'" in problems[0].message


def test_missing_ids(tmp_path, sample):
    rows = good_rows()
    del rows[3]
    problems = problems_for(tmp_path, sample, rows)
    messages = "\n".join(p.format() for p in problems)
    assert "5 rows, but the sample submission has 6" in messages
    missing = next(p for p in problems if "missing" in p.message)
    assert "1 id(s) of the sample submission are missing, e.g. 't3'" in missing.message and missing.row == 5
    assert not any("order" in p.message for p in problems)  # one dropped row does not make the rest misplaced


def test_extra_id(tmp_path, sample):
    problems = problems_for(tmp_path, sample, [*good_rows(), ("zzz", "a")])
    extra = next(p for p in problems if "not in the sample" in p.message)
    assert extra.message == "id 'zzz' is not in the sample submission" and extra.row == 8
    assert any("7 rows" in p.message for p in problems)


def test_duplicate_id(tmp_path, sample):
    rows = good_rows()
    rows[4] = ("t1", "a")
    problems = problems_for(tmp_path, sample, rows)
    dup = next(p for p in problems if "duplicate id" in p.message)
    assert dup.message == "duplicate id 't1' (first at line 3)" and dup.row == 6
    assert any("'t4'" in p.message and "missing" in p.message for p in problems)


def test_wrong_order(tmp_path, sample):
    rows = good_rows()
    rows[2], rows[3] = rows[3], rows[2]
    problem = only(problems_for(tmp_path, sample, rows))
    assert problem.row == 4 and "found 't3' where the sample has 't2'" in problem.message
    assert "order of" in problem.fix


def test_unknown_label(tmp_path, sample):
    rows = good_rows()
    rows[1] = ("t1", "a Zebra b")
    problem = only(problems_for(tmp_path, sample, rows))
    assert problem.row == 3 and "unknown label(s) 'Zebra'" in problem.message


def test_duplicate_label_in_row(tmp_path, sample):
    rows = good_rows()
    rows[5] = ("t5", "a b a")
    problem = only(problems_for(tmp_path, sample, rows))
    assert problem.row == 7 and "duplicate label(s) 'a'" in problem.message


def test_empty_label_cell_unless_allowed(tmp_path, sample):
    rows = good_rows()
    rows[0] = ("t0", "")
    problem = only(problems_for(tmp_path, sample, rows))
    assert problem.row == 2 and "empty label cell" in problem.message
    assert problems_for(tmp_path, sample, rows, allow_empty=True) == []


def test_listing_is_capped_with_a_summary(tmp_path, sample):
    rows = [(i, "bad") for i in IDS]
    problems = problems_for(tmp_path, sample, rows, max_listed=2)
    assert [p.row for p in problems] == [2, 3, 4]
    assert problems[-1].message == "... and 4 more rows with unknown labels"


def test_row_with_too_many_fields(tmp_path, sample):
    path = write_text(tmp_path, rows_text(good_rows()).replace("t2,a b", "t2,a,b"))
    problem = only(validate_submission(path, FMT, sample, VOCAB))
    assert problem.row == 4 and "malformed CSV" in problem.message and "Expected 2 fields" in problem.message


def test_first_row_with_too_many_fields_is_not_taken_as_an_index(tmp_path, sample):
    path = write_text(tmp_path, rows_text(good_rows()).replace("t0,a b", "t0,a,b"))
    problem = only(validate_submission(path, FMT, sample, VOCAB))
    assert problem.row == 2 and "malformed CSV" in problem.message


def test_binary_garbage(tmp_path, sample):
    path = tmp_path / "sub.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    problem = only(validate_submission(path, FMT, sample, VOCAB))
    assert "not UTF-8 text" in problem.message and str(path) in problem.format()


def test_empty_file(tmp_path, sample):
    problem = only(validate_submission(write_text(tmp_path, ""), FMT, sample, VOCAB))
    assert problem.message == "file is empty" and problem.row == 1


def test_missing_file(tmp_path, sample):
    problem = only(validate_submission(tmp_path / "nope.csv", FMT, sample, VOCAB))
    assert problem.message == "file is missing" and str(tmp_path / "nope.csv") in problem.format()
    with pytest.raises(MlicError, match="file is missing"):
        read_submission(tmp_path / "nope.csv", FMT)


@pytest.mark.slow  # 61,191 rows written and validated: over a second
def test_real_planet_sample_submission(tmp_path):
    sample_path = shared_path("planet", "sample_submission_v2.csv")
    ids = list(pd.read_csv(sample_path, dtype=str)["image_name"])
    assert len(ids) == 61191
    path = tmp_path / "planet.csv"
    write_submission(path, FMT, ids, [["clear", "primary"]] * len(ids))
    assert validate_submission(path, FMT, sample_path, PLANET_TAGS) == []


def test_real_imet_sample_submission(tmp_path):
    sample_path = shared_path("imet2019", "sample_submission.csv")
    vocab = pd.read_csv(shared_path("imet2019", "labels.csv"), dtype=str)["attribute_id"]
    assert len(vocab) == 1103
    ids = list(pd.read_csv(sample_path, dtype=str)["id"])
    assert len(ids) == 38801
    path = tmp_path / "imet.csv"
    write_submission(path, IMET, ids, [["0", "1"]] * len(ids))
    assert validate_submission(path, IMET, sample_path, vocab) == []


def test_real_size_dropped_and_swapped_rows(tmp_path):
    sample_path = shared_path("planet", "sample_submission_v2.csv")
    ids = list(pd.read_csv(sample_path, dtype=str)["image_name"])
    dropped = ids.pop(30000)
    ids[50000], ids[50001] = ids[50001], ids[50000]
    path = tmp_path / "planet.csv"
    write_submission(path, FMT, ids, [["clear"]] * len(ids))
    problems = validate_submission(path, FMT, sample_path, PLANET_TAGS)
    messages = [p.message for p in problems]
    assert len(problems) == 3, messages
    assert "61190 rows, but the sample submission has 61191" in messages[0]
    assert f"e.g. {dropped!r}" in messages[1] and problems[1].row == 30002
    assert problems[2].row == 50002 and f"found {ids[50000]!r} where the sample has {ids[50001]!r}" in messages[2]


def test_score_tiny_hand_example(tmp_path):
    fmt = SubmissionFormat("id", "labels", "sample.csv")
    truth = write_text(tmp_path, "id,labels,Usage\nx,a b,Public\ny,c,Private\n", "solution.csv")
    pred = write_text(tmp_path, "id,labels\ny,c\nx,a c\n", "pred.csv")
    scores = score_submission(pred, truth, fmt)
    # x: tp=1, fp=1, fn=1 -> F2 = 5/(5+4+1) = 0.5; y: perfect -> 1.0.
    assert scores["f2_samples"] == pytest.approx(0.75)
    assert scores["rows"] == 2 and scores["mean_labels_predicted"] == 1.5 and scores["mean_labels_true"] == 1.5
    assert score_submission(pred, truth, fmt, beta=1.0)["f1_samples"] == pytest.approx(0.75)
    perfect = write_text(tmp_path, "id,labels\nx,b a\ny,c\n", "perfect.csv")
    assert score_submission(perfect, truth, fmt) == {
        "f2_samples": 1.0,
        "f1_micro": 1.0,
        "f1_macro": 1.0,
        "rows": 2,
        "mean_labels_predicted": 1.5,
        "mean_labels_true": 1.5,
    }


def test_score_single_row_f2_half(tmp_path):
    fmt = SubmissionFormat("id", "labels", "sample.csv")
    truth = write_text(tmp_path, "id,labels\nx,a b\n", "solution.csv")
    pred = write_text(tmp_path, "id,labels\nx,a c\n", "pred.csv")
    assert score_submission(pred, truth, fmt)["f2_samples"] == 0.5


def test_score_missing_solution_id(tmp_path):
    fmt = SubmissionFormat("id", "labels", "sample.csv")
    truth = write_text(tmp_path, "id,labels\nx,a\ny,b\nz,c\n", "solution.csv")
    pred = write_text(tmp_path, "id,labels\nx,a\n", "pred.csv")
    with pytest.raises(MlicError, match=r"2 id\(s\) of the solution are missing from the submission, e.g. 'y', 'z'"):
        score_submission(pred, truth, fmt)


def test_score_real_planet_32px():
    solution = shared_path("planet-32px", "solution.csv")
    assert score_submission(solution, solution, FMT)["f2_samples"] == 1.0
    scores = score_submission(shared_path("planet-32px", "sample_submission_v2.csv"), solution, FMT)
    assert scores["rows"] == 4000 and 0.3 < scores["f2_samples"] < 0.9


@pytest.mark.slow  # 38,801 rows, scored three times: over a second
def test_score_real_imet_size(tmp_path):
    sample_path = shared_path("imet2019", "sample_submission.csv")
    scores = score_submission(sample_path, sample_path, IMET)
    assert scores["f2_samples"] == 1.0 and scores["rows"] == 38801
    # At full size, with varied labels over the whole vocabulary: the submission lists the rows in reverse (they
    # are matched by id) and gets one of the two labels wrong in every third row (F2 of such a row: 5/10 = 0.5).
    ids = list(pd.read_csv(sample_path, dtype=str)["id"])
    truth = [[str(i % 1103), str((i + 1) % 1103)] for i in range(len(ids))]
    guess = [[a, str((i + 2) % 1103)] if i % 3 == 0 else [a, b] for i, (a, b) in enumerate(truth)]
    write_submission(tmp_path / "solution.csv", IMET, ids, truth)
    write_submission(tmp_path / "sub.csv", IMET, ids[::-1], guess[::-1])
    scores = score_submission(tmp_path / "sub.csv", tmp_path / "solution.csv", IMET)
    wrong = len(range(0, len(ids), 3))
    assert scores["rows"] == 38801 and scores["mean_labels_predicted"] == scores["mean_labels_true"] == 2.0
    assert scores["f2_samples"] == pytest.approx(1 - 0.5 * wrong / len(ids), abs=1e-6)
    # micro F1 over all rows: tp = 2N - wrong, fp = fn = wrong
    assert scores["f1_micro"] == pytest.approx((2 * len(ids) - wrong) / (2 * len(ids)), abs=1e-6)


def test_download_without_kaggle_explains_manual_placement(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    message = download("planet", tmp_path / "planet")
    assert "pip install kaggle" in message and "kaggle.json" in message
    for name in ("train_v2.csv", "train-jpg/", "test-jpg/", "test-jpg-additional/", "sample_submission_v2.csv"):
        assert name in message
    assert "data.root" in message and not (tmp_path / "planet").exists()
    assert "labels.csv" in download("imet2019", tmp_path / "imet")


def test_download_unknown_competition(tmp_path):
    with pytest.raises(MlicError, match="unknown competition 'mnist'") as info:
        download("mnist", tmp_path)
    assert "imet2019, planet" in info.value.fix


FAKE_KAGGLE = """
import zipfile
from pathlib import Path


class _Api:
    def competition_download_files(self, slug, path, quiet=True):
        inner = Path(path) / "inner.zip"
        with zipfile.ZipFile(inner, "w") as zf:
            zf.writestr("sample_submission_v2.csv", "image_name,tags\\n")
        with zipfile.ZipFile(Path(path) / f"{slug}.zip", "w") as zf:
            zf.writestr("train_v2.csv", "image_name,tags\\n")
            zf.write(inner, "sample_submission_v2.csv.zip")
        inner.unlink()


api = _Api()
"""


def test_download_with_a_fake_kaggle_package_unzips_nested_archives(tmp_path, monkeypatch):
    package = tmp_path / "site" / "kaggle"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_KAGGLE)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "not-a-real-key")
    dest = tmp_path / "planet"
    try:
        message = download("planet", dest)
    finally:
        sys.modules.pop("kaggle", None)  # the fake must not leak into other tests
    assert "unzipped 2 archive(s)" in message and "data.root" in message
    assert (dest / "train_v2.csv").is_file() and (dest / "sample_submission_v2.csv").is_file()
