"""The load figures of `make bench` (issue 7, goals 1-3 and the baselines), through one small
adapter so bench/run.py does not depend on the shape of bench/load_bench.py.

If load_bench has `run(rows, ...) -> dict` (the extended loader bench) the adapter calls it and
normalizes its result; otherwise it runs what load_bench offers today (PLAIN_DDL, run_copy,
run_copy_levels, run_loader, run_to_sql) plus a psycopg executemany baseline, the same way
load_bench.main does, repeated in fresh databases.

Expected interface of load_bench.run (keyword arguments it does not take are not passed):

    run(rows: int, *, repeats: int = 1, seed: int = 7, log: Callable[[str], None] = print)
        -> {"rows": int, "files": int,
            "methods": [{"name": str, "kind": "baseline" | "loader", "rows": int,
                         "rows_per_s": float, "spread": [min, max] (optional),
                         "rounds": [rows/s per repeat] (optional),
                         "p50_ms"/"p95_ms"/"p99_ms": per-file latency (optional)}, ...],
            "goals": [{"name": str, "value": float, "unit": "x" | "s" | ...,
                       "target": str (e.g. ">= 1.5x \\copy"), "met": bool,
                       "detail": str (optional)}, ...],
            "phases": {scenario: {phase: seconds}, ...}}     # optional

Every key but "methods" is optional; unknown keys are kept in the JSON as they are.
"""

from __future__ import annotations

import inspect
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import load_bench  # noqa: E402
from common import new_database  # noqa: E402

from sr_platform.core import db, loader  # noqa: E402
from sr_platform.core.generate import write_event_files  # noqa: E402


def run(rows: int, repeats: int = 2, small_files: bool = True, log=print) -> dict:
    if callable(getattr(load_bench, "run", None)):
        fn = load_bench.run
        accepted = inspect.signature(fn).parameters
        kwargs = {k: v for k, v in (("repeats", repeats), ("log", log),
                                    ("small_files", small_files)) if k in accepted}
        out = fn(rows, **kwargs)
        out = dict(out)
        out["source"] = "load_bench.run"
        out.setdefault("methods", [])
        out.setdefault("goals", [])
        return out
    return _fallback(rows, repeats, small_files, log)


# --------------------------------------------------------------------------------------------
# what load_bench.py offers today, driven from here


def _executemany(url: str, frame: pd.DataFrame) -> tuple[int, float]:
    cols = list(frame.columns)
    sql = (f"INSERT INTO events_plain_to_sql ({', '.join(cols)}) "
           f"VALUES ({', '.join(['%s'] * len(cols))})")
    data = [tuple(None if v == "" else v for v in r)
            for r in frame.astype(str).itertuples(index=False)]
    with db.connect(url) as conn:
        t = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany(sql, data)
        conn.commit()
        secs = time.perf_counter() - t
    return len(frame), secs


def _files(tmp: Path, rows: int, seed: int = 7) -> tuple[list[Path], list[Path]]:
    """~rows rows in 28 instruments x 2 consecutive parts: part 1 is the first load of every
    pair (new, empty partitions), part 2 a steady load into partitions that hold part 1."""
    years = max(0.1, rows / 228_000)
    files = write_event_files(tmp / "all", years=years, instruments=28, seed=seed,
                              event_rate=1.0, files_per_instrument=2)
    return [f for f in files if f.stem.endswith("_001")], [f for f in files
                                                             if f.stem.endswith("_002")]


def _one_repeat(first: list[Path], second: list[Path], small: int, log) -> dict:
    """One fresh database: \\copy (flat) of part 1 then part 2, their levels, the loader on
    part 1 (new partitions) then part 2 (existing), a reload of everything, to_sql and
    executemany on a `small`-row prefix."""
    server, name, url = new_database("srbench_l")
    try:
        with db.connect(url) as conn:
            conn.execute(load_bench.PLAIN_DDL)
            conn.execute("CREATE TABLE events_plain_to_sql (LIKE events_plain INCLUDING ALL)")
        files = first + second
        columns = list(pd.read_csv(files[0], nrows=0).columns)
        pairs = set()
        for f in files:
            pairs |= loader.file_pairs(f)
        t = time.perf_counter()
        loader.ensure_partitions(url, pairs)
        part_s = time.perf_counter() - t
        c1 = load_bench.run_copy(url, first, columns)
        c2 = load_bench.run_copy(url, second, columns)
        c_rows, c_secs = c2[0], c1[1] + c2[1]  # run_copy returns the table's row count
        lv_rows, lv_secs, _ = load_bench.run_copy_levels(url, first[0].parent)
        l1 = load_bench.run_loader(url, first)
        l2 = load_bench.run_loader(url, second)
        rl = load_bench.run_loader(url, files)  # all duplicates now
        sample = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False)
                            for f in files])[:small]
        typed = pd.concat([pd.read_csv(f) for f in files])[:small]
        typed["event_creation_date"] = pd.to_datetime(typed["event_creation_date"], utc=True)
        ts_rows, ts_secs, _ = load_bench.run_to_sql(url, typed)
        with db.connect(url) as conn:
            conn.execute("TRUNCATE events_plain_to_sql")
        em_rows, em_secs = _executemany(url, sample)
    finally:
        db.drop_database(server, name)
    phases = {}
    for key, r in (("new partitions", l1), ("existing partitions", l2), ("reload", rl)):
        phases[key] = r[3]
    log(f"    \\copy {c_rows / c_secs:,.0f} rows/s; loader: new partitions {l1[0] / l1[1]:,.0f}, "
        f"existing {l2[0] / l2[1]:,.0f}, reload {c_rows / rl[1]:,.0f} rows/s")
    return {
        "copy": c_rows / c_secs, "copy_first": c1[0] / c1[1],
        "copy_second": (c2[0] - c1[0]) / c2[1],
        "copy_levels": c_rows / (c_secs + lv_secs),
        "loader_new": l1[0] / l1[1], "loader_existing": l2[0] / l2[1],
        "loader_reload": c_rows / rl[1], "to_sql": ts_rows / ts_secs,
        "executemany": em_rows / em_secs, "partitions_s": part_s, "phases": phases,
        "rows": c_rows, "file_lat": {"copy": c1[2] + c2[2], "loader": l1[2] + l2[2]},
        "loaded": l1[0] + l2[0], "levels_rows": lv_rows}


