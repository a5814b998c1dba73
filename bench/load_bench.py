"""Load benchmark: this loader against psql \\copy, side by side in one process, on the same
generated rows and the same server.

    .venv/bin/python bench/load_bench.py [--rows 1000000] [--seed 7] [--to-sql-rows 0]
                                         [--no-sample] [--json out.json]

or, from another script (bench/run.py):

    from bench.load_bench import run          # or load it by path
    figures = run(rows=1_000_000)             # dict, see run(); print_report(figures)

Two batches of `rows` generated rows over the same 28 instruments x 4 granularities (112
pairs): batch A, then batch B (the next stretch of time: new rows for the same pairs). Each
file holds one instrument, all granularities mixed. In order:

  1. psql \\copy batch A into a plain, unpartitioned table with the same columns and indexes
     (the baseline: the practical ceiling for one writer); then batch B into it (a table
     already holding A: the baseline for steady loads);
  2. psql \\copy batch A events into a second plain table, then their level rows (exported,
     \\copy'd through the levels' foreign key): the fair ceiling for what the loader writes;
  3. the loader, batch A into an empty database: every pair new (load-then-attach);
  4. the loader, batch B: the same pairs, existing partitions (steady load);
  5. the loader, batch A again: every row a duplicate (reload);
  6. `make run`'s sample (write_event_files(dir, years=1, instruments=28, seed=0): 28 small
     files, 112 new pairs) loaded into another empty database, in this process and through
     the CLI (`sr-platform load DIR`, process start included);
  7. optionally pandas to_sql(method='multi') on a prefix of batch A (--to-sql-rows).
The loader validates, quarantines, writes events AND levels (with their foreign key) and
keeps the id registry, one transaction per file. p50/p95/p99 are per-file latencies.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sr_platform.core import db, loader, migrate, settings  # noqa: E402
from sr_platform.core.generate import write_event_files  # noqa: E402

PLAIN_DDL = """
CREATE TABLE {e} (LIKE new_resistance_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE {e} ADD PRIMARY KEY
    (instrument, granularity, event_creation_date, original_event_id);
CREATE INDEX ON {e} (instrument, granularity);
CREATE INDEX ON {e} (event_creation_date DESC);
CREATE INDEX ON {e} (event_price_level);
"""
LEVELS_DDL = """
CREATE TABLE levels_plain (LIKE support_and_resistance_master INCLUDING DEFAULTS
                           INCLUDING CONSTRAINTS);
ALTER TABLE levels_plain ADD PRIMARY KEY (instrument, granularity, event_creation_date, id);
ALTER TABLE levels_plain ADD UNIQUE
    (instrument, granularity, event_creation_date, original_event_id);
ALTER TABLE levels_plain ADD FOREIGN KEY
    (instrument, granularity, event_creation_date, original_event_id)
    REFERENCES events_plain2 ON DELETE CASCADE;
"""
SMALL_TARGET_SECONDS = 3.0
NEW_TARGET, STEADY_TARGET = 1.5, 0.8  # issue 7: x raw \copy


def pct(values: list[float]) -> dict[str, float]:
    a = np.array(values or [0.0]) * 1000
    return {f"p{q}_ms": float(np.percentile(a, q)) for q in (50, 95, 99)}


def figure(rows: int, secs: float, lat: list[float], **extra) -> dict:
    return {"rows": rows, "seconds": secs, "rows_per_s": rows / secs if secs else 0.0,
            **pct(lat), **extra}


def psql(url: str, command: str) -> None:
    subprocess.run([str(settings.pg_bin_dir() / "psql"), "-q", "-v", "ON_ERROR_STOP=1",
                    db.libpq_url(url), "-c", command], check=True)


def scalar(url: str, query: str):
    with db.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


def run_copy(url: str, table: str, files: list[Path], columns: list[str]) -> dict:
    lat = []
    before = scalar(url, f"SELECT count(*) FROM {table}")
    t0 = time.perf_counter()
    for f in files:
        t = time.perf_counter()
        psql(url, f"\\copy {table} ({', '.join(columns)}) FROM '{f}' CSV HEADER")
        lat.append(time.perf_counter() - t)
    secs = time.perf_counter() - t0
    return figure(scalar(url, f"SELECT count(*) FROM {table}") - before, secs, lat)


def run_copy_levels(url: str, tmp: Path) -> dict:
    """One level row per event of events_plain2, \\copy'd through the foreign key."""
    out = tmp / "levels.csv"
    psql(url, "\\copy (SELECT original_event_id, event_type, instrument, granularity, "
              f"event_creation_date FROM events_plain2) TO '{out}' CSV")
    t0 = time.perf_counter()
    psql(url, "\\copy levels_plain (original_event_id, event_type, instrument, granularity, "
              f"event_creation_date) FROM '{out}' CSV")
    secs = time.perf_counter() - t0
    return figure(scalar(url, "SELECT count(*) FROM levels_plain"), secs, [secs])


def run_loader(url: str, files: list[Path], expect_new: bool | None = None) -> dict:
    t0 = time.perf_counter()
    results = loader.load_paths(files, url)
    secs = time.perf_counter() - t0
    phases: dict[str, float] = {}
    for r in results:
        assert r.error is None and r.rejected == 0, r
        for k, v in r.timings.items():
            phases[k] = phases.get(k, 0.0) + v
    new_pairs = sum(len(r.new_pairs) for r in results)
    if expect_new is not None:
        assert (new_pairs > 0) == expect_new, new_pairs
    return figure(sum(r.rows_read for r in results), secs, [r.seconds for r in results],
                  loaded=sum(r.loaded for r in results),
                  duplicates=sum(r.duplicates for r in results), new_pairs=new_pairs,
                  phases={k: round(v, 3) for k, v in phases.items()})


def run_to_sql(url: str, files: list[Path], rows: int) -> dict:
    from sqlalchemy import create_engine
    frame = pd.concat([pd.read_csv(f) for f in files])[:rows]
    frame["event_creation_date"] = pd.to_datetime(frame["event_creation_date"], utc=True)
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
    return figure(len(frame), secs, lat)


def run_executemany(url: str, files: list[Path], rows: int) -> dict:
    """psycopg executemany of single-row INSERTs (pipelined by psycopg 3) into a flat table."""
    frame = pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in files])[:rows]
    cols = list(frame.columns)
    data = [tuple(None if v == "" else v for v in r) for r in frame.itertuples(index=False)]
    query = (f"INSERT INTO events_plain_em ({', '.join(cols)}) "
             f"VALUES ({', '.join(['%s'] * len(cols))})")
    lat = []
    with db.connect(url) as conn:
        conn.execute("CREATE TABLE events_plain_em (LIKE events_plain INCLUDING ALL)")
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            for start in range(0, len(data), 1000):
                t = time.perf_counter()
                cur.executemany(query, data[start:start + 1000])
                lat.append(time.perf_counter() - t)
        conn.commit()
        secs = time.perf_counter() - t0
    return figure(len(data), secs, lat)


