"""Content digests: the one place the package hashes files, folders and values (SHA-256, hex).

Every digest here is pure (it reads what it hashes, nothing else) and stable: the same bytes give the same hex on
any machine and in any run. Each function's exact byte layout is part of its contract, because digests are recorded
and compared later (a training run's code in its resume fingerprint, a benchmark's cache keys), and a changed layout
would silently invalidate every recorded value. `tests/test_hashing.py` pins each one on a fixed input.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ALGORITHM = "sha256"


def _file_sha256(path: str | os.PathLike) -> bytes:
    """The raw 32-byte SHA-256 of a file's bytes, read in chunks (a checkpoint need not fit in memory twice)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, ALGORITHM).digest()


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes.

    Args:
        path: The file.

    Returns:
        The hex digest: the same as `hashlib.sha256(path.read_bytes()).hexdigest()`.
    """
    return _file_sha256(path).hex()


def file_digests(files: Mapping[str, str | os.PathLike]) -> dict[str, str]:
    """Each named file's digest (`file_digest`), keyed by its name, the names in sorted order.

    Args:
        files: Name (a module's dotted name, a relative path) -> the file to hash.

    Returns:
        Name -> hex digest, sorted by name, so the mapping serialises to the same JSON whatever order it came in.
    """
    return {name: file_digest(files[name]) for name in sorted(files)}


def tree_digest(folder: str | os.PathLike) -> str:
    """SHA-256 of a folder's files: their paths relative to it and their contents, in sorted order.

    Each file adds its path relative to `folder` (posix, UTF-8), a NUL byte, then the raw 32-byte SHA-256 of its
    contents: a renamed file changes the digest as an edited one does. Empty folders add nothing, and a missing
    folder hashes as an empty one.

    Args:
        folder: The folder to hash, every file under it included.

    Returns:
        The hex digest.
    """
    root, digest = Path(folder), hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0".encode() + _file_sha256(path))
    return digest.hexdigest()


def value_digest(value: Any) -> str:
    """SHA-256 of a JSON-able value: its JSON with keys sorted, anything JSON cannot hold written as `str()`.

    Args:
        value: Nested dicts, lists, strings and numbers (a path or a date is hashed as its string).

    Returns:
        The hex digest; equal values give equal digests whatever the order of their dicts' keys.
    """
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
