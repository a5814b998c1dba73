"""The load figures of `make bench` (issue 7, goals 1-3 and the baselines): bench/load_bench.py's
`run()` repeated, each repeat in a fresh database, normalised to the report's shape:

    {"rows", "files", "repeats", "methods": [{"name", "kind", "rows", "rows_per_s", "spread",
     "rounds", "p50_ms", "p95_ms", "p99_ms", "vs_copy", "vs_copy_levels"}],
     "goals": [{"name", "value", "unit", "target", "met", "spread"}],
     "phases": {scenario: {phase: median seconds}}, "small_files": {...}, "raw": [run() dicts]}

Ratios are taken per repeat (each loader run against the \\copy run of the same repeat, same
database and files) and then their median, so a busy machine moves both sides alike.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import load_bench  # noqa: E402

METHODS = (  # (run() key, name, kind)
    ("copy_flat", "psql \\copy events into a flat table (same indexes)", "baseline"),
    ("copy_flat_b", "psql \\copy the next batch into that table (holding the first)",
     "baseline"),
    ("copy_events_levels", "psql \\copy events, then their level rows (FK)", "baseline"),
    ("to_sql", "pandas to_sql(method='multi'), events only", "baseline"),
    ("executemany", "psycopg executemany, events only", "baseline"),
    ("loader_new", "loader: first load of every pair (new partitions, load-then-attach)",
     "loader"),
    ("loader_existing", "loader: steady load into existing partitions", "loader"),
    ("loader_reload", "loader: reload of the same files (all duplicates)", "loader"),
)


def _median_spread(values: list[float]) -> dict:
    return {"value": statistics.median(values), "spread": [min(values), max(values)],
            "rounds": values}


def run(rows: int, repeats: int = 2, small_files: bool = True, log=print,
        backfill_instruments: int = 2) -> dict:
    small_rows = min(10_000, max(1_000, rows // 40))
    raw = []
    for i in range(repeats):
        log(f"  load repeat {i + 1}/{repeats}")
        out = load_bench.run(rows, seed=7, to_sql_rows=small_rows, small=small_files,
                             executemany_rows=small_rows)
        raw.append(out)
        log(f"    \\copy {out['copy_flat']['rows_per_s']:,.0f} rows/s; loader: new "
            f"{out['loader_new']['rows_per_s']:,.0f}, existing "
            f"{out['loader_existing']['rows_per_s']:,.0f}, reload "
            f"{out['loader_reload']['rows_per_s']:,.0f} rows/s")
    methods = []
    for key, name, kind in METHODS:
        if key not in raw[0]:
            continue
        figs = [r[key] for r in raw]
        ms = _median_spread([f["rows_per_s"] for f in figs])
        methods.append({
            "name": name, "kind": kind, "rows": figs[0]["rows"], "rows_per_s": ms["value"],
            "spread": ms["spread"], "rounds": ms["rounds"],
            **{p: statistics.median(f[p] for f in figs) for p in ("p50_ms", "p95_ms", "p99_ms")},
            "vs_copy": statistics.median(f["vs_copy"] for f in figs),
            "vs_copy_levels": statistics.median(f["vs_copy_levels"] for f in figs)})
    new = _median_spread([r["loader_new"]["vs_copy"] for r in raw])
    steady = _median_spread([r["loader_existing"]["vs_copy_existing"] for r in raw])
    goals = [
        {"name": "1. new partitions: loader vs raw \\copy into the flat indexed table, same rows",
         "unit": "x", "target": f">= {load_bench.NEW_TARGET}x",
         "met": new["value"] >= load_bench.NEW_TARGET, **new},
        {"name": "2. existing partitions: loader vs raw \\copy of the events alone (into a "
                 "table already holding the first batch)",
         "unit": "x", "target": f">= {load_bench.STEADY_TARGET}x",
         "met": steady["value"] >= load_bench.STEADY_TARGET, **steady},
    ]
    phases = {}
    for key, scenario in (("loader_new", "new partitions"),
                          ("loader_existing", "existing partitions"),
                          ("loader_reload", "reload")):
        names = raw[0][key]["phases"]
        phases[scenario] = {p: statistics.median(r[key]["phases"].get(p, 0.0) for r in raw)
                            for p in names}
    # the same comparison with the rows in a few large new pairs (a backfill's or an archive
    # reload's shape): the per-pair DDL of load-then-attach is then spread over many rows
    big = []
    for i in range(repeats if backfill_instruments else 0):
        log(f"  load repeat {i + 1}/{repeats}, {backfill_instruments} instruments "
            f"({4 * backfill_instruments} pairs)")
        out = load_bench.run(rows, seed=7, small=False, instruments=backfill_instruments)
        big.append(out)
        log(f"    \copy {out['copy_flat']['rows_per_s']:,.0f} rows/s; loader: new "
            f"{out['loader_new']['rows_per_s']:,.0f}, existing "
            f"{out['loader_existing']['rows_per_s']:,.0f} rows/s")
    if big:
        pairs = 4 * backfill_instruments
        for key, name in (("copy_flat", f"psql \\copy, {pairs} pairs (backfill shape)"),
                          ("loader_new", f"loader: new partitions, {pairs} large pairs "
                                         "(backfill shape)"),
                          ("loader_existing", f"loader: existing partitions, {pairs} large "
                                              "pairs")):
            ms = _median_spread([r[key]["rows_per_s"] for r in big])
            methods.append({"name": name, "kind": "baseline" if "copy" in key else "loader",
                            "rows": big[0][key]["rows"], "rows_per_s": ms["value"],
                            "spread": ms["spread"], "rounds": ms["rounds"],
                            **{p: statistics.median(r[key][p] for r in big)
                               for p in ("p50_ms", "p95_ms", "p99_ms")},
                            "vs_copy": statistics.median(r[key]["vs_copy"] for r in big)})
        new_big = _median_spread([r["loader_new"]["vs_copy"] for r in big])
        steady_big = _median_spread([r["loader_existing"]["vs_copy_existing"] for r in big])
        goals.insert(1, {"name": f"1. new partitions, backfill shape ({pairs} pairs of "
                                 f"~{rows // pairs:,} rows): loader vs raw \\copy",
                         "unit": "x", "target": f">= {load_bench.NEW_TARGET}x",
                         "met": new_big["value"] >= load_bench.NEW_TARGET, **new_big})
        goals.insert(3, {"name": f"2. existing partitions, {pairs} large pairs: loader vs raw "
                                 "\\copy of the events alone",
                         "unit": "x", "target": f">= {load_bench.STEADY_TARGET}x",
                         "met": steady_big["value"] >= load_bench.STEADY_TARGET, **steady_big})
        phases[f"new partitions, {pairs} large pairs"] = {
            p: statistics.median(r["loader_new"]["phases"].get(p, 0.0) for r in big)
            for p in big[0]["loader_new"]["phases"]}
    res = {"source": "bench/load_bench.py run(), one fresh database per repeat",
           "rows": raw[0]["copy_flat"]["rows"], "files": raw[0]["files"],
           "repeats": repeats, "methods": methods, "goals": goals, "phases": phases,
           "raw": raw + big}
    if small_files:
        cli = _median_spread([r["small"]["cli"]["seconds"] for r in raw])
        inproc = _median_spread([r["small"]["in_process"]["seconds"] for r in raw])
        s = raw[0]["small"]
        res["small_files"] = {"rows": s["in_process"]["rows"], "files": s["files"],
                              "pairs": s["pairs"], "in_process_s": inproc["value"],
                              "value": cli["value"], "spread": cli["spread"]}
        phases["small files"] = {
            p: statistics.median(r["small"]["in_process"]["phases"].get(p, 0.0) for r in raw)
            for p in s["in_process"]["phases"]}
        goals.append({"name": f"3. small files: make run's sample ({s['in_process']['rows']:,} "
                              f"rows, {s['files']} files, {s['pairs']} new pairs) into an "
                              "empty database with `sr-platform load` (process start included)",
                      "unit": "s", "target": f"< {load_bench.SMALL_TARGET_SECONDS:g} s",
                      "met": cli["value"] < load_bench.SMALL_TARGET_SECONDS, **cli})
    return res
