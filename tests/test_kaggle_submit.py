"""`mlic kaggle-submit`: validation first, then the kaggle client, faked at its API boundary (sys.modules)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pandas as pd
import pytest

from mlic.cli import main
from mlic.data.kaggle_client import kaggle_slug
from mlic.errors import MlicError

PLANET_SLUG = "planet-understanding-the-amazon-from-space"
MESSAGE = "5 folds, tuned F2"


class FakeKaggleApi:
    """Records what the tool asks of `kaggle.api`; `auth_error` makes authenticate() raise it."""

    def __init__(self, auth_error: BaseException | None = None, submit_error: Exception | None = None):
        self.auth_error, self.submit_error = auth_error, submit_error
        self.authenticated = 0
        self.submitted: list[dict] = []

    def authenticate(self) -> None:
        self.authenticated += 1
        if self.auth_error is not None:
            print("Could not find kaggle.json. Make sure it's located in /home/x/.kaggle.")  # as kaggle does
            raise self.auth_error

    def competition_submit(self, file_name: str, message: str, competition: str, quiet: bool = False) -> str:
        self.submitted.append({"file_name": file_name, "message": message, "competition": competition})
        if self.submit_error is not None:
            raise self.submit_error
        return "Successfully submitted"


def install_fake(monkeypatch, api: FakeKaggleApi) -> FakeKaggleApi:
    module = types.ModuleType("kaggle")
    module.api = api
    monkeypatch.setitem(sys.modules, "kaggle", module)
    return api


@pytest.fixture
def valid_file(sample_competition, tmp_path) -> Path:
    """A valid Planet submission: the sample submission's ids, in order, with known tags."""
    ids = pd.read_csv(sample_competition / "sample_submission_v2.csv", dtype=str)["image_name"]
    path = tmp_path / "submission.csv"
    path.write_text("image_name,tags\n" + "".join(f"{i},clear primary\n" for i in ids))
    return path


def submit_args(file: Path, root: Path, *extra: str) -> list[str]:
    return ["kaggle-submit", str(file), "-m", MESSAGE, "--competition", "planet", "--root", str(root), *extra]


@pytest.mark.parametrize(("extra", "slug"), [((), PLANET_SLUG), (("--slug", "my-rerun"), "my-rerun")])
def test_valid_file_is_submitted_with_slug(monkeypatch, capsys, sample_competition, valid_file, extra, slug):
    api = install_fake(monkeypatch, FakeKaggleApi())
    assert main(submit_args(valid_file, sample_competition, *extra)) == 0
    assert api.authenticated == 1
    assert api.submitted == [{"file_name": str(valid_file), "message": MESSAGE, "competition": slug}]
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and str(valid_file) in out[0] and slug in out[0] and MESSAGE in out[0]


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda text: text.replace("test_0,", "test_x,", 1), "test_x"),  # an id the sample submission lacks
        (lambda text: text.replace("clear primary", "clear primray", 1), "primray"),  # a tag Planet lacks
    ],
    ids=["wrong-id", "unknown-tag"],
)
def test_invalid_file_is_refused_before_kaggle(monkeypatch, capsys, sample_competition, valid_file, edit, named):
    valid_file.write_text(edit(valid_file.read_text()))
    api = install_fake(monkeypatch, FakeKaggleApi())
    assert main(submit_args(valid_file, sample_competition)) == 2
    err = capsys.readouterr().err
    assert "not uploaded" in err and named in err and "Traceback" not in err
    assert api.authenticated == 0 and api.submitted == []


def test_missing_package_says_what_to_install(monkeypatch, capsys, sample_competition, valid_file):
    monkeypatch.setitem(sys.modules, "kaggle", None)  # `import kaggle` now raises ImportError
    assert main(submit_args(valid_file, sample_competition)) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("mlic kaggle-submit: error: the kaggle package is not installed")
    assert "pip install kaggle" in captured.err and "Traceback" not in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("auth_error", [OSError("Could not find kaggle.json"), SystemExit(1)], ids=["oserror", "exit"])
def test_failed_authentication_says_what_to_configure(monkeypatch, capsys, sample_competition, valid_file, auth_error):
    api = install_fake(monkeypatch, FakeKaggleApi(auth_error=auth_error))
    assert main(submit_args(valid_file, sample_competition)) == 2
    captured = capsys.readouterr()
    assert "Kaggle authentication failed: Could not find kaggle.json" in captured.err
    assert "~/.kaggle/kaggle.json" in captured.err and "KAGGLE_USERNAME and KAGGLE_KEY" in captured.err
    assert captured.out == ""  # the client's own print was captured into the one message
    assert api.submitted == []


def test_authentication_at_import_is_caught(monkeypatch, capsys, tmp_path, sample_competition, valid_file):
    """The real package authenticates in its __init__ and, in recent versions, calls exit(1) without credentials."""
    package = tmp_path / "site" / "kaggle"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent("""
            print("Could not find kaggle.json. Make sure it's located in /home/x/.kaggle.")
            raise SystemExit(1)
        """)
    )
    monkeypatch.delitem(sys.modules, "kaggle", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert main(submit_args(valid_file, sample_competition)) == 2
    captured = capsys.readouterr()
    assert "Kaggle authentication failed: Could not find kaggle.json" in captured.err and captured.out == ""


def test_upload_failure_is_one_message(monkeypatch, capsys, sample_competition, valid_file):
    install_fake(monkeypatch, FakeKaggleApi(submit_error=RuntimeError("403 Forbidden")))
    assert main(submit_args(valid_file, sample_competition)) == 2
    err = capsys.readouterr().err
    assert f"Kaggle upload to '{PLANET_SLUG}' failed: 403 Forbidden" in err and "/rules" in err
    assert "Traceback" not in err


def test_empty_message_is_refused(monkeypatch, capsys, sample_competition, valid_file):
    api = install_fake(monkeypatch, FakeKaggleApi())
    args = submit_args(valid_file, sample_competition)
    args[args.index("-m") + 1] = "  "
    assert main(args) == 2
    assert "message is empty" in capsys.readouterr().err and api.submitted == []


def test_slug_of_each_reader():
    assert kaggle_slug("planet") == PLANET_SLUG
    assert kaggle_slug("imet2019") == "imet-2019-fgvc6"
    assert kaggle_slug("folder", "my-competition") == "my-competition"
    with pytest.raises(MlicError, match="no Kaggle competition") as info:
        kaggle_slug("folder")
    assert "--slug" in str(info.value)


def test_tool_does_not_import_torch(sample_competition, valid_file):
    code = f"""
import sys
sys.modules["kaggle"] = None
from mlic.cli import main
assert main({submit_args(valid_file, sample_competition)!r}) == 2
assert "torch" not in sys.modules, "kaggle-submit imported torch"
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install kaggle" in result.stderr
