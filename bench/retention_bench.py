"""Retention benchmark: one day's expiry at two table sizes, to show that the nightly prune
costs what expires and not what is kept.

    .venv/bin/python bench/retention_bench.py [--years 1 3] [--instruments 28]

For each size: a new database, generated events for `years` years ending 2026-11-01, loaded
with the project's loader (events + levels). Then retention runs as of (oldest event + 2 years
+ 1 day), which expires exactly the first day of data, and again for the next day. Reported:
rows kept, events and levels pruned, seconds, WAL bytes written by the prune, dead tuples left
in the pruned leaves, and batches/second. Writes bench/results/retention.md.
"""

import argparse
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sr_platform.core import db, loader, migrate, retention  # noqa: E402
from sr_platform.core.generate import write_event_files  # noqa: E402

END = datetime(2026, 11, 1, tzinfo=UTC)


def one_size(server: str, years: float, instruments: int, event_rate: float) -> list[dict]:
    name = f"srbench_ret_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server, name, owner=db.OWNER_ROLE)
    url = db.with_database(server, name)
    rows = []
    try:
        migrate.upgrade(url)
        with tempfile.TemporaryDirectory() as tmp:
            files = write_event_files(Path(tmp), years=years, instruments=instruments, seed=1,
                                      end=END, event_rate=event_rate)
            t0 = time.perf_counter()
            loader.load_paths(files, url)
            load_s = time.perf_counter() - t0
        admin = db.libpq_url(db.role_url(url, db.ADMIN_ROLE))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            oldest = conn.execute("SELECT min(event_creation_date) FROM new_resistance_events"
                                  ).fetchone()[0]
        first_day = oldest.replace(hour=0, minute=0, second=0, microsecond=0)
        for day in (1, 2, 60):  # one day, the next day, then eight weeks at once
            as_of = (pd.Timestamp(first_day) + pd.DateOffset(years=2)
                     + pd.Timedelta(days=day)).to_pydatetime()
            with psycopg.connect(admin, autocommit=True) as conn:
                kept = conn.execute("SELECT count(*) FROM new_resistance_events").fetchone()[0]
                lsn0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            t0 = time.perf_counter()
            report = retention.prune(url, as_of=as_of)
            secs = time.perf_counter() - t0
            with psycopg.connect(admin, autocommit=True) as conn:
                wal = conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn",
                                   (str(lsn0),)).fetchone()[0]
                dead = conn.execute(
                    "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE relname "
                    "= ANY(%s)", ([lp.partition for lp in report.leaves],)).fetchone()[0]
            rows.append({"years": years, "events_in_table": kept, "load_s": round(load_s, 1),
                         "day": day, "events_pruned": report.rows[retention.EVENTS],
                         "levels_pruned": report.rows[retention.LEVELS],
                         "seconds": round(secs, 3),
                         "rows_per_s": round((report.rows[retention.EVENTS]
                                              + report.rows[retention.LEVELS]) / secs),
                         "wal_mb": round(int(wal) / 2**20, 2), "dead_tuples_after": int(dead),
                         "leaves_touched": len({lp.partition for lp in report.leaves})})
    finally:
        db.drop_database(server, name)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--years", type=float, nargs="+", default=[1, 3])
    ap.add_argument("--instruments", type=int, default=28)
    ap.add_argument("--event-rate", type=float, default=1.0,
                    help="share of bars that are events (1.0: about 228k rows per year)")
    args = ap.parse_args()
    server = db.database_url("postgres", role=db.ADMIN_ROLE)
    rows = [r for y in args.years
            for r in one_size(server, y, args.instruments, args.event_rate)]
    table = pd.DataFrame(rows).to_markdown(index=False)
    print(table)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "retention.md").write_text(
        f"# Retention: one day's expiry at two sizes\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"`bench/retention_bench.py --years {' '.join(map(str, args.years))}`\n\n{table}\n")


if __name__ == "__main__":
    main()
