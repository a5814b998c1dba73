"""Issue 7, goal 6: concurrent writers. 1, 2 and 4 loader processes
(sr_platform.core.loader.load_paths, each in its own process) on overlapping files: with N >= 2
every file is loaded by two processes (process i loads files i and i+1 of N slices, in its own
order), so concurrent loads of the same pairs and the same ids meet. Each repeat starts from an
empty database; the processes start together (a barrier) and the clock runs until the last ends.

Reports total rows/s (distinct rows stored / wall time, and rows offered / wall time), and
asserts, for every run, zero lost and zero duplicated rows: the events' row count, their
distinct ids and the level rows all equal the files' distinct good ids, and the stored id set
is exactly that set.

    .venv/bin/python bench/writers_bench.py [--rows 200000] [--procs 1,2,4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import new_database  # noqa: E402

from sr_platform.core import db, event_files, loader  # noqa: E402
from sr_platform.core.generate import write_event_files  # noqa: E402
from sr_platform.core.validate import validate  # noqa: E402


def make_files(out: Path, rows: int, seed: int = 11) -> list[Path]:
    """28 files (one per instrument, all granularities) of about `rows` rows in all."""
    years = max(0.05, rows / 228_000)
    return write_event_files(out, years=years, instruments=28, seed=seed, event_rate=1.0)


def good_ids(files: list[Path]) -> set[str]:
    ids: set[str] = set()
    for f in files:
        for raw in event_files.EventFile(f).chunks(200_000):
            ids.update(validate(raw).good["original_event_id"])
    return ids


def assignment(files: list[Path], procs: int) -> list[list[Path]]:
    """procs == 1: every file once. Else N slices; process i loads slices i and i+1 (mod N),
    starting at a different file, so every file is loaded by exactly two processes."""
    if procs == 1:
        return [list(files)]
    slices = [files[i::procs] for i in range(procs)]
    return [slices[i] + slices[(i + 1) % procs] for i in range(procs)]


def _worker(url: str, files: list[str], barrier, out) -> None:
    barrier.wait()
    t = time.perf_counter()
    results = loader.load_paths([Path(f) for f in files], url)
    out.put({"seconds": time.perf_counter() - t,
             "loaded": sum(r.loaded for r in results),
             "duplicates": sum(r.duplicates for r in results),
             "rejected": sum(r.rejected for r in results),
             "errors": [r.error for r in results if r.error]})


def one_run(files: list[Path], procs: int, expected: set[str]) -> dict:
    server, name, url = new_database("srbench_w")
    try:
        # partitions beforehand (as the landing sensor does): the writes are measured, not DDL
        loader.ensure_partitions(url, {p for f in files for p in loader.file_pairs(f)})
        ctx = mp.get_context("spawn")
        barrier, out = ctx.Barrier(procs + 1), ctx.Queue()
        plan = assignment(files, procs)
        ps = [ctx.Process(target=_worker, args=(url, [str(f) for f in part], barrier, out))
              for part in plan]
        for p in ps:
            p.start()
        barrier.wait()
        t0 = time.perf_counter()
        reports = [out.get() for _ in ps]
        wall = time.perf_counter() - t0
        for p in ps:
            p.join()
        with db.connect(url, role=db.READER_ROLE) as c:
            rows, distinct = c.execute("SELECT count(*), count(DISTINCT original_event_id) "
                                       "FROM new_resistance_events").fetchone()
            levels = c.execute("SELECT count(*) FROM support_and_resistance_master").fetchone()[0]
            stored = {str(r[0]) for r in c.execute(
                "SELECT original_event_id FROM new_resistance_events")}
    finally:
        db.drop_database(server, name)
    offered = sum(len(part) for part in plan)
    errors = [e for r in reports for e in r["errors"]]
    check = {"expected": len(expected), "rows": rows, "distinct_ids": distinct,
             "levels": levels, "lost": len(expected - stored), "extra": len(stored - expected),
             "duplicated": rows - distinct}
    check["ok"] = (rows == distinct == levels == len(expected) and not check["lost"]
                   and not check["extra"])
    return {"procs": procs, "wall_s": wall, "rows_per_s": rows / wall,
            "file_loads": offered, "loaded": sum(r["loaded"] for r in reports),
            "duplicates_skipped": sum(r["duplicates"] for r in reports),
            "load_errors": errors, "check": check}


def run(rows: int = 200_000, procs: tuple[int, ...] = (1, 2, 4), repeats: int = 2,
        log=print) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="srbench_w_"))
    try:
        files = make_files(tmp, rows)
        expected = good_ids(files)
        out = []
        for n in procs:
            runs = [one_run(files, n, expected) for _ in range(repeats)]
            rates = [r["rows_per_s"] for r in runs]
            ok = all(r["check"]["ok"] for r in runs)
            out.append({"procs": n, "value": statistics.median(rates),
                        "spread": [min(rates), max(rates)], "runs": runs, "ok": ok})
            log(f"  {n} loader process(es): {statistics.median(rates):,.0f} rows/s "
                f"[{min(rates):,.0f}-{max(rates):,.0f}], {runs[0]['file_loads']} file loads; "
                f"rows {runs[-1]['check']['rows']:,} = distinct ids "
                f"{runs[-1]['check']['distinct_ids']:,} = levels {runs[-1]['check']['levels']:,}"
                f" = expected {len(expected):,}: {'OK' if ok else 'FAILED'}; load errors "
                f"{sum(len(r['load_errors']) for r in runs)}")
        return {"rows": len(expected), "files": len(files), "results": out,
                "ok": all(r["ok"] for r in out)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    r = run(args.rows, tuple(int(x) for x in args.procs.split(",")), args.repeats)
    sys.exit(0 if r["ok"] else 1)


if __name__ == "__main__":
    main()
