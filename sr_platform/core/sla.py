"""The user story's performance targets, measured against the live database.

Every write happens inside one transaction that is rolled back, so live data is untouched
(sequences and the WAL are the only traces). Reads run on the pair with the most rows.
"""

import io
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from . import db, settings

SLA_PAIR = ("SLA_PROBE", "H1")  # the writes' pair (its leaf stays empty)


@dataclass(frozen=True)
class Targets:
    insert_p99_ms: float = 10.0
    bulk_rows_per_s: float = 1000.0
    latest_p95_ms: float = 100.0
    range_p95_ms: float = 500.0

    @classmethod
    def from_env(cls) -> "Targets":
        return settings.from_env(cls, "SR_PLATFORM_SLA_")


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
    with db.connect(url, role=db.WRITER_ROLE, autocommit=True) as conn:
        conn.execute("SELECT ensure_partition(%s, %s)", SLA_PAIR)  # DDL: its own commit
    base = datetime(2099, 1, 5, tzinfo=UTC)  # a Monday far from real data
    with db.connect(url, role=db.WRITER_ROLE) as conn:
        try:
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
        pair = conn.execute(
            "SELECT instrument, granularity FROM list_partitions() WHERE table_name = "
            "'new_resistance_events' ORDER BY row_count DESC, 1, 2 LIMIT 1").fetchone()
        if pair is None:
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


# check -> (measurement, statistic, target field, unit); bulk load must reach its target,
# the others must stay under theirs
CHECKS = {
    "single_insert_under_target": ("single_insert", "p99", "insert_p99_ms", "ms"),
    "bulk_load_meets_target": ("bulk_load", "rows_per_s", "bulk_rows_per_s", "rows/s"),
    "latest_by_instrument_under_target": ("latest_by_instrument", "p95", "latest_p95_ms", "ms"),
    "range_query_under_target": ("range_query", "p95", "range_p95_ms", "ms"),
}


def verdicts(measured: dict[str, dict], targets: Targets) -> dict[str, tuple[bool, str]]:
    """{check: (met, description)} for the measurements present."""
    out: dict[str, tuple[bool, str]] = {}
    for check, (name, stat, field, unit) in CHECKS.items():
        if name not in measured:
            continue
        value, target = measured[name][stat], getattr(targets, field)
        if unit == "rows/s":
            out[check] = (value >= target, f"{value} rows/s >= {target}")
        else:
            out[check] = (value < target, f"{stat} {value} ms < {target} ms")
    return out
