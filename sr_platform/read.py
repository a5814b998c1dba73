"""Reading events, levels and features into pandas, Arrow or polars (docs/reading.md).

    from sr_platform import read_events
    frame = read_events("EUR_USD", "H1", start="2026-03-01", end="2026-04-01")

Every read takes `instrument` and `granularity` (a str or a list; None: all), a half-open
time range `start <= event_creation_date < end` (either bound optional; tz-aware datetimes,
pandas Timestamps or ISO 8601 text; naive times are refused), and `url`: None (the platform's
database as the read-only role), a URL, a psycopg connection or a SQLAlchemy engine.
Frames are ordered by (event_creation_date, instrument, granularity, original_event_id).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from .core import reading
from .core.reading import ReadError

__all__ = ["ReadError", "iter_events", "read_events", "read_features", "read_levels"]

Names = str | Sequence[str] | None
Time = datetime | str | None
Number = Decimal | float | int | str | None


def _names(cols: Sequence[reading.Col]) -> tuple[str, ...]:
    return tuple(c.name for c in cols)


def read_events(instrument: Names = None, granularity: Names = None, start: Time = None,
                end: Time = None, *, latest: int | None = None, price: Number = None,
                width: Number = None, columns: Sequence[str] | None = None,
                known_at: Time = None, exact: bool = False, url: Any = None,
                backend: str = "pandas"):
    """Events (new_resistance_events, without its bookkeeping columns).

    latest=N: the newest N of each (instrument, granularity), returned oldest first.
    price/width: only events with price - width <= event_price_level <= price + width.
    known_at=T: only the rows the platform held at T (created_at <= T): a backfill loaded
    after T does not change a backtest run as of T.
    exact=True: DECIMAL columns as decimal128 (pandas: Decimal objects), not float64."""
    q = reading.Query.make(instrument, granularity, start, end, latest=latest, price=price,
                           width=width, columns=columns, known_at=known_at, exact=exact,
                           backend=backend, available=_names(reading.EVENT_COLS))
    return reading.convert(reading.read_table(reading.EVENTS, q, url), q.backend)


def read_levels(instrument: Names = None, granularity: Names = None, start: Time = None,
                end: Time = None, *, status: Names = None, as_of: Time = None,
                latest: int | None = None, price: Number = None, width: Number = None,
                columns: Sequence[str] | None = None, exact: bool = False, url: Any = None,
                backend: str = "pandas"):
    """S/R levels, each with its event's time, price and ATR.

    status: 'active', 'breached' or 'expired' (or a list).
    as_of=T: the levels as known at T, no look-ahead: levels of events after T are left out,
    a level is breached only if its breach_date <= T, and test_count / last_test_date count
    only the tests at or before T (recomputed from the events up to T)."""
    q = reading.Query.make(instrument, granularity, start, end, latest=latest, price=price,
                           width=width, columns=columns, as_of=as_of, status=status,
                           exact=exact, backend=backend, available=_names(reading.LEVEL_COLS))
    return reading.convert(reading.read_table(reading.LEVELS, q, url), q.backend)


def read_features(instrument: Names = None, granularity: Names = None, start: Time = None,
                  end: Time = None, *, latest: int | None = None, price: Number = None,
                  width: Number = None, columns: Sequence[str] | None = None,
                  exact: bool = False, url: Any = None, backend: str = "pandas"):
    """Model features (event_features), one row per event. Their level columns are the
    outcome as last computed; use read_levels(as_of=...) for a point-in-time outcome."""
    q = reading.Query.make(instrument, granularity, start, end, latest=latest, price=price,
                           width=width, columns=columns, exact=exact, backend=backend,
                           available=_names(reading.FEATURE_COLS))
    return reading.convert(reading.read_table(reading.FEATURES, q, url), q.backend)


def iter_events(instrument: Names = None, granularity: Names = None, start: Time = None,
                end: Time = None, *, batch_rows: int = 100_000, price: Number = None,
                width: Number = None, columns: Sequence[str] | None = None,
                known_at: Time = None, exact: bool = False, url: Any = None,
                backend: str = "pandas") -> Iterator[Any]:
    """read_events in frames of at most `batch_rows` rows, in memory bounded by one frame.
    Order: pair by pair (instrument, then granularity), each pair's rows by
    (event_creation_date, original_event_id)."""
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ValueError(f"batch_rows: expected a whole number >= 1, got {batch_rows!r}")
    q = reading.Query.make(instrument, granularity, start, end, price=price, width=width,
                           columns=columns, known_at=known_at, exact=exact, backend=backend,
                           available=_names(reading.EVENT_COLS))
    if q.backend == "polars":
        reading.convert(reading.pa.table({}), "polars")  # fail now if polars is missing
    for table in reading.iter_event_tables(q, batch_rows, url):
        yield reading.convert(table, q.backend)
