"""Upload a submission to a Kaggle competition with the optional `kaggle` package."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from mlic.data.download import KAGGLE_SLUGS
from mlic.errors import MlicError

INSTALL_FIX = "pip install kaggle (in this project: .venv/bin/pip install kaggle), then run this again"
CREDENTIALS_FIX = (
    "create an API token at https://www.kaggle.com/settings (Account > API > Create New Token) and save it as "
    "~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY; then run this again"
)


def kaggle_slug(competition: str, slug: str | None = None) -> str:
    """The Kaggle competition to submit to: `slug` when given, else the reader's own competition.

    Args:
        competition: The reader's name (`data.competition`).
        slug: An explicit Kaggle competition slug (`--slug`), which wins.

    Raises:
        MlicError: No slug given and the reader has no Kaggle competition of its own (a `folder` dataset).
    """
    if slug:
        return slug
    if competition not in KAGGLE_SLUGS:
        raise MlicError(
            f"the {competition!r} reader has no Kaggle competition to submit to",
            fix="pass --slug with the competition's name in its URL (kaggle.com/c/<slug>)",
        )
    return KAGGLE_SLUGS[competition]


def kaggle_api() -> Any:
    """The kaggle package's authenticated API client.

    Importing `kaggle` authenticates already, and depending on its version a missing credential raises OSError or
    calls exit(1) after printing; both, and whatever it prints, become one MlicError.

    Raises:
        MlicError: The package is missing or broken, or it found no usable credentials.
    """
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            import kaggle  # optional dependency

            kaggle.api.authenticate()
    except ImportError as exc:
        raise MlicError(f"the kaggle package is not installed ({exc})", fix=INSTALL_FIX) from None
    except (Exception, SystemExit) as exc:  # SystemExit: recent kaggle versions exit(1) without credentials
        detail = str(exc) if isinstance(exc, Exception) else ""
        detail = detail or printed.getvalue().strip() or type(exc).__name__
        raise MlicError(f"Kaggle authentication failed: {detail}", fix=CREDENTIALS_FIX) from None
    return kaggle.api


def submit_to_kaggle(api: Any, file: Path, message: str, slug: str) -> None:
    """Upload `file` as a submission to the competition `slug` with the description `message`.

    Raises:
        MlicError: The Kaggle API refused or failed the upload.
    """
    try:
        api.competition_submit(file_name=str(file), message=message, competition=slug, quiet=True)
    except Exception as exc:  # the kaggle package raises many types (HTTP errors, IOError, ValueError, its own)
        raise MlicError(
            f"Kaggle upload to {slug!r} failed: {exc}".strip(),
            path=file,
            fix=f"accept the rules at https://www.kaggle.com/c/{slug}/rules, check the slug, your daily "
            "submission limit and network, then run this again",
        ) from None
