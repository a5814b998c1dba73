"""Query helpers bind DECIMAL columns as Decimal, so the price index is usable; events_frame
returns exact values with fixed dtypes."""

import math
from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import psycopg

from sr_platform.core import db, queries

from .conftest import insert_event


def test_price_queries_bind_decimal_and_use_the_index(clean_db):
    with psycopg.connect(db.libpq_url(clean_db), autocommit=True) as conn:
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1')")
        for i, price in enumerate(("1.084210", "1.084500", "1.090000")):
            insert_event(conn, event_price_level=Decimal(price),
                         event_creation_date=f"2026-03-0{i + 2}T13:00:00Z")
        assert queries.as_decimal(1.0845) == Decimal("1.0845")
        by_float = queries.events_near_price(conn, "EUR_USD", "H1", 1.0843, 0.0003)
        by_decimal = queries.events_near_price(conn, "EUR_USD", "H1", Decimal("1.0843"),
                                               Decimal("0.0003"))
        assert [r[5] for r in by_float] == [Decimal("1.084210"), Decimal("1.084500")]
        assert by_float == by_decimal
        # Only the price bounds: with the pair's equality filter too, the planner may pick the
        # (instrument, granularity) index on three rows, which says nothing about the binding.
        conn.execute("ANALYZE new_resistance_events")
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT * FROM new_resistance_events WHERE "
            "event_price_level BETWEEN %s AND %s", (Decimal("1.0840"), Decimal("1.0846"))))
        assert "event_price_level_idx" in plan
        latest = queries.latest_events(conn, "EUR_USD", "H1", limit=2)
        assert [r[5] for r in latest] == [Decimal("1.090000"), Decimal("1.084500")]


def _frame_fixture(conn) -> list[tuple]:
    """Three EUR_USD events over two granularities (one NULL volume, one awkward decimal), one
    GBP_USD event; returns the EUR_USD ids in time order."""
    for g in ("H1", "H4"):
        conn.execute("SELECT ensure_partition('EUR_USD', %s)", (g,))
    conn.execute("SELECT ensure_partition('GBP_USD', 'H1')")
    ids = []
    for ts, g, price, volume in (
            ("2026-03-02T13:00:00Z", "H1", "1.084210", "1234.50"),
            ("2026-03-02T16:00:00.250000Z", "H4", "1.100001", None),
            ("2026-03-03T09:00:00Z", "H1", "123456.123456", "0.01")):
        ids.append(insert_event(conn, event_creation_date=ts, granularity=g,
                                event_price_level=Decimal(price),
                                volume_at_event=None if volume is None else Decimal(volume))[0])
    insert_event(conn, instrument="GBP_USD", event_creation_date="2026-03-02T14:00:00Z")
    return ids


def test_events_frame_exact_values_and_dtypes(clean_db):
    with psycopg.connect(db.libpq_url(clean_db), autocommit=True) as conn:
        ids = _frame_fixture(conn)
    reader = db.role_url(clean_db, db.READER_ROLE)
    with db.connect(reader, autocommit=True) as conn:
        frame = queries.events_frame(conn, "EUR_USD")
        assert list(frame.columns) == list(queries.FRAME_COLUMNS)
        assert {c: str(t) for c, t in frame.dtypes.items()} == {
            "original_event_id": "str", "event_type": "str",
            "event_creation_date": "datetime64[us, UTC]", "granularity": "str",
            "instrument": "str", "event_price_level": "float64", "atr_at_event": "float64",
            "volume_at_event": "float64", "new_resistance_negative_rebound": "float64",
            "new_resistance_negative_rebound_in_atr": "float64", "day_of_week": "int16",
            "hour_of_day": "int16"}
        assert frame["original_event_id"].tolist() == [str(i) for i in ids]
        assert frame["granularity"].tolist() == ["H1", "H4", "H1"]
        assert frame["instrument"].tolist() == ["EUR_USD"] * 3
        assert frame["event_type"].tolist() == ["new_resistance"] * 3
        assert frame["event_creation_date"].tolist() == [
            pd.Timestamp("2026-03-02T13:00:00Z"), pd.Timestamp("2026-03-02T16:00:00.25Z"),
            pd.Timestamp("2026-03-03T09:00:00Z")]
        assert frame["event_price_level"].tolist() == [1.08421, 1.100001, 123456.123456]
        assert frame["volume_at_event"].iloc[[0, 2]].tolist() == [1234.5, 0.01]
        assert math.isnan(frame["volume_at_event"].iloc[1])
        assert frame["atr_at_event"].tolist() == [0.0015] * 3
        assert frame["new_resistance_negative_rebound"].tolist() == [-0.00075] * 3
        assert frame["new_resistance_negative_rebound_in_atr"].tolist() == [-0.5] * 3
        assert frame["day_of_week"].tolist() == [2] * 3
        assert frame["hour_of_day"].tolist() == [13] * 3

        # one granularity, a half-open time range, the newest N: the same rows as the
        # row-by-row helpers return, oldest first
        h1 = queries.events_frame(conn, "EUR_USD", "H1", start=datetime(2026, 3, 2, tzinfo=UTC),
                                  end=datetime(2026, 3, 3, 9, tzinfo=UTC))
        assert h1["original_event_id"].tolist() == [str(ids[0])]
        rows = queries.events_between(conn, "EUR_USD", "H1", datetime(2026, 1, 1, tzinfo=UTC),
                                      datetime(2027, 1, 1, tzinfo=UTC))
        whole = queries.events_frame(conn, "EUR_USD", "H1")
        assert whole["original_event_id"].tolist() == [str(r[0]) for r in rows]
        assert whole["event_price_level"].tolist() == [float(r[5]) for r in rows]
        # the newest 2 of each pair, as read_events means it (H1: both; H4: its one)
        latest = queries.events_frame(conn, "EUR_USD", latest=2)
        assert latest["original_event_id"].tolist() == [str(i) for i in ids]
        assert queries.events_frame(conn, "EUR_USD", "H1", latest=1)[
            "original_event_id"].tolist() == [str(ids[2])]
        assert len(queries.events_frame(conn, "EUR_USD", "W")) == 0
        empty = queries.events_frame(conn, "NOPE")
        assert list(empty.columns) == list(queries.FRAME_COLUMNS) and len(empty) == 0

        # another DateStyle or time zone of the session: the same frame (the row path)
        conn.execute("SET DateStyle = 'SQL, DMY'")
        conn.execute("SET TimeZone = 'Asia/Kolkata'")
        pd.testing.assert_frame_equal(queries.events_frame(conn, "EUR_USD"), frame)
        conn.execute("SET DateStyle = 'ISO, MDY'")
        pd.testing.assert_frame_equal(queries.events_frame(conn, "EUR_USD"), frame)