def fresh_database(server: str) -> tuple[str, str]:
    name = f"srbench_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server, name)
    url = db.with_database(server, name)
    migrate.upgrade(url)
    return name, url


def run_small(server: str, tmp: Path) -> dict:
    """`make run`'s sample into an empty database: in this process, then via the CLI."""
    sample = tmp / "sample"
    files = write_event_files(sample, years=1, instruments=28, seed=0)
    out = {}
    name, url = fresh_database(server)
    try:
        out["in_process"] = run_loader(url, files, expect_new=True)
    finally:
        db.drop_database(server, name)
    name, url = fresh_database(server)
    try:
        cli = Path(sys.executable).parent / "sr-platform"
        env = dict(os.environ, SR_PLATFORM_DATABASE_URL=url)
        t0 = time.perf_counter()
        done = subprocess.run([str(cli), "load", str(sample)], env=env, capture_output=True,
                              text=True)
        secs = time.perf_counter() - t0
        assert done.returncode == 0, done.stdout + done.stderr
        rows = scalar(url, "SELECT count(*) FROM new_resistance_events")
        out["cli"] = figure(rows, secs, [secs])
    finally:
        db.drop_database(server, name)
    out["files"], out["pairs"] = len(files), out["in_process"]["new_pairs"]
    return out


