"""Shared helpers of the benchmarks run by bench/run.py: timing, percentiles over rounds, the
throwaway database."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable

import numpy as np

from sr_platform.core import db, migrate


def samples_ms(fn: Callable[[], object], repeat: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def latency(fn: Callable[[], object], repeat: int, rounds: int, stat: float = 95) -> dict:
    """`rounds` rounds of `repeat` calls: the `stat` percentile of each round, their median and
    spread (min, max), and p50/p95/p99 over all calls."""
    per_round, every = [], []
    for _ in range(rounds):
        s = samples_ms(fn, repeat)
        every += s
        per_round.append(float(np.percentile(s, stat)))
    p50, p95, p99 = (float(x) for x in np.percentile(every, [50, 95, 99]))
    return {"stat": f"p{stat:g}", "value": statistics.median(per_round),
            "spread": [min(per_round), max(per_round)], "rounds": per_round,
            "p50": p50, "p95": p95, "p99": p99, "calls": len(every)}


def throughput(values: list[float]) -> dict:
    """Median and spread of per-repeat rates (rows/s)."""
    return {"value": statistics.median(values), "spread": [min(values), max(values)],
            "rounds": values}


def new_database(prefix: str) -> tuple[str, str, str]:
    """(server admin URL, name, URL) of a new migrated database."""
    server = db.database_url("postgres", role=db.ADMIN_ROLE)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server, name, owner=db.OWNER_ROLE)
    url = db.with_database(server, name)
    migrate.upgrade(url)
    return server, name, url
