"""The user story's performance targets, measured against the live database.

Every write happens inside one transaction that is rolled back, its probe pair's leaves
included (created in that transaction), so live data is untouched and no table, partition or
row is left (sequences and the WAL are the only traces). While it runs the transaction holds
the probe granularity's parents locked (CREATE TABLE ... PARTITION OF): readers of other H1
pairs wait for it (1.1 s measured with a 10,000-row bulk load).
Reads run on the pair with the most rows.
"""

import io
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg import sql

from . import db, settings

SLA_PAIR = ("SLA_PROBE", "H1")  # the writes' pair, created and dropped by the rollback
LOCK_TIMEOUT = "10s"  # the probe gives up rather than queue readers behind its DDL locks


@dataclass(frozen=True)
class Targets:
    insert_p99_ms: float = 10.0
    bulk_rows_per_s: float = 1000.0
    latest_p95_ms: float = 100.0
    range_p95_ms: float = 500.0

    @classmethod
    def from_env(cls) -> "Targets":
        return settings.overrides(cls, "SR_PLATFORM_SLA_")


def percentiles(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"p50": round(q[49], 3), "p95": round(q[94], 3), "p99": round(q[98], 3),
            "n": len(ms)}


def _row(i: int, ts: datetime) -> tuple:
    return (str(uuid.uuid4()), ts, SLA_PAIR[1], SLA_PAIR[0], "1.100000", "0.001000",
            "-0.000500", "-0.500000", ts.weekday(), ts.hour)


