"""`make bench`'s read section (issue 15, section 2): each read of the read API beside
pandas.read_sql (SQLAlchemy), ADBC, connectorx and polars.read_database_uri, in one process
against one server and database (the queries section's data, bench/query_data.py), at 1 y and
with --size 5 at 5x. Per read: p50/p95/p99 ms and rows/s of every client, each client's p95
over read_events', and the issue's goals met or missed; for every pair's year, the peak memory
of a fresh process reading it against the frame's size.

read_events is called with the reader URL (its default path: a pooled connection); read_sql
and ADBC keep one connection open; connectorx and polars connect per call (their API).
The big read (every pair, a year) runs `big_repeat` timed calls without warm-up, and each
other client once (read_sql takes about 30 s per million rows).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import latency, samples_ms  # noqa: E402
from read_bench import _clients, api_queries  # noqa: E402

from sr_platform.core import db  # noqa: E402

KEYS = ("latest", "month", "year", "band", "all")
TARGET_MS = {"latest": 5, "month": 15, "year": 150, "band": 5}
TARGET_ROWS_PER_S = 2_000_000
TARGET_MEMORY = 2.0  # peak memory over the frame's size
# the API over read_sql: a year of one instrument at least 10x, a month at least 5x
TARGET_OVER_READ_SQL = {"year": 10, "month": 5}
API = "read_events"
BUDGET_MS = 20_000  # per client and read; a slower client gets fewer calls (at least 5 a round)


def _stats(times_ms: list[float], rows: int) -> dict:
    p50, p95, p99 = (float(x) for x in np.percentile(times_ms, [50, 95, 99]))
    return {"p50": p50, "p95": p95, "p99": p99, "calls": len(times_ms),
            "rows_per_s": rows / (p50 / 1000) if p50 > 0 else 0.0}


def _time(fn: Callable[[], object], rows: int, big: bool, repeat: int, rounds: int,
          big_repeat: int, first_ms: float = 0.0) -> dict:
    if big:
        return _stats(samples_ms(fn, big_repeat, warmup=0), rows)
    if first_ms * repeat * rounds > BUDGET_MS:  # a slow client: fewer calls, at least 5
        repeat, rounds = max(5, int(BUDGET_MS / max(first_ms, 1) / rounds)), rounds
    lat = latency(fn, repeat, rounds)
    return {"p50": lat["p50"], "p95": lat["p95"], "p99": lat["p99"], "calls": lat["calls"],
            "rows_per_s": rows / (lat["p50"] / 1000) if lat["p50"] > 0 else 0.0}


def peak_memory(reader_url: str, kwargs: dict) -> dict:
    """A fresh process reads `kwargs` with read_events: its peak resident memory (VmHWM) above
    the resident memory before the read, against the pandas frame's own size."""
    code = (
        "import json, os, sys\n"
        "from sr_platform import read_events\n"
        "import pandas, pyarrow\n"
        "def kb(f):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(f + ':'):\n"
        "            return int(line.split()[1]) * 1024\n"
        "kw = json.loads(sys.argv[1])\n"
        "read_events('EUR_USD', 'W', latest=1, url=os.environ['SR_READ_URL'])\n"
        "before = kb('VmRSS')\n"
        "frame = read_events(**kw, url=os.environ['SR_READ_URL'])\n"
        "print(json.dumps({'peak': kb('VmHWM') - before, 'frame': int(frame.memory_usage("
        "deep=True).sum()), 'rows': len(frame)}))\n")
    args = {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in kwargs.items()}
    env = {**os.environ, "SR_READ_URL": reader_url,
           "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(args)], env=env,
                         capture_output=True, text=True, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    got["ratio"] = got["peak"] / got["frame"] if got["frame"] else 0.0
    return got


def run(url: str, repeat: int, rounds: int, size: str, log: Callable[[str], None] = print,
        big_repeat: int = 3, memory: bool = True) -> dict:
    from sr_platform import read_events
    reader = db.role_url(url, db.READER_ROLE)
    clients, missing = _clients(reader)
    if missing:
        log("  not installed, not compared: " + "; ".join(missing))
    reads = []
    for key, (name, kwargs, query) in zip(KEYS, api_queries(url), strict=True):
        rows = len(read_events(**kwargs, url=reader))
        big = key == "all"
        entry = {"key": key, "read": name, "rows": rows, "clients": {}}
        t = time.perf_counter()
        entry["clients"][API] = _time(lambda kw=kwargs: read_events(**kw, url=reader), rows,
                                      big, repeat, rounds, big_repeat)
        for cname, fn in clients.items():
            first = 0.0
            if not big:  # the big read is timed once, unchecked (read_sql: minutes)
                t0 = time.perf_counter()
                got = len(fn(query))
                first = (time.perf_counter() - t0) * 1000
                assert got == rows, (name, cname, got, rows)
            entry["clients"][cname] = _time(lambda f=fn, q=query: f(q), rows, big,
                                            repeat, rounds, 1, first)
        if big and memory:
            entry["memory"] = peak_memory(reader, kwargs)
        _judge(entry)
        reads.append(entry)
        api = entry["clients"][API]
        log(f"  {name:<32}{rows:>10,} rows  read_events p95 {api['p95']:9.1f} ms "
            f"({api['rows_per_s']:,.0f} rows/s) in {time.perf_counter() - t:.0f} s")
    return {"size": size, "reads": reads, "missing": missing}


def _judge(entry: dict) -> None:
    api = entry["clients"][API]
    others = {k: v for k, v in entry["clients"].items() if k != API}
    entry["ratios"] = {k: v["p95"] / api["p95"] for k, v in others.items()}
    goals = []
    key = entry["key"]
    if key in TARGET_MS:
        goals.append({"goal": f"p95 < {TARGET_MS[key]} ms", "measured": f"{api['p95']:.1f} ms",
                      "met": api["p95"] < TARGET_MS[key]})
    if key == "all":
        goals.append({"goal": f">= {TARGET_ROWS_PER_S / 1e6:g}M rows/s",
                      "measured": f"{api['rows_per_s'] / 1e6:.2f}M rows/s",
                      "met": api["rows_per_s"] >= TARGET_ROWS_PER_S})
        m = entry.get("memory")
        if m:
            goals.append({"goal": f"peak memory <= {TARGET_MEMORY:g}x the frame",
                          "measured": f"{m['ratio']:.2f}x ({m['peak'] / 2**20:,.0f} MiB "
                                      f"for a {m['frame'] / 2**20:,.0f} MiB frame)",
                          "met": m["ratio"] <= TARGET_MEMORY})
    if key in TARGET_OVER_READ_SQL and "pandas.read_sql (SQLAlchemy)" in entry["ratios"]:
        r = entry["ratios"]["pandas.read_sql (SQLAlchemy)"]
        goals.append({"goal": f">= {TARGET_OVER_READ_SQL[key]}x faster than read_sql",
                      "measured": f"{r:.1f}x", "met": r >= TARGET_OVER_READ_SQL[key]})
    fast = {k: v for k, v in entry["ratios"].items() if not k.startswith("pandas")}
    if fast:
        best = min(fast, key=fast.get)
        goals.append({"goal": "faster than ADBC, connectorx and polars",
                      "measured": f"fastest other: {best} at {fast[best]:.2f}x",
                      "met": fast[best] > 1.0})
    entry["goals"] = goals


def goals(res: dict) -> list[dict]:
    """The read section's goal rows for the report's goal table."""
    out = []
    for part in res.get("read", []):
        for e in part["reads"]:
            for g in e["goals"]:
                out.append({"goal": f"15. {e['read']} ({part['size']}): {g['goal']}",
                            "measured": g["measured"], "target": g["goal"], "met": g["met"]})
        if part is res["read"][-1] and len(res["read"]) > 1:
            a = {e["key"]: e for e in res["read"][0]["reads"]}
            e = {x["key"]: x for x in part["reads"]}["band"]
            ratio = e["clients"][API]["p95"] / a["band"]["clients"][API]["p95"]
            out.append({"goal": f"15. price band flat at {part['size']} (p95 over 1 y's)",
                        "measured": f"{ratio:.2f}x", "target": "<= 1.5x",
                        "met": ratio <= 1.5 and e["clients"][API]["p95"] < TARGET_MS["band"]})
    return out


def markdown(res: dict) -> list[str]:
    lines: list[str] = []
    for part in res.get("read", []):
        names = [API] + [k for k in part["reads"][0]["clients"] if k != API]
        lines += ["", f"## Reads at {part['size']} (issue 15)", "",
                  "p50 / p95 / p99 ms, rows/s at p50, and each client's p95 over read_events'"
                  " (above 1: read_events is faster).", "",
                  "| read | rows | " + " | ".join(names) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
        for e in part["reads"]:
            cells = []
            for n in names:
                c = e["clients"][n]
                ratio = "" if n == API else f" ({e['ratios'][n]:.1f}x)"
                cells.append(f"{c['p50']:,.1f} / {c['p95']:,.1f} / {c['p99']:,.1f}{ratio}, "
                             f"{c['rows_per_s']:,.0f}/s")
            lines.append(f"| {e['read']} | {e['rows']:,} | " + " | ".join(cells) + " |")
        if part["missing"]:
            lines += ["", "Not installed, not compared: " + "; ".join(part["missing"])]
        lines += ["", "| read | goal | measured | |", "| --- | --- | --- | --- |"]
        for e in part["reads"]:
            for g in e["goals"]:
                lines.append(f"| {e['read']} | {g['goal']} | {g['measured']} | "
                             f"{'**met**' if g['met'] else '**missed**'} |")
    return lines
