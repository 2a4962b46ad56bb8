"""One progress policy for every long loop: a tqdm bar on a terminal, clean log lines everywhere else.

Under `dvc repro` (or any redirect) the output is a log file, and a tqdm bar writes a carriage return per
refresh, hundreds per training epoch. So `track` decides from the stream the bar writes to (stderr, as tqdm):

- `bar`: on a terminal, a normal tqdm bar.
- `lines`: off a terminal, no carriage return ever: a plain line at most every `interval` seconds, such as
  ``decode train: 12000/40000 (30%) 850 img/s``, and a final line when the work ends (kept bars only). A caller
  that logs its own summary (the training loop's per-epoch line) passes ``interval=None`` and gets no lines.
- `off`: nothing.

The environment variable ``MLIC_PROGRESS`` (``bar``, ``lines`` or ``off``) overrides the choice, e.g.
``MLIC_PROGRESS=off dvc repro`` for the quietest log, or ``MLIC_PROGRESS=bar`` to keep bars in a pager.
A call with ``disable=True`` (a job too small to report) shows nothing in any mode.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

ENV_VAR = "MLIC_PROGRESS"
MODES = ("bar", "lines", "off")
DEFAULT_INTERVAL = 30.0  # seconds between two lines off a terminal: a 40k-image decode logs a dozen lines


def progress_mode(stream: TextIO | None = None) -> str:
    """How progress shows on `stream` (default stderr): `MLIC_PROGRESS` if set, else `bar` on a terminal, else `lines`.

    Args:
        stream: The stream the progress writes to.

    Returns:
        One of `MODES`.
    """
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in MODES:
        return value
    if value:
        warnings.warn(f"{ENV_VAR}={value!r} is not one of {', '.join(MODES)}; ignored", stacklevel=2)
    return "bar" if _is_terminal(sys.stderr if stream is None else stream) else "lines"


def shows_bar(stream: TextIO | None = None) -> bool:
    """Whether progress on `stream` (default stderr) is a live bar, i.e. transient detail is worth showing."""
    return progress_mode(stream) == "bar"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def track(
    iterable: Iterable | None = None,
    desc: str | None = None,
    total: float | None = None,
    *,
    unit: str = "it",
    leave: bool = True,
    disable: bool = False,
    mininterval: float = 1.0,
    interval: float | None = DEFAULT_INTERVAL,
    stream: TextIO | None = None,
) -> tqdm | LineProgress:
    """Progress over `iterable` (or updated by hand with `update(n)`) under the module's policy.

    Use it as tqdm: iterate over the result, or `with track(total=n) as bar: bar.update(k)`.

    Args:
        iterable: What to iterate over; None to call `update` by hand.
        desc: Label of the bar or line.
        total: Number of items expected (default: `len(iterable)` when it has one).
        unit: Name of one item, for the rate.
        leave: Keep the bar at the end; off a terminal, whether a final line is printed.
        disable: Show nothing in any mode (a small job).
        mininterval: The bar's minimum seconds between refreshes, on a terminal.
        interval: Seconds between lines off a terminal; None prints no lines there (the caller logs a summary).
        stream: Where it writes (default stderr, tqdm's stream); also what decides the mode.

    Returns:
        A tqdm bar (shown or disabled) or a `LineProgress`, with tqdm's `update`, `set_postfix` and `close`.
    """
    stream = sys.stderr if stream is None else stream
    mode = "off" if disable else progress_mode(stream)
    if mode == "bar":
        return tqdm(iterable, desc, total, leave=leave, file=stream, mininterval=mininterval, unit=unit)
    if mode == "lines" and interval is not None:
        return LineProgress(iterable, desc, total, unit=unit, leave=leave, interval=interval, stream=stream)
    return tqdm(iterable, desc, total, disable=True)  # a silent pass-through with the same interface


class LineProgress:
    """Progress as plain lines, at most one per `interval` seconds plus a final one: what a log file can hold.

    Args:
        iterable: What to iterate over; None to call `update` by hand.
        desc: Label of each line.
        total: Number of items expected (default: `len(iterable)` when it has one).
        unit: Name of one item, for the rate.
        leave: Print a final line on `close` (the end of the iteration or of the `with` block).
        interval: Minimum seconds between two progress lines.
        stream: Where the lines go.
        clock: Seconds from an arbitrary origin (tests pass a fake one).
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        desc: str | None = None,
        total: float | None = None,
        *,
        unit: str = "it",
        leave: bool = True,
        interval: float = DEFAULT_INTERVAL,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.desc, self.total, self.unit = iterable, desc or "progress", total, unit
        self.leave, self.interval, self.stream, self.clock = leave, interval, stream, clock
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last = clock()

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        """Count `n` more items done; print a line if `interval` seconds passed since the last one."""
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._print(self.line(now))

    def set_postfix(self, *args: Any, refresh: bool = True, **kwargs: Any) -> None:
        """Extra `key=value` fields for the next lines (tqdm's signature; `refresh` is ignored)."""
        fields = {**(args[0] if args else {}), **kwargs}
        self.postfix = ", ".join(f"{key}={value}" for key, value in fields.items())

    def close(self) -> None:
        """End the progress; the final line (with the elapsed time) when `leave`. Later calls do nothing."""
        if self.closed:
            return
        self.closed = True
        if self.leave:
            now = self.clock()
            self._print(f"{self.line(now)} in {now - self.start:.1f} s")

    def line(self, now: float) -> str:
        """The progress line at time `now`: label, count (of total, percent), rate, postfix."""
        count = _number(self.n) if self.total is None else f"{_number(self.n)}/{_number(self.total)}"
        if self.total:
            count += f" ({100 * self.n / self.total:.0f}%)"
        elapsed = now - self.start
        rate = f" {_rate(self.n / elapsed)} {self.unit}/s" if elapsed > 0 else ""
        postfix = f" {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {count}{rate}{postfix}"

    def _print(self, text: str) -> None:
        print(text, file=sys.stderr if self.stream is None else self.stream, flush=True)


def _number(value: float) -> str:
    """A count as tqdm shows it: 12000, or 12.5 when updates were fractional."""
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _rate(per_second: float) -> str:
    """A rate with about three significant digits and no exponent: 850, 42.5, 3.21."""
    digits = 0 if per_second >= 100 else 1 if per_second >= 10 else 2
    return f"{per_second:.{digits}f}"
