"""Query helpers for the story's read patterns, used by test_queries and bench/query_bench.py
(no asset or CLI command calls them). events_frame() is a thin wrapper over the read API.

Values are bound with the column's own type: DECIMAL columns get Decimal, because a float
parameter against DECIMAL(18,6) makes PostgreSQL compare as double precision and skip the
price index (measured here: 357 ms against 29 ms)."""

from datetime import datetime
from decimal import Decimal

import pandas as pd
import psycopg

from .keys import EVENT_COLUMNS


def as_decimal(value: Decimal | float | int | str) -> Decimal:
    """Decimal for a DECIMAL column; floats go through their shortest repr, not binary."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def latest_events(conn: psycopg.Connection, instrument: str, granularity: str,
                  limit: int = 1000) -> list[tuple]:
    return conn.execute(
        "SELECT * FROM new_resistance_events WHERE instrument = %s AND granularity = %s "
        "ORDER BY event_creation_date DESC LIMIT %s", (instrument, granularity, limit)).fetchall()


def events_between(conn: psycopg.Connection, instrument: str, granularity: str,
                   start: datetime, end: datetime) -> list[tuple]:
    return conn.execute(
        "SELECT * FROM new_resistance_events WHERE instrument = %s AND granularity = %s "
        "AND event_creation_date >= %s AND event_creation_date < %s "
        "ORDER BY event_creation_date", (instrument, granularity, start, end)).fetchall()


def events_near_price(conn: psycopg.Connection, instrument: str, granularity: str,
                      price: Decimal | float | str, width: Decimal | float | str) -> list[tuple]:
    """Events whose level lies within `width` of `price` (both bound as Decimal)."""
    p, w = as_decimal(price), as_decimal(width)
    return conn.execute(
        "SELECT * FROM new_resistance_events WHERE instrument = %s AND granularity = %s "
        "AND event_price_level BETWEEN %s AND %s ORDER BY event_price_level",
        (instrument, granularity, p - w, p + w)).fetchall()


# The event columns of the contract, in the table's order (created_at / updated_at are
# bookkeeping and left out): read_events' columns.
FRAME_COLUMNS = EVENT_COLUMNS  # events_frame's columns: an event's, in the loader's order
FLOAT_COLUMNS = ("event_price_level", "atr_at_event", "volume_at_event",
                 "new_resistance_negative_rebound", "new_resistance_negative_rebound_in_atr")


def events_frame(conn: psycopg.Connection, instrument: str, granularity: str | None = None,
                 start: datetime | None = None, end: datetime | None = None,
                 latest: int | None = None) -> pd.DataFrame:
    """read_events on `conn` (core/reading.py; docs/reading.md): the events of `instrument`
    (one granularity, or all), `start` <= event_creation_date < `end`, or the newest `latest`
    of each (instrument, granularity) as in the read API, oldest first, with FRAME_COLUMNS:
    str ids and text, datetime64[us, UTC], float64 (the double nearest each stored decimal;
    NaN for a NULL volume), int16. Kept for its callers; new code calls read_events."""
    from . import reading

    q = reading.Query.make(instrument, granularity, start, end, latest=latest,
                           available=FRAME_COLUMNS)
    return reading.convert(reading.read_table(reading.EVENTS, q, conn), "pandas")
