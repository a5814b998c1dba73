"""Query helpers for the story's read patterns, used by test_queries and bench/query_bench.py
(no asset or CLI command calls them yet).

Values are bound with the column's own type: DECIMAL columns get Decimal, because a float
parameter against DECIMAL(18,6) makes PostgreSQL compare as double precision and skip the
price index (measured here: 357 ms against 29 ms)."""

from datetime import datetime
from decimal import Decimal

import psycopg


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
