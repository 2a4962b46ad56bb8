"""Running one `dvc exp run` as a watched subprocess, and putting back the workspace files it leaves behind.

The run has its own process group, stopped as Ctrl-C would stop it (DVC releases its locks), so that a pruned trial
ends with every process it started; `Snapshot` puts the params file and dvc.lock back after a stopped or failed run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mlic.errors import MlicError
from mlic.io import atomic_path

STOP_GRACE_SECONDS = 60.0  # how long a stopped trial's `dvc exp run` may take to exit after SIGINT, before SIGKILL
LOG_TAIL_LINES = 20  # lines of a failed trial's output in its message


def tool_env() -> dict[str, str]:
    """This environment with the interpreter's bin folder first on PATH, so that the stages run this `mlic`."""
    return {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def dvc_command() -> list[str]:
    """The dvc beside this interpreter (the virtual environment's), else the one on PATH."""
    local = Path(sys.executable).with_name("dvc")
    found = str(local) if local.is_file() else shutil.which("dvc")
    if not found:
        raise MlicError("dvc not found", fix="install the locked requirements (`make install`)")
    return [found]


def stop(proc: subprocess.Popen) -> None:
    """Interrupt a run's process group as Ctrl-C would (DVC releases its locks), killing what lingers after a while.

    DVC waits for its stage's command, which SIGINT also ends, so the group goes at once; SIGKILL comes after
    `STOP_GRACE_SECONDS`, or as soon as the leader is gone, for any process of the group still there.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError):  # what is left of the group: all of it after the grace period
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_watched(command: list[str], cwd: Path, log: Path, stop_when: Callable[[subprocess.Popen], bool]) -> int | None:
    """Run `command` in its own process group, its output in `log`; its exit status, or None when it was stopped.

    `stop_when(proc)` watches it until it ends (False) or must stop (True). Ctrl-C or an error stops it too.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=tool_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            stopped = stop_when(proc)
        except BaseException:
            stop(proc)
            raise
        if stopped:
            stop(proc)
            return None
        return proc.wait()


@dataclass(frozen=True)
class Snapshot:
    """Files of the workspace as they were (None: absent), put back after a stopped or failed trial."""

    files: dict[Path, bytes | None]

    @classmethod
    def take(cls, paths: Iterable[Path]) -> Snapshot:
        """The current bytes of `paths`."""
        return cls({path: path.read_bytes() if path.is_file() else None for path in paths})

    def restore(self) -> None:
        """Write every file back as it was (atomically), or remove it when it was absent."""
        for path, data in self.files.items():
            if data is None:
                path.unlink(missing_ok=True)
            elif not path.is_file() or path.read_bytes() != data:
                with atomic_path(path) as tmp:
                    tmp.write_bytes(data)


def last_lines(path: Path, count: int = LOG_TAIL_LINES) -> str:
    """The last `count` lines of a log file."""
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(lines[-count:])
