"""Thread-parallel maps whose memory does not grow with the number of items."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def ordered_map(
    fn: Callable[[Item], Result], items: Iterable[Item], workers: int, ahead: int | None = None
) -> Iterator[Result]:
    """`fn` over `items` in `workers` threads, yielded in the items' order.

    `ThreadPoolExecutor.map` submits every item at once, and keeps each result until it is read: at iMet's
    109,237 images that is 109k futures, and every decoded image that finished before a slow one. Here at most
    `ahead` items are in flight or waiting to be read.

    Args:
        fn: The work for one item (OpenCV, numpy and file reads release the GIL).
        items: Any iterable; read lazily.
        workers: Threads.
        ahead: Items in flight or done but unread at most (default: four per thread).
    """
    ahead = max(1, ahead or 4 * workers)
    pool = ThreadPoolExecutor(max_workers=workers)
    pending: deque[Future[Result]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # also when the reader stops early or an item fails: drop what has not started
        pool.shutdown(wait=True, cancel_futures=True)
