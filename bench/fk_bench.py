"""What the levels' foreign key costs, and why the loader ANALYZEs before writing levels.

    .venv/bin/python bench/fk_bench.py [--rows 100000] [--stale-rows 20000]

One throwaway database with 112 (instrument, granularity) pairs. Writes --rows level rows for
--rows events of one pair with: the FK declared on the partitioned parent, no FK, and the FK
declared per leaf (what the schema does). Then the per-leaf FK against a leaf whose statistics
still describe an empty table, against the same after ANALYZE (--stale-rows: the unanalyzed
case is quadratic, so keep it small).
"""

import argparse
import time
import uuid

from sr_platform.core import db, migrate
from sr_platform.core.generate import INSTRUMENTS

EVENTS = """INSERT INTO new_resistance_events (event_creation_date, granularity, instrument,
    event_price_level, atr_at_event, new_resistance_negative_rebound,
    new_resistance_negative_rebound_in_atr, day_of_week, hour_of_day)
    SELECT timestamptz '2020-01-01' + i * interval '1 hour', 'H1', %s, 1.1, 0.01, -0.001,
           -0.1, 0, 0 FROM generate_series(1, %s) i"""
LEVELS = """INSERT INTO support_and_resistance_master
    (original_event_id, event_type, instrument, granularity, event_creation_date)
    SELECT original_event_id, event_type, instrument, granularity, event_creation_date
    FROM new_resistance_events WHERE instrument = %s AND granularity = 'H1'"""
LEAF_FK = "support_and_resistance_master_h1_{i}_event_fkey"
PARENT_FK = """ALTER TABLE support_and_resistance_master ADD CONSTRAINT parent_fk
    FOREIGN KEY (instrument, granularity, event_creation_date, original_event_id)
    REFERENCES new_resistance_events ON DELETE CASCADE"""


def timed(conn, label, rows, results, instrument):
    conn.execute("DELETE FROM support_and_resistance_master WHERE instrument = %s",
                 (instrument,))
    t = time.perf_counter()
    conn.execute(LEVELS, (instrument,))
    secs = time.perf_counter() - t
    results.append((label, rows, secs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--stale-rows", type=int, default=20_000)
    args = ap.parse_args()
    server = db.database_url("postgres", role=db.ADMIN_ROLE)
    name = f"srfk_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server, name)
    url = db.with_database(server, name)
    results: list[tuple[str, int, float]] = []
    try:
        migrate.upgrade(url)
        with db.connect(url, autocommit=True) as c:
            for ins in INSTRUMENTS[:28]:
                for g in ("W", "D", "H4", "H1"):
                    c.execute("SELECT ensure_partition(%s, %s)", (ins.name, g))
            c.execute(EVENTS, ("EUR_USD", args.rows))
            c.execute("ANALYZE new_resistance_events_h1_eur_usd")
            leaf_fk = LEAF_FK.format(i="eur_usd")
            c.execute(f"ALTER TABLE support_and_resistance_master_h1_eur_usd "
                      f"DROP CONSTRAINT {leaf_fk}")
            c.execute(PARENT_FK)
            timed(c, "FK on the partitioned parent", args.rows, results, "EUR_USD")
            c.execute("ALTER TABLE support_and_resistance_master DROP CONSTRAINT parent_fk")
            timed(c, "no FK", args.rows, results, "EUR_USD")
            c.execute(f"""ALTER TABLE support_and_resistance_master_h1_eur_usd
                ADD CONSTRAINT {leaf_fk} FOREIGN KEY
                (instrument, granularity, event_creation_date, original_event_id)
                REFERENCES new_resistance_events_h1_eur_usd ON DELETE CASCADE""")
            timed(c, "FK per leaf (the schema)", args.rows, results, "EUR_USD")
            for analyze, ins in ((False, "GBP_USD"), (True, "USD_JPY")):
                c.execute("BEGIN")  # as the loader: events and levels in one transaction
                c.execute(EVENTS, (ins, args.stale_rows))
                if analyze:
                    c.execute("SELECT analyze_partition(%s, 'H1')", (ins,))
                timed(c, "FK per leaf, fresh leaf " + ("after ANALYZE" if analyze else
                                                       "unanalyzed"), args.stale_rows,
                      results, ins)
                c.execute("COMMIT")
    finally:
        db.drop_database(server, name)
    print(f"{'level rows written with':<44} {'rows':>8} {'seconds':>8} {'us/row':>8} "
          f"{'rows/s':>9}")
    for label, rows, secs in results:
        print(f"{label:<44} {rows:>8,} {secs:>8.2f} {secs / rows * 1e6:>8.1f} "
              f"{rows / secs:>9,.0f}")
    base = results[1][2] / results[1][1]
    print(f"\nFK cost per row: parent {(results[0][2] / results[0][1] - base) * 1e6:.1f} us, "
          f"leaf {(results[2][2] / results[2][1] - base) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
