"""Load benchmark: this loader vs psql \\copy vs pandas to_sql(method='multi'), same process,
same generated rows, same server.

    .venv/bin/python bench/load_bench.py [--rows 1000000] [--to-sql-rows 50000]
                                         [--without-registry]

Each method loads the same files (one per instrument, all granularities mixed) into an empty
database. The loader writes the partitioned events table AND one level row per event (with
its foreign-key check), validation and quarantine included. \\copy writes a plain,
unpartitioned table with the same columns and the same indexes, nothing else: the practical
ceiling. to_sql is timed on a prefix of the rows (it is ~20x slower) and reported per row.
p50/p95/p99 are per-file latencies (per-batch for to_sql).

--without-registry runs the same on a database migrated to 0004 only: no event_id_registry
(and no triggers), the loader then dedupes against the events leaves; the difference between
the two runs is what one id per event costs.
"""

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sr_platform.core import db, loader, migrate, settings  # noqa: E402
from sr_platform.core.generate import write_event_files  # noqa: E402

PLAIN_DDL = """
CREATE TABLE events_plain (LIKE new_resistance_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE events_plain ADD PRIMARY KEY
    (instrument, granularity, event_creation_date, original_event_id);
CREATE INDEX ON events_plain (instrument, granularity);
CREATE INDEX ON events_plain (event_creation_date DESC);
CREATE INDEX ON events_plain (event_price_level);
CREATE TABLE levels_plain (LIKE support_and_resistance_master INCLUDING DEFAULTS
                           INCLUDING CONSTRAINTS);
ALTER TABLE levels_plain ADD PRIMARY KEY (instrument, granularity, event_creation_date, id);
ALTER TABLE levels_plain ADD UNIQUE
    (instrument, granularity, event_creation_date, original_event_id);
ALTER TABLE levels_plain ADD FOREIGN KEY
    (instrument, granularity, event_creation_date, original_event_id)
    REFERENCES events_plain ON DELETE CASCADE;
"""


def pct(values: list[float]) -> tuple[float, float, float]:
    a = np.array(values) * 1000
    return tuple(float(np.percentile(a, q)) for q in (50, 95, 99))


def run_loader(url: str, files: list[Path]) -> tuple[int, float, list[float], dict]:
    t0 = time.perf_counter()
    results = loader.load_paths(files, url)
    secs = time.perf_counter() - t0
    phases: dict[str, float] = {}
    for r in results:
        assert r.error is None and r.rejected == 0, r
        for k, v in r.timings.items():
            phases[k] = phases.get(k, 0.0) + v
    return sum(r.loaded for r in results), secs, [r.seconds for r in results], phases


def psql_copy(url: str, command: str) -> None:
    subprocess.run([str(settings.pg_bin_dir() / "psql"), "-q", "-v", "ON_ERROR_STOP=1",
                    db.libpq_url(url), "-c", command], check=True)


def run_copy(url: str, files: list[Path], columns: list[str]) -> tuple[int, float, list[float]]:
    lat = []
    t0 = time.perf_counter()
    for f in files:
        t = time.perf_counter()
        psql_copy(url, f"\\copy events_plain ({', '.join(columns)}) FROM '{f}' CSV HEADER")
        lat.append(time.perf_counter() - t)
    secs = time.perf_counter() - t0
    with db.connect(url) as conn:
        rows = conn.execute("SELECT count(*) FROM events_plain").fetchone()[0]
    return rows, secs, lat


def run_copy_levels(url: str, tmp: Path) -> tuple[int, float, list[float]]:
    """The second half of the fair ceiling: one level row per event, \\copy'd into a plain
    levels table with the same keys and a foreign key into events_plain."""
    out = tmp / "levels.csv"
    psql_copy(url, "\\copy (SELECT original_event_id, event_type, instrument, granularity, "
                   f"event_creation_date FROM events_plain) TO '{out}' CSV")
    t0 = time.perf_counter()
    psql_copy(url, "\\copy levels_plain (original_event_id, event_type, instrument, granularity, "
                   f"event_creation_date) FROM '{out}' CSV")
    secs = time.perf_counter() - t0
    with db.connect(url) as conn:
        rows = conn.execute("SELECT count(*) FROM levels_plain").fetchone()[0]
    return rows, secs, [secs]