def _small_files(log) -> dict:
    """`make run`'s sample (28 files, one year at the default event rate) into an empty
    database: the loader creates the 112 pairs' partitions itself."""
    tmp = Path(tempfile.mkdtemp(prefix="srbench_s_"))
    server, name, url = new_database("srbench_s")
    try:
        files = write_event_files(tmp, years=1, instruments=28, seed=0)
        t = time.perf_counter()
        results = loader.load_paths(files, url)
        secs = time.perf_counter() - t
        assert all(r.error is None for r in results), [r.error for r in results if r.error]
        n = sum(r.loaded for r in results)
    finally:
        db.drop_database(server, name)
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"    small files: {n:,} rows in {len(files)} files, {secs:.1f} s")
    return {"rows": n, "files": len(files), "seconds": secs}


def _fallback(rows: int, repeats: int, small_files: bool, log) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="srbench_l_"))
    try:
        first, second = _files(tmp, rows)
        small = min(10_000, max(1_000, rows // 40))
        reps = []
        for i in range(repeats):
            log(f"  load repeat {i + 1}/{repeats}")
            reps.append(_one_repeat(first, second, small, log))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def agg(key: str) -> dict:
        vals = [r[key] for r in reps]
        return {"rows_per_s": statistics.median(vals), "spread": [min(vals), max(vals)],
                "rounds": vals}

    n = reps[0]["rows"]
    small = min(10_000, max(1_000, rows // 40))
    methods = [
        {"name": "psql \\copy events into a flat table (same indexes)", "kind": "baseline",
         "rows": n, **agg("copy")},
        {"name": "psql \\copy events, then their level rows (FK)", "kind": "baseline",
         "rows": n, **agg("copy_levels")},
        {"name": f"pandas to_sql(method='multi'), events only ({small:,} rows)",
         "kind": "baseline", "rows": min(n, small), **agg("to_sql")},
        {"name": f"psycopg executemany, events only ({small:,} rows)",
         "kind": "baseline", "rows": min(n, small), **agg("executemany")},
        {"name": "loader: first load of every pair (new partitions)", "kind": "loader",
         "rows": n // 2, **agg("loader_new")},
        {"name": "loader: steady load into existing partitions", "kind": "loader",
         "rows": n - n // 2, **agg("loader_existing")},
        {"name": "loader: reload of the same files (all duplicates)", "kind": "loader",
         "rows": n, **agg("loader_reload")},
    ]
    ratio = {k: statistics.median(r[k] / r[base] for r in reps)
             for k, base in (("loader_new", "copy_first"), ("loader_existing", "copy_second"))}
    goals = [
        {"name": "1. new partitions: loader vs raw \\copy (flat indexed table), same rows",
         "value": ratio["loader_new"], "unit": "x", "target": ">= 1.5x",
         "met": ratio["loader_new"] >= 1.5},
        {"name": "2. existing partitions: loader vs raw \\copy of the events alone",
         "value": ratio["loader_existing"], "unit": "x", "target": ">= 0.8x",
         "met": ratio["loader_existing"] >= 0.8},
    ]
    out = {"source": "fallback (load_bench.py has no run(); its functions driven by "
                     "bench/load_adapter.py)",
           "rows": n, "files": 56, "repeats": repeats, "methods": methods, "goals": goals,
           "phases": {k: {p: statistics.median(r["phases"][k].get(p, 0.0) for r in reps)
                          for p in reps[0]["phases"][k]} for k in reps[0]["phases"]},
           "partitions_s": statistics.median(r["partitions_s"] for r in reps)}
    if small_files:
        s = [_small_files(log) for _ in range(repeats)]
        secs = [x["seconds"] for x in s]
        out["small_files"] = {"rows": s[0]["rows"], "files": s[0]["files"],
                              "value": statistics.median(secs), "spread": [min(secs), max(secs)]}
        goals.append({"name": f"3. small files: make run's sample ({s[0]['rows']:,} rows, "
                              f"{s[0]['files']} files, 112 new pairs) into an empty database",
                      "value": statistics.median(secs), "unit": "s", "target": "< 3 s",
                      "met": statistics.median(secs) < 3})
    return out