def make_batches(tmp: Path, rows: int, seed: int, instruments: int = 28
                 ) -> tuple[list[Path], list[Path], list[str]]:
    """Batch A and batch B (the next stretch of time), `rows` rows each, one file per
    instrument: each instrument's rows generated over twice the time, split in two halves."""
    years = max(1.0, 2 * rows / 230_000 * 28 / instruments)
    gen = write_event_files(tmp / "all", years=years, instruments=instruments, seed=seed,
                            event_rate=1.0, files_per_instrument=2)
    batches: list[list[Path]] = [[], []]
    for part in (0, 1):
        paths = [p for p in gen if p.stem.endswith(f"_{part + 1:03d}")]
        frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths]
        keep = rows / sum(len(f) for f in frames)
        (tmp / "AB"[part]).mkdir()
        for p, frame in zip(paths, frames, strict=True):
            out = tmp / "AB"[part] / p.name
            frame.iloc[:int(len(frame) * keep)].to_csv(out, index=False)
            batches[part].append(out)
    columns = list(pd.read_csv(batches[0][0], nrows=0).columns)
    return batches[0], batches[1], columns


def run(rows: int = 1_000_000, seed: int = 7, to_sql_rows: int = 0, small: bool = True,
        server: str | None = None, executemany_rows: int = 0, instruments: int = 28) -> dict:
    """Every figure of the report as a dict (rows/s, seconds, p50/p95/p99 per file, ratios,
    the loader's phases, goals met or missed). `server`: an admin URL of the server (default:
    the project's local cluster)."""
    server = server or db.database_url("postgres", role=db.ADMIN_ROLE)
    name, url = fresh_database(server)
    tmp = Path(tempfile.mkdtemp(prefix="srbench_"))
    out: dict = {"rows_requested": rows}
    try:
        with db.connect(url) as conn:
            conn.execute(PLAIN_DDL.format(e="events_plain") + PLAIN_DDL.format(e="events_plain2")
                         + LEVELS_DDL)
            conn.execute("CREATE TABLE events_plain_to_sql (LIKE events_plain INCLUDING ALL)")
            out["server_version"] = conn.execute("SHOW server_version").fetchone()[0]
        out["revision"] = migrate.current(url)
        batch_a, batch_b, columns = make_batches(tmp, rows, seed, instruments)
        out["files"] = len(batch_a)
        out["megabytes"] = round(sum(f.stat().st_size for f in batch_a) / 1e6, 1)

        out["copy_flat"] = run_copy(url, "events_plain", batch_a, columns)
        out["copy_flat_b"] = run_copy(url, "events_plain", batch_b, columns)
        ev = run_copy(url, "events_plain2", batch_a, columns)
        lv = run_copy_levels(url, tmp)
        out["copy_events_levels"] = figure(ev["rows"], ev["seconds"] + lv["seconds"],
                                           [ev["seconds"] + lv["seconds"]],
                                           events_s=ev["seconds"], levels_s=lv["seconds"])
        out["loader_new"] = run_loader(url, batch_a, expect_new=True)
        out["loader_existing"] = run_loader(url, batch_b, expect_new=False)
        out["loader_reload"] = run_loader(url, batch_a, expect_new=False)
        assert out["loader_reload"]["loaded"] == 0
        out["levels_stored"] = scalar(url, "SELECT count(*) FROM support_and_resistance_master")
        out["registry_rows"] = scalar(url, "SELECT count(*) FROM event_id_registry")
        if to_sql_rows:
            out["to_sql"] = run_to_sql(url, batch_a, to_sql_rows)
        if executemany_rows:
            out["executemany"] = run_executemany(url, batch_a, executemany_rows)
    finally:
        db.drop_database(server, name)
    try:
        if small:
            out["small"] = run_small(server, tmp)
    finally:
        subprocess.run(["rm", "-rf", str(tmp)])
    base, base_b = out["copy_flat"]["rows_per_s"], out["copy_flat_b"]["rows_per_s"]
    both = out["copy_events_levels"]["rows_per_s"]
    figs = list(out.values()) + list(out.get("small", {}).values())
    for fig in figs:
        if isinstance(fig, dict) and "rows_per_s" in fig:
            fig["vs_copy"] = fig["rows_per_s"] / base
            fig["vs_copy_levels"] = fig["rows_per_s"] / both
    out["loader_existing"]["vs_copy_existing"] = out["loader_existing"]["rows_per_s"] / base_b
    out["goals"] = {
        "new partitions >= 1.5x \\copy flat": (out["loader_new"]["vs_copy"], NEW_TARGET),
        "existing partitions >= 0.8x \\copy flat (into a table holding batch A)":
            (out["loader_existing"]["vs_copy_existing"], STEADY_TARGET),
    }
    if "small" in out:
        out["goals"]["small files (CLI) < 3 s"] = (out["small"]["cli"]["seconds"],
                                                   SMALL_TARGET_SECONDS)
    return out


