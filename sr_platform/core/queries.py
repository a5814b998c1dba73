"""Query helpers for the story's read patterns, used by test_queries and bench/query_bench.py
(no asset or CLI command calls them yet). events_frame() is the fast way to a DataFrame.

Values are bound with the column's own type: DECIMAL columns get Decimal, because a float
parameter against DECIMAL(18,6) makes PostgreSQL compare as double precision and skip the
price index (measured here: 357 ms against 29 ms)."""

from datetime import datetime
from decimal import Decimal

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql


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
# bookkeeping and left out), and how events_frame types them.
FRAME_COLUMNS = ("original_event_id", "event_type", "event_creation_date", "granularity",
                 "instrument", "event_price_level", "atr_at_event", "volume_at_event",
                 "new_resistance_negative_rebound", "new_resistance_negative_rebound_in_atr",
                 "day_of_week", "hour_of_day")
FLOAT_COLUMNS = ("event_price_level", "atr_at_event", "volume_at_event",
                 "new_resistance_negative_rebound", "new_resistance_negative_rebound_in_atr")
_ARROW_TYPES = {"original_event_id": pa.string(), "event_type": pa.string(),
                "event_creation_date": pa.timestamp("us"), "granularity": pa.string(),
                "instrument": pa.string(), **{c: pa.float64() for c in FLOAT_COLUMNS},
                "day_of_week": pa.int16(), "hour_of_day": pa.int16()}


def _frame_query(instrument: str, granularity: str | None, start: datetime | None,
                 end: datetime | None, latest: int | None, ordered: bool = True
                 ) -> sql.Composed:
    where = [sql.SQL("instrument = {}").format(sql.Literal(instrument))]
    if granularity is not None:
        where.append(sql.SQL("granularity = {}").format(sql.Literal(granularity)))
    if start is not None:
        where.append(sql.SQL("event_creation_date >= {}").format(sql.Literal(start)))
    if end is not None:
        where.append(sql.SQL("event_creation_date < {}").format(sql.Literal(end)))
    cols = sql.SQL(", ").join(
        sql.SQL("event_creation_date AT TIME ZONE 'UTC'") if c == "event_creation_date"
        else sql.Identifier(c) for c in FRAME_COLUMNS)
    query = sql.SQL("SELECT {} FROM new_resistance_events WHERE {}").format(
        cols, sql.SQL(" AND ").join(where))
    if latest is not None:  # the newest `latest` rows, returned oldest first like the rest
        inner = sql.SQL("SELECT * FROM new_resistance_events WHERE {} "
                        "ORDER BY event_creation_date DESC LIMIT {}").format(
            sql.SQL(" AND ").join(where), sql.Literal(int(latest)))
        query = sql.SQL("SELECT {} FROM ({}) e").format(cols, inner)
    return query + sql.SQL(" ORDER BY event_creation_date, granularity") if ordered else query


def events_frame(conn: psycopg.Connection, instrument: str, granularity: str | None = None,
                 start: datetime | None = None, end: datetime | None = None,
                 latest: int | None = None) -> pd.DataFrame:
    """Events of `instrument` (one granularity, or all), `start` <= event_creation_date < `end`
    (either bound optional; or only the newest `latest`), oldest first, as a pandas DataFrame
    with FRAME_COLUMNS: ids and text as str, event_creation_date as datetime64[us, UTC], the
    DECIMAL columns as float64 (NaN for a NULL volume) and day_of_week / hour_of_day as int16.

    The rows come as one COPY ... TO STDOUT (CSV) parsed by pyarrow's CSV reader, not as
    Python tuples: psycopg's per-value Decimal objects cost about 5x more for 10,000 rows, and
    a server-side ::float8 cast costs the server as much as the text it replaces (numeric to
    float8 goes through text). Each float64 is the double nearest the stored decimal, i.e.
    exactly float(Decimal(value)) (DECIMAL(18,6) values up to 15 significant digits round-trip).
    Needs the session's DateStyle to be ISO (PostgreSQL's default); other styles take the
    slower row path, with the same result."""
    if not (conn.info.parameter_status("DateStyle") or "ISO").startswith("ISO"):
        return _frame_from_rows(conn, _frame_query(instrument, granularity, start, end, latest))
    # unordered: the server then appends the leaves' rows as they come instead of merging
    # them in time order and sorting each timestamp's granularities (a month of one
    # instrument: MergeAppend + Incremental Sort); Arrow sorts them (C collation: the same
    # byte order as the database's)
    query = _frame_query(instrument, granularity, start, end, latest, ordered=False)
    buf = bytearray()
    with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(query)) as cp:
        for chunk in cp:
            buf += chunk
    if not buf:
        return _arrow_frame(pa.table({c: pa.array([], t) for c, t in _ARROW_TYPES.items()}))
    return _arrow_frame(pacsv.read_csv(
        pa.py_buffer(buf),
        read_options=pacsv.ReadOptions(column_names=list(FRAME_COLUMNS)),
        convert_options=pacsv.ConvertOptions(column_types=_ARROW_TYPES,
                                             strings_can_be_null=False,
                                             quoted_strings_can_be_null=False)))


def _arrow_frame(table: pa.Table) -> pd.DataFrame:
    # naive UTC -> UTC-aware in Arrow, a change of type only (pandas' tz_localize walks the
    # data: 1.3 ms of a 1,000-row frame's 10)
    i = table.schema.get_field_index("event_creation_date")
    table = table.set_column(i, "event_creation_date", table.column(i).cast(
        pa.timestamp("us", tz="UTC")))
    return table.sort_by([("event_creation_date", "ascending"),
                          ("granularity", "ascending")]).to_pandas()


def _frame_from_rows(conn: psycopg.Connection, query: sql.Composed) -> pd.DataFrame:
    with conn.cursor(binary=True) as cur:  # binary: independent of DateStyle
        frame = pd.DataFrame(cur.execute(query).fetchall(), columns=list(FRAME_COLUMNS))
    for c in FLOAT_COLUMNS:
        frame[c] = frame[c].astype("float64")
    for c in ("original_event_id", "event_type", "granularity", "instrument"):
        frame[c] = frame[c].astype(str).astype("str")
    frame["event_creation_date"] = frame["event_creation_date"].astype("datetime64[us]")
    for c in ("day_of_week", "hour_of_day"):
        frame[c] = frame[c].astype("int16")
    return _typed(frame)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame["event_creation_date"] = frame["event_creation_date"].dt.tz_localize("UTC")
    return frame
