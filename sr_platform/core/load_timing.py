"""Timing a load's phases (LoadResult.timings), and reading ahead in a thread."""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor


class PhaseTimer:
    """Adds the seconds since the previous call to the named phase."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into, self.last = into, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.into[name] = self.into.get(name, 0.0) + now - self.last
        self.last = now


def prefetched(items: Iterator) -> Iterator:
    """`items`, with the next one computed in a thread while the caller works on the current
    one (at most two in memory)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(next, items, None)
        while (item := ahead.result()) is not None:
            ahead = pool.submit(next, items, None)
            yield item