def print_report(out: dict) -> None:
    print(f"PostgreSQL {out['server_version']}, revision {out['revision']}; batch A and B: "
          f"{out['copy_flat']['rows']:,} rows each in {out['files']} CSV files "
          f"({out['megabytes']:.0f} MB each)\n")
    print(f"{'method':<58} {'rows':>10} {'rows/s':>9} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8} {'vs copy':>8} {'vs cp+lv':>8}")
    rows = [
        ("psql \\copy A -> flat indexed table (baseline)", "copy_flat"),
        ("psql \\copy B -> the same table (holding A)", "copy_flat_b"),
        ("psql \\copy A events, then their levels (FK)", "copy_events_levels"),
        ("loader A: new partitions (load-then-attach)", "loader_new"),
        ("loader B: existing partitions (steady)", "loader_existing"),
        ("loader A again: reload, all duplicates", "loader_reload"),
        ("pandas to_sql(method='multi'), events only", "to_sql"),
        ("psycopg executemany, events only", "executemany"),
    ]
    for label, key in rows:
        if key not in out:
            continue
        f = out[key]
        print(f"{label:<58} {f['rows']:>10,} {f['rows_per_s']:>9,.0f} {f['p50_ms']:>8.0f} "
              f"{f['p95_ms']:>8.0f} {f['p99_ms']:>8.0f} {f['vs_copy']:>7.2f}x "
              f"{f['vs_copy_levels']:>7.2f}x")
    print(f"\nloader B against \\copy B into the table holding A: "
          f"{out['loader_existing']['vs_copy_existing']:.2f}x")
    if "small" in out:
        s = out["small"]
        print(f"small files ({s['files']} files, {s['in_process']['rows']:,} rows, "
              f"{s['pairs']} new pairs): {s['in_process']['seconds']:.2f} s in process "
              f"(p50/p95 per file {s['in_process']['p50_ms']:.0f}/"
              f"{s['in_process']['p95_ms']:.0f} ms), {s['cli']['seconds']:.2f} s through the "
              "CLI (process start included)")
    print("\nloader phases, seconds summed over files:")
    for key in ("loader_new", "loader_existing", "loader_reload"):
        print(f"  {key:<16} " + ", ".join(f"{k} {v:.2f}"
                                          for k, v in out[key]["phases"].items()))
    if "small" in out:
        print(f"  {'small':<16} " + ", ".join(
            f"{k} {v:.2f}" for k, v in out["small"]["in_process"]["phases"].items()))
    print(f"\nlevel rows stored: {out['levels_stored']:,}; registry rows: "
          f"{out['registry_rows']:,}; reload inserted {out['loader_reload']['loaded']} rows")
    print("\ngoals:")
    for goal, (value, target) in out["goals"].items():
        met = value < target if "< " in goal else value >= target
        print(f"  {goal}: {value:.2f} ({'met' if met else 'MISSED'})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--to-sql-rows", type=int, default=0)
    ap.add_argument("--executemany-rows", type=int, default=0)
    ap.add_argument("--instruments", type=int, default=28,
                    help="instruments (x4 granularities = pairs) the rows are spread over: "
                         "2 gives a backfill's shape, a few large new pairs")
    ap.add_argument("--no-sample", action="store_true", help="skip the small-files sample")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    out = run(args.rows, args.seed, args.to_sql_rows, small=not args.no_sample,
              executemany_rows=args.executemany_rows, instruments=args.instruments)
    print_report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
