"""Query latency against the story's targets, each beside a baseline in the same process.

    .venv/bin/python bench/query_bench.py [--years 5] [--repeat 200]

Loads --years of 28 generated instruments into a throwaway database, then times each query
pattern --repeat times (p50/p95/p99 ms) through the query helpers, next to the way it goes
wrong: a float bound against the DECIMAL price column (the planner compares as double
precision and cannot use the price index).
Targets (US-004): insert < 10 ms per record, query by instrument < 100 ms, a 10k-row range
< 500 ms.
"""

import argparse
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np

from sr_platform.core import db, loader, migrate, queries
from sr_platform.core.generate import write_event_files


def timeit(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--years", type=float, default=5)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    server = db.database_url("postgres", role=db.ADMIN_ROLE)
    name = f"srq_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server, name)
    url = db.with_database(server, name)
    tmp = Path(tempfile.mkdtemp(prefix="srq_"))
    try:
        migrate.upgrade(url)
        write_event_files(tmp, years=args.years, instruments=28, seed=5, event_rate=1.0)
        rows = sum(r.loaded for r in loader.load_paths([tmp], url))
        with db.connect(url, autocommit=True) as c:
            c.execute("VACUUM ANALYZE")
        results = []
        with db.connect(url, role=db.READER_ROLE, autocommit=True) as c:
            lo, hi = datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)
            n_range = len(queries.events_between(c, "EUR_USD", "H1", lo, hi))
            mid = c.execute("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY "
                            "event_price_level) FROM new_resistance_events_h1_eur_usd"
                            ).fetchone()[0]
            results += [
                ("latest 1,000 of a pair (target 100 ms)",
                 timeit(lambda: queries.latest_events(c, "EUR_USD", "H1", 1000), args.repeat)),
                (f"{n_range:,}-row range of a pair (target 500 ms)",
                 timeit(lambda: queries.events_between(c, "EUR_USD", "H1", lo, hi),
                        args.repeat)),
                ("price band of a pair, Decimal bounds",
                 timeit(lambda: queries.events_near_price(c, "EUR_USD", "H1", mid,
                                                          Decimal("0.0005")), args.repeat)),
                ("  baseline: same band, float bounds",
                 timeit(lambda: c.execute(
                     "SELECT * FROM new_resistance_events WHERE instrument = 'EUR_USD' AND "
                     "granularity = 'H1' AND event_price_level BETWEEN %s AND %s",
                     (float(mid) - 0.0005, float(mid) + 0.0005)).fetchall(), args.repeat)),
                ("all granularities of an instrument, count",
                 timeit(lambda: c.execute("SELECT count(*) FROM new_resistance_events "
                                          "WHERE instrument = 'EUR_USD'").fetchone(),
                        args.repeat)),
            ]
        with db.connect(url, role=db.WRITER_ROLE, autocommit=True) as c:
            i = iter(range(10**9))

            def insert_one():
                k = next(i)
                c.execute(
                    "INSERT INTO new_resistance_events (event_creation_date, granularity, "
                    "instrument, event_price_level, atr_at_event, "
                    "new_resistance_negative_rebound, new_resistance_negative_rebound_in_atr, "
                    "day_of_week, hour_of_day) VALUES (%s, 'H1', 'EUR_USD', %s, %s, %s, %s, "
                    "0, 0) RETURNING original_event_id",
                    (datetime(2030, 1, 1, tzinfo=UTC).replace(microsecond=k % 10**6,
                                                              second=k // 10**6 % 60),
                     Decimal("1.1"), Decimal("0.001"), Decimal("-0.0005"), Decimal("-0.5")))
            results.append(("single-row insert, autocommit (target 10 ms)",
                            timeit(insert_one, args.repeat)))
        print(f"PostgreSQL, {rows:,} events loaded; {args.repeat} runs each\n")
        print(f"{'query':<46} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        for label, lat in results:
            p50, p95, p99 = np.percentile(lat, [50, 95, 99])
            print(f"{label:<46} {p50:>8.2f} {p95:>8.2f} {p99:>8.2f}")
    finally:
        db.drop_database(server, name)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