def run_to_sql(url: str, frame: pd.DataFrame) -> tuple[int, float, list[float]]:
    eng = create_engine(db.sqlalchemy_url(url))
    lat = []
    t0 = time.perf_counter()
    with eng.begin() as conn:
        for start in range(0, len(frame), 1000):
            t = time.perf_counter()
            frame.iloc[start:start + 1000].to_sql("events_plain_to_sql", conn,
                                                  if_exists="append", index=False,
                                                  method="multi")
            lat.append(time.perf_counter() - t)
    secs = time.perf_counter() - t0
    eng.dispose()
    return len(frame), secs, lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--to-sql-rows", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--without-registry", action="store_true",
                    help="migrate to 0004 only (no event_id_registry, no triggers)")
    args = ap.parse_args()

    server = db.database_url("postgres", role=db.ADMIN_ROLE)
    name = f"srbench_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server, name)
    url = db.with_database(server, name)
    migrate.upgrade(url, "0004" if args.without_registry else "head")
    with db.connect(url) as conn:
        conn.execute(PLAIN_DDL)
        conn.execute("CREATE TABLE events_plain_to_sql (LIKE events_plain INCLUDING ALL)")
        version = conn.execute("SHOW server_version").fetchone()[0]
    tmp = Path(tempfile.mkdtemp(prefix="srbench_"))
    try:
        # enough years of 28 instruments to pass --rows, then trimmed to exactly --rows
        years = max(1.0, args.rows / 230_000)
        files = write_event_files(tmp / "all", years=years, instruments=28, seed=args.seed,
                                  event_rate=1.0)
        frames = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in files]
        total = sum(len(f) for f in frames)
        keep = args.rows / total
        out, n = [], 0
        for f, frame in zip(files, frames, strict=True):
            part = frame.iloc[:int(len(frame) * keep)]
            p = tmp / f.name
            part.to_csv(p, index=False)
            out.append(p)
            n += len(part)
        files = out
        columns = list(pd.read_csv(files[0], nrows=0).columns)
        print(f"revision {migrate.current(url)}; "
              f"registry {'off' if args.without_registry else 'on'}")
        print(f"PostgreSQL {version}; {n:,} rows in {len(files)} CSV files "
              f"({sum(f.stat().st_size for f in files) / 1e6:.0f} MB)\n", flush=True)

        t = time.perf_counter()
        pairs = set()
        for frame in frames:
            pairs |= set(zip(frame["instrument"], frame["granularity"], strict=True))
        loader.ensure_partitions(url, pairs)
        part_secs = time.perf_counter() - t

        c_rows, c_secs, c_lat = run_copy(url, files, columns)
        v_rows, v_secs, v_lat = run_copy_levels(url, tmp)
        l_rows, l_secs, l_lat, phases = run_loader(url, files)
        r_rows, r_secs, r_lat, _ = run_loader(url, files)  # everything is a duplicate now
        sample = pd.concat([pd.read_csv(f) for f in files])[:args.to_sql_rows]
        sample["event_creation_date"] = pd.to_datetime(sample["event_creation_date"], utc=True)
        s_rows, s_secs, s_lat = run_to_sql(url, sample)
        with db.connect(url) as conn:
            levels = conn.execute(
                "SELECT count(*) FROM support_and_resistance_master").fetchone()[0]

        base = c_rows / c_secs
        both = c_rows / (c_secs + v_secs)
        print(f"{'method':<46} {'rows':>10} {'rows/s':>10} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'p99 ms':>8} {'vs copy':>8} {'vs copy+lv':>10}")
        for label, rows, secs, lat in (
                ("psql \\copy events -> plain table (baseline)", c_rows, c_secs, c_lat),
                ("psql \\copy events, then levels with FK", c_rows, c_secs + v_secs,
                 c_lat),
                ("sr-platform loader (events + levels)", l_rows, l_secs, l_lat),
                ("sr-platform loader, reload (all duplicates)", n, r_secs, r_lat),
                ("pandas to_sql(method='multi'), events only", s_rows, s_secs, s_lat)):
            p50, p95, p99 = pct(lat)
            print(f"{label:<46} {rows:>10,} {rows / secs:>10,.0f} {p50:>8.0f} {p95:>8.0f} "
                  f"{p99:>8.0f} {rows / secs / base:>7.2f}x {rows / secs / both:>9.2f}x")
        print(f"\npartitions for {len(pairs)} pairs created beforehand in {part_secs:.1f} s "
              "(as the landing sensor does)")
        print("\nloader phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
        print(f"level rows written: {levels:,}; reload inserted {r_rows} rows")
    finally:
        db.drop_database(server, name)
        subprocess.run(["rm", "-rf", str(tmp)])


if __name__ == "__main__":
    main()
