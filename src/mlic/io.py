"""Atomic file writing: outputs appear whole or not at all, so a crash never leaves half a file behind.

A writer that is killed (SIGKILL, OOM killer, power loss) cannot clean up after itself; its temp path is named
after its host and process (`.<name>.<host>-<pid>.<random>.tmp`), so that the next writer of the same output
removes it once that process is gone, and a rerun needs no manual clean-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"  # temp paths of other hosts sharing a folder stay
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[^.]+\.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path to write to; rename it onto `path` only if the block succeeds.

    Args:
        path: Final file or directory path.
        is_dir: Create the temporary path as a directory (the final directory is replaced whole).

    Yields:
        The temporary path, in the same directory so the rename is atomic. What killed writers of `path` left
        beside it is removed first (`remove_stale_temps`).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".tmp", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=_temp_prefix(final), suffix=".tmp", dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~_umask())  # mkstemp/mkdtemp create owner-only paths
        _replace(tmp, final, is_dir)
    except BaseException:
        _remove(tmp)
        raise


def _temp_prefix(final: Path) -> str:
    """`.<name>.<host>-<pid>.`: a temp path says which output and which process it belongs to."""
    return f".{final.name}.{_HOST}-{os.getpid()}."


def _replace(tmp: Path, final: Path, is_dir: bool) -> None:
    """Rename `tmp` onto `final`; an old directory is first renamed aside, then deleted.

    A directory cannot be renamed onto a non-empty one. Renaming the old one aside (atomic, unlike deleting it in
    place) means a kill at any moment leaves `final` whole, old or new, or absent, never half deleted.
    """
    if is_dir and (final.exists() or final.is_symlink()):
        old = final.parent / f"{_temp_prefix(final)}old{secrets.token_hex(4)}.tmp"
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)


def remove_stale_temps(final: str | os.PathLike) -> list[Path]:
    """Remove the temp paths that writers of `final` left beside it when they were killed; returns them.

    Only paths of processes of this host that no longer run are removed: a live writer's temp path stays (two
    processes may write one output), and so does one of another host sharing the folder.
    """
    final = Path(final)
    try:
        entries = [e.name for e in os.scandir(final.parent) if e.name.startswith(f".{final.name}.")]
    except FileNotFoundError:
        return []
    stale = []
    for name in entries:
        match = _TEMP_NAME.fullmatch(name)
        if match and match["name"] == final.name and match["host"] == _HOST and not _running(int(match["pid"])):
            stale.append(final.parent / name)
            _remove(stale[-1])
    return stale


def _running(pid: int) -> bool:
    """Whether a process of this host runs with this id (a reused id keeps a stale path, harmlessly)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove(path: Path) -> None:
    """Delete a file, link or directory tree, whatever is there (nothing, after a crash, is fine)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write indented, key-sorted JSON atomically (sorted keys keep outputs byte-identical across runs)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_npy_rows(
    files: Sequence[tuple[str | os.PathLike, np.dtype | type, tuple[int, ...]]], rows: Iterable[Sequence[np.ndarray]]
) -> None:
    """Write new .npy files row by row: the i-th item of `rows` gives row i of each file.

    The rows are appended to plain files, not set in a memory map: the process's memory stays flat whatever the
    number of rows, and the kernel may drop written pages at will. The files are the bytes `np.save` writes, and
    each appears only once complete (`atomic_path`).

    Args:
        files: (path, dtype, shape) of each file; shape[0] is the number of rows.
        rows: One array per file for each row, of that file's row shape (shape[1:]) and castable to its dtype.

    Raises:
        ValueError: If a row has the wrong shape, or `rows` yields another number of rows than the shapes say.
    """
    with contextlib.ExitStack() as stack:
        outs = []
        for path, dtype, shape in files:
            out = stack.enter_context(open(stack.enter_context(atomic_path(path)), "wb"))  # closed before its rename
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(out, header)
            outs.append((out, np.dtype(dtype), tuple(shape[1:]), Path(path).name))
        count = 0
        for count, parts in enumerate(rows, 1):
            for (out, dtype, row_shape, name), part in zip(outs, parts, strict=True):
                if part.shape != row_shape:
                    raise ValueError(f"row {count - 1} of {name}: shape {part.shape}, expected {row_shape}")
                out.write(np.ascontiguousarray(part, dtype=dtype).tobytes())
        expected = [shape[0] for _, _, shape in files]
        if any(count != n for n in expected):
            raise ValueError(f"{count} rows written, expected {expected}")
