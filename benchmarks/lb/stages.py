"""Running one `mlic` stage in this process: its output to a timestamped log, a failure raised with the log's tail.

The stages are the `mlic` commands themselves (`mlic.cli.main`), run in this process so torch is imported once for
every row. Each stage's stdout and stderr go to `<logs>/<name>.log`; one progress line per stage (and per epoch)
goes to stderr, and stdout is left for the leaderboard's final JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


class StageFailed(Exception):
    """A stage of a row exited with an error; the message ends with its log's last lines."""


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries only the final JSON)."""
    print(f"leaderboard: {message}", file=sys.stderr, flush=True)


def device_kind() -> str:
    """What `train.device: auto` trains on here: the GPU's name, or cpu."""
    import torch

    return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"


class StageLog(io.TextIOBase):
    """A stage's stdout and stderr: written to its log file, each line timestamped, epoch lines echoed to stderr."""

    def __init__(self, path: Path, echo: TextIO, prefix: str):
        self.file, self.echo, self.prefix = path.open("w"), echo, prefix
        self.lines: list[tuple[float, str]] = []
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.file.write(text)
        *complete, self.pending = (self.pending + text).split("\n")
        for raw in complete:
            line = raw.rsplit("\r", 1)[-1].strip()  # after a progress bar's carriage returns
            self.lines.append((time.perf_counter(), line))
            if line.startswith("epoch "):
                print(f"leaderboard: {self.prefix}{line}", file=self.echo, flush=True)
        return len(text)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        super().close()  # flushes first
        self.file.close()

    def tail(self, n: int = 15) -> str:
        return "\n".join(line for _, line in self.lines[-n:] if line)


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """Run inside `path` (the stages read relative paths from their params), then return."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_stage(params: Path, logs: Path, name: str, *args: str, prefix: str = "") -> tuple[float, StageLog]:
    """Run `mlic --params <params> <args>` in this process; returns its wall seconds and its log.

    Raises:
        StageFailed: The command exited non-zero or raised; the message has its log's last lines.
    """
    from mlic.cli import main as mlic

    logs.mkdir(parents=True, exist_ok=True)
    log, echo = StageLog(logs / f"{name}.log", sys.stderr, prefix), sys.stderr
    start = time.perf_counter()
    with log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            code = mlic(["--params", str(params), *args])
        except Exception:  # noqa: BLE001 - a crashed stage fails its row, not the leaderboard
            traceback.print_exc()
            code = 1
        log.write("\n")
    seconds = round(time.perf_counter() - start, 2)
    if code != 0:
        raise StageFailed(f"mlic {' '.join(args)} failed (exit {code}, log {logs / name}.log):\n{log.tail()}")
    print(f"leaderboard: {prefix}{name} {seconds:.1f} s", file=echo, flush=True)
    return seconds, log


def fit_span(log: StageLog) -> tuple[float | None, int | None]:
    """The train stage's fit: seconds from its start line to its last epoch line, and the images it trained on.

    The span holds the epochs and their validation passes, not the data loading before nor the TTA prediction after.
    """
    start = next(((t, line) for t, line in log.lines if re.match(r"train \S+ fold \d+: \d+ train / ", line)), None)
    epochs = [t for t, line in log.lines if line.startswith("epoch ")]
    if start is None or not epochs:
        return None, None
    rows, views = re.search(r"(\d+) train / \d+ val rows x (\d+) view", start[1]).groups()
    return round(epochs[-1] - start[0], 2), int(rows) * int(views) * len(epochs)  # epochs run here (not resumed)


def score_output(log: Path) -> dict:
    """The JSON `mlic score` printed (the first object in its log)."""
    text = log.read_text()
    return json.JSONDecoder().raw_decode(text[text.index("{") :])[0]
