"""`make bench`: issue 7's benchmarks in one process against one server, one report.

    .venv/bin/python bench/run.py [--size 1|5] [--rows 400000] [--quick]
                                  [--only load,queries,read,writers]

Prints the tables and writes bench/results/latest.md, latest.json and one PNG per comparison
(matplotlib, the `bench` extra; without it no charts). Sections:
- load (bench/load_adapter.py, which calls bench/load_bench.py): the baselines (psql \\copy into
  the flat indexed table, \\copy events + levels, pandas to_sql(method='multi'), psycopg
  executemany) and the loader on new partitions, existing partitions, a reload, small files;
- queries (bench/query_bench.py, goal 5) at 1 y (~5M events, generated straight into the
  leaves) and, with --size 5, at 5x (the same database grown to 5 years);
- read (bench/read_section.py, issue 15): the read API beside pandas.read_sql, ADBC, connectorx
  and polars on the queries' data, at 1 y and with --size 5 at 5x; peak memory of the big read;
- writers (bench/writers_bench.py, goal 6): 1, 2, 4 loader processes on overlapping files,
  zero lost / duplicated rows asserted;
- notify (bench/notify_bench.py, issue 16): insert-to-subscriber latency, the change log's
  cost on a --notify-rows load (A/B, 0009 against 0008), a SIGKILLed subscriber, log size;
- landing (bench/sensor_bench.py, issue 16 section 4): files landed in a running `dagster dev`
  to queryable, beside `sr-platform load` of the same files (make run's sample; --quick: a
  small one, one repeat).
Each goal is marked met or missed against its target. The default run takes about 20-25
minutes on 2 cores; --size 5 adds the 5x data (about 20M more rows) and its queries.
--quick (with e.g. --rows 2000) is a smoke run of every section at a tiny size.

The server: SR_PLATFORM_DATABASE_URL's when set; otherwise a throwaway local cluster of the
benchmarks' own (state in .sr_platform-bench/, git-ignored; a free port), never the checkout's
dev cluster. Its settings are the dev cluster's but archive_mode = off: the dev cluster archives
every WAL segment for point-in-time recovery and only backup rotation prunes that archive, so
--size 5 once wrote 53 GB into it and filled the disk. WAL stays replica-level, so the server
writes as much WAL as in production; it is recycled after checkpoints instead of archived.
The cluster is stopped at the end (--keep-cluster leaves it running); its data stays for the
next run. Delete it with `bench/run.py --remove-cluster` (or
`SR_PLATFORM_HOME=.sr_platform-bench make clean-db`).
The single benchmarks (bench/*_bench.py) run standalone use the dev cluster as before.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import load_adapter  # noqa: E402
import notify_bench  # noqa: E402
import query_bench  # noqa: E402
import query_data  # noqa: E402
import read_section  # noqa: E402
import report  # noqa: E402
import sensor_bench  # noqa: E402
import writers_bench  # noqa: E402
from common import new_database  # noqa: E402

from sr_platform.core import db, settings  # noqa: E402

SECTIONS = ("load", "queries", "read", "writers", "notify", "landing")
# SR_PLATFORM_BENCH_HOME: another cluster state (test_bench uses its own, so a smoke run never
# stops the cluster a real `make bench` is using)
BENCH_HOME = Path(os.environ.get("SR_PLATFORM_BENCH_HOME") or HERE.parent / ".sr_platform-bench")


def use_bench_cluster() -> bool:
    """Unless SR_PLATFORM_DATABASE_URL names a server, point this process and every process it
    starts at the benchmarks' own local cluster: its own state directory (so its own runtime
    directory, data and passwords), a free port at init, no WAL archiving. Before any
    database call: db.local_cluster() reads these at each call."""
    if settings.external_database_url():
        return False
    os.environ["SR_PLATFORM_HOME"] = str(BENCH_HOME)
    os.environ[settings.WAL_ARCHIVE_ENV] = "off"
    os.environ["SR_PLATFORM_PG_PORT"] = "0"  # any free port (the dev cluster's stays its own)
    return True


def log(msg: str) -> None:
    print(msg, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=int(os.environ.get("SIZE") or 1),
                    help="1: queries at 1 y (~5M events); 5: also at 5x (~25M)")
    ap.add_argument("--rows", type=int, default=400_000, help="rows of the load comparison")
    ap.add_argument("--query-rows-per-year", type=int, default=query_data.ROWS_PER_YEAR)
    ap.add_argument("--writer-rows", type=int, default=150_000)
    ap.add_argument("--repeats", type=int, default=2, help="repeats of loads and writer runs")
    ap.add_argument("--query-repeat", type=int, default=100, help="calls per query round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per query")
    ap.add_argument("--read-repeat", type=int, default=30,
                    help="read section: calls per round of each client")
    ap.add_argument("--read-big-repeat", type=int, default=3,
                    help="read section: timed calls of read_events on every pair's year")
    ap.add_argument("--pruning-pairs", type=int, default=500)
    ap.add_argument("--notify-rows", type=int, default=1_000_000, help="rows of the notify A/B")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes and repeats (a smoke run; figures mean nothing)")
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--name", default="latest")
    ap.add_argument("--keep-cluster", action="store_true",
                    help="leave the benchmarks' local cluster running at the end")
    ap.add_argument("--remove-cluster", action="store_true",
                    help="stop and delete the benchmarks' local cluster, then exit")
    args = ap.parse_args(argv)
    own_cluster = use_bench_cluster()
    if args.remove_cluster:
        if not own_cluster:
            ap.error("--remove-cluster: SR_PLATFORM_DATABASE_URL is set; there is no "
                     "benchmark cluster to remove")
        db.local_cluster().remove()
        log(f"removed the benchmark cluster of {BENCH_HOME}")
        return 0
    if args.quick:
        args.query_rows_per_year = max(20 * args.rows, 20_000)
        args.writer_rows = min(args.writer_rows, max(args.rows, 2_000))
        args.repeats, args.query_repeat, args.rounds = 1, 5, 2
        args.read_repeat, args.read_big_repeat = 5, 1
        args.pruning_pairs = min(args.pruning_pairs, 120)
        args.notify_rows = min(args.notify_rows, max(args.rows, 20_000))
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = set(only) - set(SECTIONS)
    if bad:
        ap.error(f"--only: unknown section(s) {sorted(bad)}; choose from {SECTIONS}")

    try:
        return _run(args, only, argv, own_cluster)
    finally:
        if own_cluster:
            cluster = db.local_cluster()
            if args.keep_cluster:
                log(f"the benchmark cluster keeps running: {cluster.url()} (stop it with "
                    f"SR_PLATFORM_HOME={BENCH_HOME} sr-platform db stop)")
            else:
                cluster.stop()
                log(f"stopped the benchmark cluster ({cluster.data_dir}); "
                    "bench/run.py --remove-cluster deletes it")


def _queries_and_reads(args: argparse.Namespace, only: list[str], res: dict) -> None:
    """The queries and read sections share one database: 1 y, then (--size 5) grown to 5x."""
    srv, name, url = new_database("srbench_q")
    try:
        for size in ([1, args.size] if args.size > 1 else [1]):
            label = "1y" if size == 1 else f"{size}x"
            if size == 1:
                log(f"== data at 1 y ({args.query_rows_per_year:,} events a year)")
                fill = query_data.fill(url, years=1, rows_per_year=args.query_rows_per_year,
                                       log=log)
            else:
                log(f"== data at {size}x: growing the data to {size} years")
                fill = query_data.fill(url, years=size - 1, offset_years=1,
                                       rows_per_year=args.query_rows_per_year, log=log)
            if "queries" in only:
                log(f"== queries at {label}")
                q = query_bench.run(url, args.query_repeat, args.rounds, label, log=log,
                                    pruning_pairs=args.pruning_pairs)
                q["fill"] = fill
                res.setdefault("queries", []).append(q)
            if "read" in only:
                log(f"== reads at {label}: read_events beside read_sql, ADBC, connectorx, "
                    "polars")
                r = read_section.run(url, args.read_repeat, args.rounds, label, log=log,
                                     big_repeat=args.read_big_repeat)
                r["fill"] = fill
                res.setdefault("read", []).append(r)
    finally:
        db.drop_database(srv, name)


def _run(args: argparse.Namespace, only: list[str], argv: list[str] | None,
         own_cluster: bool) -> int:
    t0 = time.perf_counter()
    server = db.database_url("postgres", role=db.ADMIN_ROLE)
    with db.connect(server) as c:
        version, archive_mode, wal_level, port = c.execute(
            "SELECT current_setting('server_version'), current_setting('archive_mode'), "
            "current_setting('wal_level'), current_setting('port')").fetchone()
    where = (f"the benchmarks' own local cluster {BENCH_HOME.name}/ on port {port}"
             if own_cluster else "SR_PLATFORM_DATABASE_URL's server")
    log(f"== server: PostgreSQL {version}, {where}; archive_mode={archive_mode}, "
        f"wal_level={wal_level}")
    res: dict = {"environment": {
        "started": f"{datetime.now(UTC):%Y-%m-%d %H:%M}", "postgres": version,
        "server": where, "archive_mode": archive_mode, "wal_level": wal_level,
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "loadavg": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": "bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": {k: str(v) for k, v in vars(args).items()}}}

    if "load" in only:
        log(f"== load: {args.rows:,} rows, {args.repeats} repeat(s)")
        res["load"] = load_adapter.run(args.rows, repeats=args.repeats,
                                       small_files=not args.quick, log=log,
                                       backfill_instruments=0 if args.quick else 2)
        for m in res["load"]["methods"]:
            log(f"  {m['name']:<66} {m['rows_per_s']:>10,.0f} rows/s")
    if "queries" in only or "read" in only:
        _queries_and_reads(args, only, res)
    if "writers" in only:
        procs = (1, 2) if args.quick else (1, 2, 4)
        log(f"== concurrent writers: {procs} processes, {args.writer_rows:,} rows")
        res["writers"] = writers_bench.run(args.writer_rows, procs, args.repeats, log=log)
    if "notify" in only:
        log(f"== notify: {args.notify_rows:,} rows A/B, {args.repeats} repeat(s)")
        res["notify"] = notify_bench.run(args.notify_rows, 100 if args.quick else 1_000,
                                         args.repeats, log=log)

    if "landing" in only:
        log("== landing: files landed in a running dagster dev -> queryable, beside the CLI")
        res["landing"] = sensor_bench.run(
            **({"years": 0.1, "instruments": 2, "repeats": 1} if args.quick else {}))
    res["environment"]["seconds"] = time.perf_counter() - t0
    res["environment"]["loadavg_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    md, js = report.write(res, args.out, args.name)
    log("\n" + md.read_text())
    log(f"wrote {md}, {js} and {len(res['charts'])} chart(s)")
    writers_ok = res.get("writers", {}).get("ok", True)
    return 0 if writers_ok and res.get("notify", {}).get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