INSERT = ("INSERT INTO new_resistance_events (original_event_id, event_creation_date, "
          "granularity, instrument, event_price_level, atr_at_event, "
          "new_resistance_negative_rebound, new_resistance_negative_rebound_in_atr, "
          "day_of_week, hour_of_day) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


def measure(url: str | None = None, repeats: int = 50, bulk_rows: int = 10_000,
            range_rows: int = 10_000) -> dict[str, dict]:
    url = url or db.database_url()
    out: dict[str, dict] = {}
    drop_legacy_probe(url)
    base = datetime(2099, 1, 5, tzinfo=UTC)  # a Monday far from real data
    with db.connect(url, role=db.WRITER_ROLE) as conn:
        try:
            conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            conn.execute("SELECT ensure_partition(%s, %s)", SLA_PAIR)  # rolled back below
            times = []
            for i in range(repeats):
                row = _row(i, base + timedelta(hours=i))
                t0 = time.perf_counter()
                conn.execute(INSERT, row)
                times.append((time.perf_counter() - t0) * 1000)
            out["single_insert"] = percentiles(times)
            buf = io.StringIO()
            for i in range(bulk_rows):
                r = _row(i, base + timedelta(days=30, minutes=i))
                buf.write("\t".join(map(str, r)) + "\n")
            t0 = time.perf_counter()
            with conn.cursor().copy(
                    "COPY new_resistance_events (original_event_id, event_creation_date, "
                    "granularity, instrument, event_price_level, atr_at_event, "
                    "new_resistance_negative_rebound, new_resistance_negative_rebound_in_atr, "
                    "day_of_week, hour_of_day) FROM STDIN") as cp:
                cp.write(buf.getvalue())
            secs = time.perf_counter() - t0
            out["bulk_load"] = {"rows": bulk_rows, "seconds": round(secs, 3),
                                "rows_per_s": round(bulk_rows / secs)}
        finally:
            conn.rollback()
    with db.connect(url, role=db.READER_ROLE) as conn:
        pair = _biggest_pair(conn)
        if pair is None:  # nothing to read: the read checks are not measured
            return out
        out["pair"] = {"instrument": pair[0], "granularity": pair[1]}
        latest = "SELECT * FROM new_resistance_events WHERE instrument = %s AND " \
                 "granularity = %s ORDER BY event_creation_date DESC LIMIT 1000"
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            conn.execute(latest, pair).fetchall()
            times.append((time.perf_counter() - t0) * 1000)
        out["latest_by_instrument"] = percentiles(times)
        bound = conn.execute(
            "SELECT event_creation_date FROM new_resistance_events WHERE instrument = %s AND "
            "granularity = %s ORDER BY event_creation_date DESC OFFSET %s LIMIT 1",
            (*pair, range_rows - 1)).fetchone()
        start = bound[0] if bound else datetime(1970, 1, 1, tzinfo=UTC)
        rng = "SELECT * FROM new_resistance_events WHERE instrument = %s AND granularity = %s " \
              "AND event_creation_date >= %s ORDER BY event_creation_date"
        times, fetched = [], 0
        for _ in range(max(5, repeats // 5)):
            t0 = time.perf_counter()
            fetched = len(conn.execute(rng, (*pair, start)).fetchall())
            times.append((time.perf_counter() - t0) * 1000)
        out["range_query"] = percentiles(times) | {"rows": fetched}
    return out


def _biggest_pair(conn) -> tuple[str, str] | None:
    """The pair with the most rows (by the planner's estimate) that has a row at all."""
    pairs = conn.execute(
        "SELECT instrument, granularity FROM list_partitions() WHERE table_name = "
        "'new_resistance_events' ORDER BY row_count DESC, 1, 2").fetchall()
    for pair in pairs:  # an estimate can be stale: the first pair with a row
        if conn.execute("SELECT 1 FROM new_resistance_events WHERE instrument = %s AND "
                        "granularity = %s LIMIT 1", pair).fetchone():
            return pair[0], pair[1]
    return None


def drop_legacy_probe(url: str) -> list[str]:
    """Drop the empty SLA_PROBE leaves that versions before the rolled-back probe committed
    (levels and features before the events leaf they reference); the leaves dropped."""
    suffix = f"{SLA_PAIR[1]}_{SLA_PAIR[0]}".lower()
    leaves = [f"{t}_{suffix}" for t in ("event_features", "support_and_resistance_master",
                                         "new_resistance_events")]
    with db.connect(url, role=db.READER_ROLE, autocommit=True) as conn:
        present = [leaf for leaf in leaves
                   if conn.execute("SELECT to_regclass(%s)", (f"public.{leaf}",)).fetchone()[0]]
        if not present or any(conn.execute(sql.SQL("SELECT 1 FROM public.{} LIMIT 1").format(
                sql.Identifier(leaf))).fetchone() for leaf in present):
            return []  # none, or one holds rows: not a probe's leftover, left alone
    with db.connect(url, role=db.OWNER_ROLE) as conn:
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        for leaf in present:
            conn.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(leaf)))
        conn.commit()
    return present


# check -> (measurement, statistic, target field, unit); bulk load must reach its target,
# the others must stay under theirs
CHECKS = {
    "single_insert_under_target": ("single_insert", "p99", "insert_p99_ms", "ms"),
    "bulk_load_meets_target": ("bulk_load", "rows_per_s", "bulk_rows_per_s", "rows/s"),
    "latest_by_instrument_under_target": ("latest_by_instrument", "p95", "latest_p95_ms", "ms"),
    "range_query_under_target": ("range_query", "p95", "range_p95_ms", "ms"),
}


CHECK_DESCRIPTIONS = {
    "single_insert_under_target": "p99 of single-row inserts (rolled back) under "
                                  "SR_PLATFORM_SLA_INSERT_P99_MS (default 10 ms).",
    "bulk_load_meets_target": "A 10,000-row COPY (rolled back) reaches "
                              "SR_PLATFORM_SLA_BULK_ROWS_PER_S (default 1,000 rows/s).",
    "latest_by_instrument_under_target": "p95 of the latest 1,000 events of the biggest pair "
                                         "under SR_PLATFORM_SLA_LATEST_P95_MS (default "
                                         "100 ms).",
    "range_query_under_target": "p95 of a 10,000-row time range of the biggest pair under "
                                "SR_PLATFORM_SLA_RANGE_P95_MS (default 500 ms).",
}
SEVERITY_NOTE = " ERROR when missed (the run fails); WARN 'not measured' when nothing was."


def verdicts(measured: dict[str, dict], targets: Targets
             ) -> dict[str, tuple[bool | None, str]]:
    """{check: (met, description)} for every check; met is None when it was not measured."""
    out: dict[str, tuple[bool | None, str]] = {}
    for check, (name, stat, field, unit) in CHECKS.items():
        if name not in measured:
            why = "no events in any pair yet" if "pair" not in measured \
                else f"no {name} measurement"
            out[check] = (None, f"not measured: {why}")
            continue
        value, target = measured[name][stat], getattr(targets, field)
        if unit == "rows/s":
            out[check] = (value >= target, f"{value} rows/s >= {target}")
        else:
            out[check] = (value < target, f"{stat} {value} ms < {target} ms")
    return out
