"""Fetch a competition's files with the optional `kaggle` package, or say exactly where to put them by hand."""

from __future__ import annotations

import importlib.util
import os
import zipfile
from pathlib import Path

from mlic.errors import MlicError

KAGGLE_SLUGS = {"planet": "planet-understanding-the-amazon-from-space", "imet2019": "imet-2019-fgvc6"}

# What each competition's reader expects under data.root, with what each entry is.
EXPECTED_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "planet": (
        ("train_v2.csv", "training labels (image_name,tags)"),
        ("train-jpg/", "training chips, train_*.jpg"),
        ("test-jpg/", "test chips, test_*.jpg"),
        ("test-jpg-additional/", "additional test chips, file_*.jpg"),
        ("sample_submission_v2.csv", "sample submission (image_name,tags)"),
    ),
    "imet2019": (
        ("labels.csv", "attribute ids and names (attribute_id,attribute_name)"),
        ("train.csv", "training labels (id,attribute_ids)"),
        ("train/", "training images, <id>.png"),
        ("test/", "test images, <id>.png"),
        ("sample_submission.csv", "sample submission (id,attribute_ids)"),
    ),
}


def download(competition: str, dest: Path) -> str:
    """Download and unzip a competition's files into `dest`, or explain how to get them without raising.

    The `kaggle` package is optional: without it, or without Kaggle credentials, nothing is downloaded and
    the message says how to configure it or where to place each file by hand.

    Args:
        competition: A key of KAGGLE_SLUGS ("planet" or "imet2019").
        dest: The directory to fill; point `data.root` in params.yaml at it.

    Returns:
        A multi-line message for the user: what was downloaded, or what to do.

    Raises:
        MlicError: Unknown competition, or the Kaggle API refused or failed the download.
    """
    if competition not in KAGGLE_SLUGS:
        raise MlicError(
            f"unknown competition {competition!r}",
            fix=f"use one of: {', '.join(sorted(KAGGLE_SLUGS))}",
        )
    dest = Path(dest)
    if importlib.util.find_spec("kaggle") is None or not has_kaggle_credentials():
        return manual_instructions(competition, dest)
    return _download_with_kaggle(competition, dest)


def has_kaggle_credentials() -> bool:
    """Whether the kaggle package will find credentials: env KAGGLE_USERNAME + KAGGLE_KEY, or kaggle.json."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    config_dir = os.environ.get("KAGGLE_CONFIG_DIR")
    directory = Path(config_dir) if config_dir else Path.home() / ".kaggle"
    return (directory / "kaggle.json").is_file()


def manual_instructions(competition: str, dest: Path) -> str:
    """How to install and configure the kaggle package, or which files to place where by hand."""
    slug = KAGGLE_SLUGS[competition]
    layout = "\n".join(
        f"    {dest / name.rstrip('/')}{'/' if name.endswith('/') else ''}  - {what}"
        for name, what in EXPECTED_FILES[competition]
    )
    return (
        f"Nothing downloaded: the kaggle package or Kaggle credentials are missing.\n"
        f"Either download automatically:\n"
        f"  1. pip install kaggle\n"
        f"  2. create an API token at https://www.kaggle.com/settings (Account > API > Create New Token) and\n"
        f"     save it as ~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY\n"
        f"  3. accept the competition rules at https://www.kaggle.com/c/{slug}/rules\n"
        f"  4. run this again\n"
        f"Or download https://www.kaggle.com/c/{slug}/data by hand and place it as:\n"
        f"{layout}\n"
        f"Then set data.root: {dest} in params.yaml."
    )


def _download_with_kaggle(competition: str, dest: Path) -> str:
    """Run the Kaggle API download and unzip what it fetched."""
    slug = KAGGLE_SLUGS[competition]
    dest.mkdir(parents=True, exist_ok=True)
    try:
        import kaggle  # optional dependency; importing it authenticates, so credentials were checked first

        kaggle.api.competition_download_files(slug, path=str(dest), quiet=False)
    except Exception as exc:  # the kaggle package raises many types (HTTP errors, IOError, its own)
        raise MlicError(
            f"Kaggle download of {slug!r} failed: {exc}".strip(),
            path=dest,
            fix=f"accept the rules at https://www.kaggle.com/c/{slug}/rules, check your credentials and network, "
            "or place the files by hand (run without credentials to see the layout)",
        ) from None
    extracted = unzip_all(dest)
    lines = [f"Downloaded {slug} into {dest}; unzipped {len(extracted)} archive(s)."]
    if any(dest.rglob("*.7z")):
        # Planet ships its images as .tar.7z, which neither zipfile nor tarfile can open.
        lines.append("Unpack the .tar.7z archives too, e.g. `7z x train-jpg.tar.7z && tar xf train-jpg.tar`.")
    lines.append(f"Then set data.root: {dest} in params.yaml.")
    return "\n".join(lines)


def unzip_all(dest: Path) -> list[Path]:
    """Extract every .zip under `dest` into its own directory, including zips found inside zips.

    Returns:
        The archives extracted, in order.
    """
    done: list[Path] = []
    while True:
        pending = sorted(p for p in dest.rglob("*.zip") if p not in done)
        if not pending:
            return done
        for archive in pending:
            try:
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(archive.parent)  # extractall drops absolute and ".." member paths
            except zipfile.BadZipFile:
                raise MlicError(
                    "downloaded archive is corrupt", path=archive, fix="delete it and download again"
                ) from None
            done.append(archive)
