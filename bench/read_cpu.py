"""Where a read's time goes: wall time and CPU per call of each read of the read section
(bench/read_section.py) on the database at URL (filled by bench/query_data.py), split into
the client (this process, all threads), psql children (big reads) and the server (the
machine's CPU minus both: run it on a quiet machine).

    .venv/bin/python bench/read_cpu.py postgresql://...   (an admin or owner URL)
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from read_bench import api_queries  # noqa: E402

from sr_platform import read_events  # noqa: E402
from sr_platform.core import db  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float:
    """Seconds of CPU the whole machine has spent (user, nice, system, irq, softirq)."""
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / TICK


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(url: str) -> None:
    reader = db.role_url(url, db.READER_ROLE)
    print("| read | rows | wall ms | client CPU ms | psql CPU ms | server CPU ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, kwargs, _ in api_queries(url):
        calls = 3 if name.startswith("every") else 30
        read_events(**kwargs, url=reader)  # warm: the pool's connections, the caches
        m0, c0, k0, t0 = machine_cpu(), time.process_time(), children_cpu(), time.perf_counter()
        for _ in range(calls):
            rows = len(read_events(**kwargs, url=reader))
        wall = (time.perf_counter() - t0) / calls
        client = (time.process_time() - c0) / calls
        child = (children_cpu() - k0) / calls
        server = (machine_cpu() - m0) / calls - client - child
        print(f"| {name} | {rows:,} | {wall * 1000:,.1f} | {client * 1000:,.1f} | "
              f"{child * 1000:,.1f} | {server * 1000:,.1f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
