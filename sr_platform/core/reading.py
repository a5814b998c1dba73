"""The read side: events, levels and features from the database into Arrow / pandas / polars,
with fixed types, a documented row order and no look-ahead (as-of reads). The public face is
sr_platform.read; docs/reading.md documents the columns.

Rows travel as COPY ... TO STDOUT (CSV), received through libpq directly (copy_out) or, for
big reads, through a psql process (psql_table), and parsed by pyarrow's CSV reader: no Python
object per value or per row. A range read of events or features with enough rows is split
into parallel COPY streams on one snapshot (split_read.py). A DECIMAL becomes the double nearest the
stored value (pyarrow's parser rounds correctly: exactly float(Decimal(text))), or with
exact=True an Arrow decimal128 of the column's own precision and scale.
"""

from __future__ import annotations

import atexit
import functools
import io
import os
import re
import select
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict

from . import db, settings
from . import split_read as sr
from .keys import EVENTS, FEATURES, GRANULARITIES, INSTRUMENT_RE, LEVELS, Pair
from .queries import as_decimal

BACKENDS = ("pandas", "arrow", "polars")
STATUSES = ("active", "breached", "expired")
# every frame's row order; iter_events goes pair by pair instead (see there)
ORDER = ("event_creation_date", "instrument", "granularity", "original_event_id")
_INSTRUMENT = re.compile(INSTRUMENT_RE)


@dataclass(frozen=True)
class Col:
    """One output column: its SQL expression (on alias e, l or f) and its Arrow type."""

    name: str
    expr: str
    kind: str  # text | uuid (as text) | ts | dec | int16 | int32
    precision: int = 18
    scale: int = 6

    def arrow(self, exact: bool) -> pa.DataType:
        if self.kind == "dec":
            return pa.decimal128(self.precision, self.scale) if exact else pa.float64()
        return {"text": pa.string(), "uuid": pa.string(), "ts": pa.timestamp("us"),
                "int16": pa.int16(), "int32": pa.int32()}[self.kind]

    def select(self) -> sql.Composable:
        # timestamps as UTC wall time: the text carries no offset, Arrow reads it as naive UTC
        # and only the type changes to UTC-aware (no pass over the data)
        expr = sql.SQL(self.expr)
        if self.kind == "ts":
            expr = sql.SQL("({}) AT TIME ZONE 'UTC'").format(expr)
        return sql.SQL("{} AS {}").format(expr, sql.Identifier(self.name))


def _cols(alias: str, spec: str) -> tuple[Col, ...]:
    out = []
    for item in spec.split():
        name, kind, *ps = item.split(":")
        src, _, col = name.rpartition(".")
        prec = dict(zip(("precision", "scale"), map(int, ps), strict=False))
        out.append(Col(col, f"{src or alias}.{col}", kind, **prec))
    return tuple(out)


EVENT_COLS = _cols("e", "original_event_id:uuid event_type:text event_creation_date:ts "
                   "granularity:text instrument:text event_price_level:dec "
                   "atr_at_event:dec volume_at_event:dec:18:2 "
                   "new_resistance_negative_rebound:dec "
                   "new_resistance_negative_rebound_in_atr:dec day_of_week:int16 "
                   "hour_of_day:int16")
LEVEL_COLS = (Col("id", "l.id", "uuid"),) + _cols(
    "l", "original_event_id:uuid instrument:text granularity:text event_creation_date:ts "
    "e.event_price_level:dec e.atr_at_event:dec event_type:text status:text test_count:int32 "
    "last_test_date:ts breach_date:ts")
FEATURE_COLS = _cols("f", "original_event_id:uuid instrument:text granularity:text "
                     "event_creation_date:ts event_type:text event_price_level:dec "
                     "atr_at_event:dec atr_pct_of_price:dec:18:8 volume_at_event:dec:18:2 "
                     "negative_rebound:dec negative_rebound_in_atr:dec day_of_week:int16 "
                     "hour_of_day:int16 level_status:text level_test_count:int32 "
                     "level_last_test_date:ts level_breach_date:ts "
                     "hours_to_breach:dec:12:2 feature_version:int16 computed_at:ts")
# level outcomes recomputed by as-of reads
OUTCOME_COLUMNS = ("status", "test_count", "last_test_date", "breach_date")


class ReadError(ConnectionError):
    """The database could not be reached; the message names it, never its password."""


# ---------------------------------------------------------------- arguments


def _names(arg: str, value: str | Sequence[str] | None, check) -> tuple[str, ...] | None:
    if value is None:
        return None
    values = (value,) if isinstance(value, str) else tuple(value)
    for v in values:
        if not isinstance(v, str):
            raise TypeError(f"{arg}: expected a str or a list of str, got {v!r}")
        check(v)
    if not values:
        raise ValueError(f"{arg}: an empty list selects nothing; leave it out (None) for all")
    return values


def _check_granularity(g: str) -> None:
    if g not in GRANULARITIES:
        raise ValueError(f"granularity: unknown granularity {g!r}; expected one of "
                         f"{', '.join(GRANULARITIES)}")


def _check_instrument(i: str) -> None:
    if not _INSTRUMENT.match(i):
        raise ValueError(f"instrument: {i!r} is not an instrument name (upper case letters, "
                         "digits and '_', e.g. 'EUR_USD')")


def _check_status(s: str) -> None:
    if s not in STATUSES:
        raise ValueError(f"status: unknown status {s!r}; expected one of {', '.join(STATUSES)}")


def as_instant(arg: str, value: Any) -> datetime | None:
    """A tz-aware datetime (microseconds) from a datetime, pandas Timestamp, date or ISO text.
    Naive times are refused: a naive time's zone is a guess, and a wrong guess shifts a
    backtest by hours without a sign. A bare date (or 'YYYY-MM-DD') is its midnight UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"{arg}: {value!r} is not an ISO 8601 time, e.g. "
                             "'2026-03-02T13:00:00Z' or '2026-03-02'") from None
        if parsed.tzinfo is None and len(text) == 10:
            parsed = parsed.replace(tzinfo=UTC)
        value = parsed
    elif isinstance(value, pd.Timestamp):
        value = value.to_pydatetime(warn=False)
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, datetime):
        raise TypeError(f"{arg}: expected a datetime, pandas Timestamp or ISO 8601 text, "
                        f"got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{arg}: {value.isoformat()} is a naive datetime; give its zone, "
                         "e.g. datetime(2026, 3, 2, tzinfo=UTC) or '2026-03-02T13:00:00Z' "
                         "(naive times are refused, not taken as UTC)")
    return value.astimezone(UTC)


@dataclass
class Query:
    """The validated arguments of one read."""

    instruments: tuple[str, ...] | None = None
    granularities: tuple[str, ...] | None = None
    start: datetime | None = None
    end: datetime | None = None
    latest: int | None = None
    price: Decimal | None = None
    width: Decimal | None = None
    columns: tuple[str, ...] | None = None
    known_at: datetime | None = None  # events: created_at <= known_at
    as_of: datetime | None = None  # levels: event time <= as_of, outcomes as known then
    statuses: tuple[str, ...] | None = None
    exact: bool = False
    backend: str = "pandas"

    @classmethod
    def make(cls, instrument=None, granularity=None, start=None, end=None, *, latest=None,
             price=None, width=None, columns=None, known_at=None, as_of=None, status=None,
             exact=False, backend="pandas", available: Sequence[str] = ()) -> Query:
        q = cls(_names("instrument", instrument, _check_instrument),
                _names("granularity", granularity, _check_granularity),
                as_instant("start", start), as_instant("end", end),
                known_at=as_instant("known_at", known_at), as_of=as_instant("as_of", as_of),
                statuses=_names("status", status, _check_status), exact=bool(exact),
                backend=backend)
        if q.start is not None and q.end is not None and q.start > q.end:
            raise ValueError(f"start: {q.start.isoformat()} is after end "
                             f"{q.end.isoformat()} (rows are start <= event_creation_date < end)")
        if latest is not None:
            if isinstance(latest, bool) or not isinstance(latest, int | np.integer) or latest < 1:
                raise ValueError(f"latest: expected a whole number >= 1, got {latest!r}")
            q.latest = int(latest)
        if (price is None) != (width is None):
            raise ValueError("price: price and width go together (rows with "
                             "price - width <= event_price_level <= price + width)")
        if price is not None:
            try:
                q.price, q.width = as_decimal(price), as_decimal(width)
            except ArithmeticError:
                raise ValueError(f"price: {price!r} / width: {width!r} are not numbers") from None
            if not q.width.is_finite() or not q.price.is_finite() or q.width < 0:
                raise ValueError(f"width: expected a finite number >= 0, got {width!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: unknown backend {backend!r}; expected one of "
                             f"{', '.join(BACKENDS)}")
        if columns is not None:
            cols = (columns,) if isinstance(columns, str) else tuple(columns)
            unknown = [c for c in cols if c not in available]
            if unknown or not cols:
                raise ValueError(f"columns: unknown column(s) {unknown or cols!r}; expected "
                                 f"some of {', '.join(available)}")
            q.columns = cols
        return q


# ---------------------------------------------------------------- connections


def _where_is(url: str) -> str:
    """host:port/dbname of a URL, without its user or password."""
    try:
        p = conninfo_to_dict(db.libpq_url(url))
    except Exception:  # noqa: BLE001 - a URL we cannot even parse: say only that
        return "the given URL"
    return f"{p.get('host', 'localhost')}:{p.get('port', '5432')}/{p.get('dbname', '')}"


def _unreachable(url: str, exc: Exception) -> ReadError:
    # the first line says what failed ("connection to server at ... failed: Connection
    # refused"); the rest is libpq's hint
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # the driver's reason names host and port, never the password; drop any that slipped in
    password = conninfo_to_dict(db.libpq_url(url)).get("password") if "://" in url else None
    if password:
        reason = reason.replace(password, "***")
    return ReadError(f"cannot read: the database at {_where_is(url)} is unreachable "
                     f"({reason})")


@contextmanager
def connection(url: Any = None) -> Iterator[psycopg.Connection]:
    """A psycopg connection for `url`: None (the platform's database as the reader role) or a
    URL (from the process's pool of idle reader connections, given back after), a psycopg
    connection (used as is, left open) or a SQLAlchemy engine (its pool's, given back)."""
    if isinstance(url, psycopg.Connection):
        yield url
        return
    try:
        from sqlalchemy import Engine
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        Engine = ()  # type: ignore[assignment]  # noqa: N806
    if isinstance(url, Engine):
        if url.dialect.driver == "psycopg":
            raw = url.raw_connection()
            try:
                yield raw.driver_connection
            finally:
                raw.close()
            return
        url = url.url.render_as_string(hide_password=False)
    if url is None:
        url = db.database_url(role=db.READER_ROLE)
    if not isinstance(url, str):
        raise TypeError("url: expected None, a URL, a psycopg connection or a SQLAlchemy "
                        f"engine, got {type(url).__name__}")
    conn = _POOL.take(url)
    try:
        yield conn
    except BaseException:
        conn.close()  # mid-COPY or broken: not reused
        raise
    _POOL.give(url, conn)


class _Pool:
    """Idle reader connections kept per URL within the process: a connection costs 3-30 ms
    (TCP, SCRAM), more than a small read. At most MAX idle in all, the least recently used
    closed first. A connection the server closed (restart, DROP DATABASE ... FORCE) has its
    socket readable while idle and is replaced; a forked child never uses (or closes) its
    parent's connections."""

    MAX = 8

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: dict[tuple[int, str], list[psycopg.Connection]] = {}
        self.order: list[tuple[tuple[int, str], psycopg.Connection]] = []
        self.orphans: list[psycopg.Connection] = []  # a fork's inherited ones, never closed

    def take(self, url: str) -> psycopg.Connection:
        key = (os.getpid(), url)
        while True:
            with self.lock:
                conns = self.idle.get(key)
                conn = conns.pop() if conns else None
                if conn is not None:
                    self.order.remove((key, conn))
            if conn is None:
                break
            if _alive(conn):
                return conn
            conn.close()
        try:
            return psycopg.connect(db.libpq_url(url), autocommit=True, prepare_threshold=None)
        except psycopg.OperationalError as exc:
            raise _unreachable(url, exc) from None

    def give(self, url: str, conn: psycopg.Connection) -> None:
        key = (os.getpid(), url)
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.close()
            return
        with self.lock:
            self.idle.setdefault(key, []).append(conn)
            self.order.append((key, conn))
            extra = self.order[:-self.MAX] if len(self.order) > self.MAX else []
            del self.order[:len(extra)]
            for k, c in extra:
                self.idle[k].remove(c)
        for _, c in extra:
            c.close()

    def close_all(self) -> None:
        with self.lock:
            conns = [c for _, c in self.order]
            self.idle.clear()
            self.order.clear()
        for c in conns:
            c.close()

    def forget(self) -> None:
        """In a forked child: the parent's connections are the parent's (closing one would
        end the parent's session), so they are only dropped from the pool."""
        self.orphans += [c for _, c in self.order]
        self.idle, self.order, self.lock = {}, [], threading.Lock()


def _alive(conn: psycopg.Connection) -> bool:
    """An idle connection has nothing to read; readable means the server closed it."""
    if conn.closed or conn.broken:
        return False
    try:
        return not select.select([conn.fileno()], [], [], 0)[0]
    except (OSError, ValueError):
        return False


_POOL = _Pool()
atexit.register(_POOL.close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.forget)


# ---------------------------------------------------------------- SQL


def _in(column: str, values: tuple[str, ...]) -> sql.Composable:
    if len(values) == 1:
        return sql.SQL("{} = {}").format(sql.SQL(column), sql.Literal(values[0]))
    return sql.SQL("{} IN ({})").format(sql.SQL(column),
                                        sql.SQL(", ").join(map(sql.Literal, values)))


def _conditions(q: Query, alias: str, price_alias: str | None, price_col: str
                ) -> list[sql.Composable]:
    """WHERE terms on `alias` (instrument, granularity, time) and the price band."""
    a = alias
    where: list[sql.Composable] = []
    if q.instruments is not None:
        where.append(_in(f"{a}.instrument", q.instruments))
    if q.granularities is not None:
        where.append(_in(f"{a}.granularity", q.granularities))
    ts = sql.SQL(f"{a}.event_creation_date")
    if q.start is not None:
        where.append(sql.SQL("{} >= {}").format(ts, sql.Literal(q.start)))
    if q.end is not None:
        where.append(sql.SQL("{} < {}").format(ts, sql.Literal(q.end)))
    if q.as_of is not None:
        where.append(sql.SQL("{} <= {}").format(ts, sql.Literal(q.as_of)))
    if q.price is not None and price_alias is not None:
        # Decimal bounds: a float against DECIMAL would compare as double and skip the index
        where.append(sql.SQL("{} BETWEEN {} AND {}").format(
            sql.SQL(f"{price_alias}.{price_col}"), sql.Literal(q.price - q.width),
            sql.Literal(q.price + q.width)))
    return where


@dataclass(frozen=True)
class Source:
    """A table as read: FROM clause, columns, and the WHERE terms of a query on it."""

    table: str  # the partitioned table whose leaves say which pairs exist
    cols: tuple[Col, ...]

    def from_(self) -> sql.Composable:
        if self.table == LEVELS:
            return sql.SQL("support_and_resistance_master l JOIN new_resistance_events e "
                           "USING (instrument, granularity, event_creation_date, "
                           "original_event_id)")
        return sql.SQL("{} {}").format(sql.Identifier(self.table),
                                       sql.SQL("f" if self.table == FEATURES else "e"))

    def where(self, q: Query) -> list[sql.Composable]:
        if self.table == LEVELS:
            # the same terms on both sides of the join: an IN list does not carry across an
            # equality the way a constant does, and each side is pruned only by its own terms
            where = _conditions(q, "l", "e", "event_price_level") + _conditions(
                q, "e", None, "")
            if q.statuses is not None and q.as_of is None:  # as-of: filtered after recompute
                where.append(_in("l.status", q.statuses))
            return where
        alias = "f" if self.table == FEATURES else "e"
        where = _conditions(q, alias, alias, "event_price_level")
        if q.known_at is not None:
            where.append(sql.SQL("{}.created_at <= {}").format(sql.SQL(alias),
                                                              sql.Literal(q.known_at)))
        return where

    def key(self) -> str:
        return "l" if self.table == LEVELS else ("f" if self.table == FEATURES else "e")


SOURCES = {EVENTS: Source(EVENTS, EVENT_COLS), LEVELS: Source(LEVELS, LEVEL_COLS),
           FEATURES: Source(FEATURES, FEATURE_COLS)}


def existing_pairs(conn: psycopg.Connection, table: str) -> list[Pair]:
    """(instrument, granularity) of every leaf of `table`, sorted (the catalogue, not a scan)."""
    return [leaf.pair for leaf in sr.leaves(conn, table)]


def _pairs(conn: psycopg.Connection, q: Query, table: str) -> list[Pair]:
    if q.instruments is not None and q.granularities is not None:
        # both named: no catalogue lookup (a pair without a leaf simply reads no rows)
        return sorted({(i, g) for i in q.instruments for g in q.granularities})
    return [(i, g) for i, g in existing_pairs(conn, table)
            if (q.instruments is None or i in q.instruments)
            and (q.granularities is None or g in q.granularities)]


def select_sql(conn: psycopg.Connection, src: Source, q: Query, cols: Sequence[Col]
               ) -> sql.Composable | None:
    """The SELECT of a read (unordered: Arrow sorts), or None when `latest` finds no pair."""
    select = sql.SQL(", ").join(c.select() for c in cols)
    where = src.where(q)
    if q.latest is None:
        return sql.SQL("SELECT {} FROM {}{}{}").format(
            select, src.from_(),
            sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
            _SERVER_ORDER if _server_ordered(q) else sql.SQL(""))
    # the newest `latest` of each pair: one index-ordered LIMIT per pair (a constant pair
    # prunes to one leaf), not a window over every row
    k = src.key()
    parts = []
    for pair in _pairs(conn, q, src.table):
        one = Query(**{**q.__dict__, "instruments": (pair[0],), "granularities": (pair[1],)})
        parts.append(sql.SQL("(SELECT {} FROM {} WHERE {} ORDER BY {k}.event_creation_date "
                             "DESC, {k}.original_event_id DESC LIMIT {})").format(
            select, src.from_(), sql.SQL(" AND ").join(src.where(one)), sql.Literal(q.latest),
            k=sql.SQL(k)))
    if len(parts) == 1 and _server_ordered(q):
        return sql.SQL("SELECT * FROM {} x{}").format(parts[0], _SERVER_ORDER)
    return sql.SQL(" UNION ALL ").join(parts) if parts else None


# one pair's few rows (latest N, a price band) are put in ORDER by the server: sorting a
# few hundred rows there costs less than the client's sort of them
_SERVER_ORDER = sql.SQL(" ORDER BY event_creation_date, original_event_id")


def _server_ordered(q: Query) -> bool:
    return ((q.latest is not None or q.price is not None)
            and q.instruments is not None and len(q.instruments) == 1
            and q.granularities is not None and len(q.granularities) == 1)


# ---------------------------------------------------------------- COPY -> Arrow


@contextmanager
def _iso_datestyle(conn: psycopg.Connection) -> Iterator[None]:
    """The timestamps' text must be ISO; a session with another DateStyle gets ISO for the
    read and its own back after."""
    style = conn.info.parameter_status("DateStyle") or "ISO"
    if style.startswith("ISO"):
        yield
        return
    conn.execute("SELECT set_config('DateStyle', 'ISO', false)")
    try:
        yield
    finally:
        conn.execute("SELECT set_config('DateStyle', %s, false)", (style,))


def copy_table(conn: psycopg.Connection, query: sql.Composable | None, cols: Sequence[Col],
               exact: bool) -> pa.Table:
    """Run `query` as COPY CSV and parse it into an Arrow table of `cols`' types."""
    buf = bytearray()
    if query is not None:
        copy = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(query)
        with _iso_datestyle(conn):
            if not conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
                # psycopg opens the caller's transaction on a first statement; its own COPY
                # does, the direct loop would not
                with conn.cursor().copy(copy) as cp:
                    for chunk in cp:
                        buf += chunk
            else:
                buf = copy_out(conn, copy)
    return _csv_table(buf, cols, exact)


def copy_out(conn: psycopg.Connection, copy: sql.Composable) -> bytearray:
    """The data of a COPY ... TO STDOUT, received through libpq directly (psycopg's PGconn,
    under the connection's lock). psycopg's COPY iterator spends ~1.2 us of Python per row
    (a generator and a wait per CopyData message: 1.2 s of CPU for 1M rows, 6 ms for 1,000);
    this loop ~0.5 us. Errors are psycopg's own exceptions."""
    pg = conn.pgconn
    buf = bytearray()
    with conn.lock:
        pg.send_query(copy.as_bytes(conn))
        while pg.flush():
            select.select([], [pg.socket], [])
        res = _next_result(pg)
        while res is not None and res.status == pq.ExecStatus.COMMAND_OK:
            res = _next_result(pg)  # statements before the COPY (split_read.snapshot_sql)
        if res is None or res.status != pq.ExecStatus.COPY_OUT:
            _drain(pg)
            raise _error(conn, res)
        get = pg.get_copy_data
        while True:
            n, data = get(1)  # 1: do not block; 0 means wait for the socket
            if n > 0:
                buf += data
            elif n == 0:
                select.select([pg.socket], [], [])
                pg.consume_input()
            else:  # -1 done, -2 error: the result says which
                break
        # the COPY's own result, then those of any statements after it (COMMIT)
        results = []
        while (res := _next_result(pg)) is not None:
            results.append(res)
        bad = next((r for r in results if r.status != pq.ExecStatus.COMMAND_OK), None)
        if bad is not None or not results:
            raise _error(conn, bad)
    return buf


def _next_result(pg: Any) -> Any:
    while pg.is_busy():
        select.select([pg.socket], [], [])
        pg.consume_input()
    return pg.get_result()


def _drain(pg: Any) -> None:
    while _next_result(pg) is not None:
        pass


def _error(conn: psycopg.Connection, res: Any) -> Exception:
    if res is None:
        return psycopg.OperationalError(conn.pgconn.get_error_message())
    return psycopg.errors.error_from_result(res, encoding=conn.info.encoding)


def _block_size(data: bytes | bytearray | IO[bytes]) -> int:
    """The parser's block: the whole of a small buffer (no 4 MB block to fill for 1,000
    rows), 4 MB of a big one or a stream."""
    size = len(data) if isinstance(data, bytes | bytearray) else 1 << 22
    return min(max(size + 1, 1 << 16), 1 << 22)


def _csv_table(data: bytes | bytearray | IO[bytes], cols: Sequence[Col], exact: bool
               ) -> pa.Table:
    """COPY's CSV (a buffer or a stream) as an Arrow table of `cols`' types."""
    types = {c.name: c.arrow(exact) for c in cols}
    if isinstance(data, bytes | bytearray) and not data:
        table = pa.table({n: pa.array([], t) for n, t in types.items()})
    else:
        whole = isinstance(data, bytes | bytearray)
        table = (pacsv.read_csv if whole else pacsv.open_csv)(
            pa.py_buffer(data) if whole else data,
            # one thread: on a shared 2-core machine the parallel parse was slower (0.61 s
            # against 0.34 s for 1M rows), and a small read skips the thread pool
            read_options=pacsv.ReadOptions(column_names=list(types), use_threads=False,
                                           block_size=_block_size(data)),
            # COPY writes NULL as an empty field and an empty string as "": only the former
            # is null, and no other text ("NA", "null") is
            convert_options=pacsv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=True,
                quoted_strings_can_be_null=False))
        if not isinstance(table, pa.Table):
            table = table.read_all()
    for i, c in enumerate(cols):
        if c.kind == "ts":  # naive UTC -> UTC-aware: a change of type only
            table = table.set_column(i, c.name, table.column(i).cast(
                pa.timestamp("us", tz="UTC")))
    return table


def _sorted(table: pa.Table) -> pa.Table:
    """The rows in ORDER (see _sorted_owned)."""
    return _sorted_owned([table])


def _sorted_owned(tables: list[pa.Table]) -> pa.Table:
    """The rows of the one table in `tables` (taken out of it) in ORDER. COPY sends each
    leaf's rows together, so the pair is known per run of rows: the runs are put in pair order
    and a stable sort on the time alone finishes the job (Arrow's general four-key sort took
    0.5 s of a 1M-row read, this ~0.05 s). Rows of one pair at one time (ordered by id) or
    rows not in runs take the general sort. With no other reference to the table left (a
    caller's variable or argument keeps it alive), each source column is freed once
    reordered: about one frame in memory, not two."""
    table = tables.pop()
    if table.num_rows <= 1:
        return table
    keys = [(k, "ascending") for k in ORDER if k in table.column_names]
    if len(keys) < len(ORDER):
        return table.sort_by(keys)
    perm = _time_then_pair_order(table)
    if perm is None:
        return table.sort_by(keys)
    if (perm[1:] > perm[:-1]).all():  # already in order
        return table
    owned = [table]
    del table
    return _take_by_column(owned, perm)


def _take_by_column(tables: list[pa.Table], perm: np.ndarray) -> pa.Table:
    """The rows of the one table in `tables` in `perm`'s order, column by column, each
    source column dropped once taken."""
    table = tables.pop()
    indices = pa.array(perm)
    names = table.column_names
    out = []
    for _ in names:
        out.append(table.column(0).take(indices))
        table = table.remove_column(0)
    return pa.table(out, names=names)


def _time_then_pair_order(table: pa.Table) -> np.ndarray | None:
    n = table.num_rows
    inst, gran = table.column("instrument"), table.column("granularity")
    change = pc.or_(pc.not_equal(inst.slice(1), inst.slice(0, n - 1)),
                    pc.not_equal(gran.slice(1), gran.slice(0, n - 1)))
    starts = np.flatnonzero(np.concatenate([[True], np.asarray(change, dtype=bool)]))
    if len(starts) > max(16, n // 64):  # not in runs of a pair
        return None
    pairs = [(inst[int(i)].as_py(), gran[int(i)].as_py()) for i in starts]
    # str order is code point order, which is UTF-8 byte order (the database's C collation)
    rank_of = {p: r for r, p in enumerate(sorted(set(pairs)))}
    rank = np.repeat(np.array([rank_of[p] for p in pairs], np.int32),
                     np.diff(np.append(starts, n)))
    perm = (np.argsort(rank, kind="stable") if (rank[1:] < rank[:-1]).any()
            else np.arange(n))
    ts = np.asarray(table.column("event_creation_date").cast(pa.int64()))[perm]
    by_time = np.argsort(ts, kind="stable")
    perm, ts = perm[by_time], ts[by_time]
    rank = rank[perm]
    if ((ts[1:] == ts[:-1]) & (rank[1:] == rank[:-1])).any():
        return None  # one pair, one time, several ids: the id decides
    return perm


# ---------------------------------------------------------------- reads


def read_table(source: str, q: Query, url: Any = None) -> pa.Table:
    """The rows of a read as an Arrow table, in ORDER, with the requested columns."""
    src = SOURCES[source]
    names = q.columns or tuple(c.name for c in src.cols)
    needed = set(names) | set(ORDER)
    if source == LEVELS and q.as_of is not None:
        needed |= {"event_price_level", "atr_at_event", *OUTCOME_COLUMNS}
    cols = [c for c in src.cols if c.name in needed]
    with connection(url) as conn:
        if source != LEVELS and q.latest is None and (url is None or isinstance(url, str)):
            table = _split_read(conn, _tool_url(url), src, q, cols)
            if table is not None:  # already in ORDER
                return table.select(list(names))
        query = select_sql(conn, src, q, cols)
        table = None
        if query is not None and _may_be_big(q):
            table = _big_read(conn, _tool_url(url), query, cols, q.exact)
        if table is None:
            table = copy_table(conn, query, cols, q.exact)
        if source == LEVELS and q.as_of is not None:
            table = _as_of_outcomes(conn, table, q)
    if _server_ordered(q) and source != LEVELS:
        return table.select(list(names))  # ordered by the server (select_sql)
    owned = [table]
    del table  # _sorted_owned holds the only reference: it frees each column once reordered
    return _sorted_owned(owned).select(list(names))


def _split_read(conn: psycopg.Connection, url: str, src: Source, q: Query,
                cols: Sequence[Col]) -> pa.Table | None:
    """A range read of events or features in parallel streams on one snapshot
    (split_read.py), through psql processes when big; None when the selected leaves are too
    small to be worth it (one COPY reads it)."""
    chosen = sr.chosen_leaves(conn, src.table, q.instruments, q.granularities)
    if q.price is not None or sum(max(leaf.rows, 0) for leaf in chosen) < sr.SPLIT_MIN_ROWS:
        return None  # a price band reads few rows through its index
    streams = sr.plan(chosen, q.start, q.end, sr.STREAMS)
    if len(streams) < 2:
        return None
    big = _may_be_big(q) and _psql() is not None and _estimate(
        conn, select_sql(conn, src, q, cols)) >= BIG_ROWS
    rest = [c for c in cols if c.name not in ("instrument", "granularity")]
    scols = [Col(sr.PAIR, "", "int16"), *rest]
    select = sql.SQL(", ").join(c.select() for c in rest)
    queries = [sr.stream_sql(branches, select, src.key(),
                             lambda lo, hi: src.where(sr.shares(q, lo, hi)))
               for branches in streams]

    copies = [f"COPY ({query.as_string(conn)}) TO STDOUT WITH (FORMAT csv)"
              for query in queries]

    def in_process(c: psycopg.Connection, copy: str) -> pa.Table:
        with _iso_datestyle(c):
            return _csv_table(copy_out(c, sql.SQL(copy)), scols, q.exact)

    def read_one(i: int, snapshot: str) -> pa.Table:
        if i == 0 and not big:  # the snapshot's own transaction
            return in_process(conn, copies[0])
        copy = sr.snapshot_sql(snapshot, copies[i])
        if big:  # psql receives the rows in C (libpq hands them to Python one at a time)
            table = psql_table(url, None, scols, q.exact, command=copy)
            if table is not None:
                return table
        with connection(url) as other:
            return in_process(other, copy)

    try:
        parts = sr.run_streams(conn, len(copies), read_one)
    except ReadError:  # no other connection to be had (max_connections): one COPY reads it
        return None
    return sr.assemble(parts, [leaf.pair for leaf in chosen], [c.name for c in cols],
                       lambda t: t.sort_by([(k, "ascending") for k in ORDER]))


# ---------------------------------------------------------------- big reads through psql

BIG_ROWS = 400_000  # the planner's estimate from which a read goes through psql


def _may_be_big(q: Query) -> bool:
    """Whether a read is worth the planner's estimate: not `latest` or a price band, and not
    one instrument over at most a quarter (an EXPLAIN round trip costs 1-12 ms here)."""
    if q.latest is not None or q.price is not None:
        return False
    if q.start is None or q.end is None or q.instruments is None or len(q.instruments) > 1:
        return True
    return q.end - q.start > timedelta(days=92)


def _tool_url(url: Any) -> str | None:
    """The URL a separate client process may use: ours, not a caller's connection."""
    if url is None:
        return db.database_url(role=db.READER_ROLE)
    return url if isinstance(url, str) else None


def _big_read(conn: psycopg.Connection, url: str | None, query: sql.Composable,
              cols: Sequence[Col], exact: bool) -> pa.Table | None:
    """A read the planner expects to be big, through psql; None: read it in process.

    psycopg hands COPY data to Python one row at a time (1.4 s of client CPU for 1M rows,
    as much as the server's own COPY); psql receives it in C and writes it to a pipe that
    pyarrow parses as it streams, so the client's per-row work is the parse alone, in
    bounded memory (no whole CSV text held). A process costs ~10-20 ms, hence big reads."""
    if url is None or _psql() is None or _estimate(conn, query) < BIG_ROWS:
        return None
    return psql_table(url, query.as_string(conn), cols, exact)


def _estimate(conn: psycopg.Connection, query: sql.Composable | None) -> float:
    """The planner's row estimate of `query`."""
    if query is None:
        return 0.0
    plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query)).fetchone()[0]
    return plan[0]["Plan"]["Plan Rows"]


@functools.cache
def _psql() -> str | None:
    try:
        exe = settings.pg_bin_dir() / "psql"
    except RuntimeError:
        exe = None
    if exe is not None and exe.exists():
        return str(exe)
    return shutil.which("psql")


class _Prefixed(io.RawIOBase):
    """A pipe with the bytes already read from it put back in front."""

    def __init__(self, head: bytes, rest: IO[bytes]):
        self.head, self.rest = memoryview(head), rest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        return self.rest.readinto(b)


def psql_table(url: str, query: str | None, cols: Sequence[Col], exact: bool,
               command: str | None = None) -> pa.Table | None:
    """COPY `query` (or run `command`, whose one COPY sends the rows) through a psql process,
    parsed as it streams; None if psql fails before sending any row (e.g. it cannot log in the
    way psycopg does): the caller reads in process. The password (if the URL holds one) goes
    through the environment, never argv."""
    conninfo, env = db.tool_target(url)
    env = {**os.environ, **env, "PGDATESTYLE": "ISO", "PGCLIENTENCODING": "UTF8"}
    copy = command or f"COPY ({query}) TO STDOUT WITH (FORMAT csv)"
    proc = subprocess.Popen([str(_psql()), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                             "-d", conninfo, "-c", copy], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        head = proc.stdout.read1(1 << 16)
        if not head:
            err = proc.stderr.read()
            if proc.wait() != 0:
                return None if b"ERROR" not in err else _psql_failed(err)
            return _csv_table(b"", cols, exact)
        table = _csv_table(_Prefixed(head, proc.stdout), cols, exact)
        err = proc.stderr.read()
        if proc.wait() != 0:
            _psql_failed(err)
        return table
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _psql_failed(err: bytes) -> pa.Table:
    lines = err.decode(errors="replace").strip().splitlines()
    raise RuntimeError(f"the read failed: {lines[0] if lines else 'psql exited with an error'}")


def convert(table: pa.Table, backend: str):
    if backend == "arrow":
        return table
    if backend == "polars":
        try:
            import polars as pl
        except ImportError:
            raise ImportError("backend: 'polars' needs the polars package "
                              "(pip install polars); or use backend='pandas' or 'arrow'"
                              ) from None
        return pl.from_arrow(table)
    # self_destruct: each Arrow column is freed once converted (the table is the read's own)
    return table.to_pandas(split_blocks=True, self_destruct=True)


# ---------------------------------------------------------------- as-of levels


def _as_of_outcomes(conn: psycopg.Connection, levels: pa.Table, q: Query) -> pa.Table:
    """Replace the stored outcomes by those known at q.as_of: levels.level_outcomes over each
    pair's events at or before as_of. A level's outcome depends only on the events after it,
    so the events from the earliest level read up to as_of are all it takes."""
    from .levels import level_outcomes

    if levels.num_rows == 0:
        return _filter_status(levels, q)
    frames = []
    pairs = sorted(set(zip(levels.column("instrument").to_pylist(),
                           levels.column("granularity").to_pylist(), strict=True)))
    for instrument, granularity in pairs:
        first = pc.min(levels.filter(pc.and_(
            pc.equal(levels.column("instrument"), instrument),
            pc.equal(levels.column("granularity"), granularity))).column(
            "event_creation_date")).as_py()
        frame = level_events(conn, Query(instruments=(instrument,),
                                         granularities=(granularity,), start=first,
                                         as_of=q.as_of))
        # naive UTC datetime64 into level_outcomes (tz-aware columns would become objects)
        frame["ts"] = frame["ts"].dt.tz_localize(None)
        out = level_outcomes(frame)
        frames.append(out[["original_event_id", *OUTCOME_COLUMNS]])
    outcomes = pd.concat(frames, ignore_index=True)
    known = pa.table({
        "original_event_id": pa.array(outcomes["original_event_id"], pa.string()),
        "status": pa.array(outcomes["status"], pa.string()),
        "test_count": pa.array(outcomes["test_count"], pa.int64()).cast(pa.int32()),
        **{c: pa.array(outcomes[c].to_numpy().astype("datetime64[us]"), pa.timestamp("us"),
                    from_pandas=True)
           .cast(pa.timestamp("us", tz="UTC")) for c in ("last_test_date", "breach_date")}})
    rest = levels.drop_columns(list(OUTCOME_COLUMNS))
    joined = rest.join(known, "original_event_id", join_type="left outer")
    order = [n for n in levels.column_names]
    return _filter_status(joined.select(order), q)


def level_events(conn: psycopg.Connection, q: Query) -> pd.DataFrame:
    """The events of `q` as level_outcomes takes them: original_event_id (str), ts
    (datetime64[us, UTC]), price and atr (float64: the double nearest each decimal), in the
    refresh's order (event_creation_date, original_event_id)."""
    cols = [c for c in EVENT_COLS if c.name in ("original_event_id", "event_creation_date",
                                                 "event_price_level", "atr_at_event")]
    events = copy_table(conn, select_sql(conn, SOURCES[EVENTS], q, cols), cols, False)
    events = events.sort_by([("event_creation_date", "ascending"),
                             ("original_event_id", "ascending")])
    return events.to_pandas().rename(columns={
        "event_creation_date": "ts", "event_price_level": "price", "atr_at_event": "atr"})


def _filter_status(table: pa.Table, q: Query) -> pa.Table:
    if q.statuses is None or q.as_of is None:
        return table
    return table.filter(pc.is_in(table.column("status"), pa.array(q.statuses)))


# ---------------------------------------------------------------- bounded-memory events


def iter_event_tables(q: Query, batch_rows: int, url: Any = None,
                      cols: Sequence[Col] | None = None) -> Iterator[pa.Table]:
    """Events in Arrow tables of at most `batch_rows` rows, pair by pair (instrument, then
    granularity, in byte order), each pair's rows by (event_creation_date, original_event_id):
    a keyset walk of the primary key, so memory is one batch whatever the range. `cols`
    replaces the columns (the export's text ones)."""
    src = SOURCES[EVENTS]
    names = q.columns or tuple(c.name for c in (cols or src.cols))
    needed = set(names) | {"event_creation_date", "original_event_id"}
    cols = [c for c in (cols or src.cols) if c.name in needed]
    select = sql.SQL(", ").join(c.select() for c in cols)
    with connection(url) as conn:
        for instrument, granularity in _pairs(conn, q, EVENTS):
            one = Query(**{**q.__dict__, "instruments": (instrument,),
                           "granularities": (granularity,)})
            after: tuple[datetime, str] | None = None
            while True:
                where = src.where(one)
                if after is not None:
                    where.append(sql.SQL("(e.event_creation_date, e.original_event_id) > "
                                         "({}, {}::uuid)").format(*map(sql.Literal, after)))
                query = sql.SQL("SELECT {} FROM new_resistance_events e WHERE {} ORDER BY "
                                "e.event_creation_date, e.original_event_id LIMIT {}").format(
                    select, sql.SQL(" AND ").join(where), sql.Literal(batch_rows))
                table = copy_table(conn, query, cols, q.exact)
                if table.num_rows == 0:
                    break
                # COPY keeps the query's order
                last = table.column("event_creation_date")[-1].as_py()
                after = (last if isinstance(last, datetime) else as_instant("", last),
                         table.column("original_event_id")[-1].as_py())
                yield table.select(list(names))
                if table.num_rows < batch_rows:
                    break


# ---------------------------------------------------------------- export (event-file format)

# every column as text, as the loader reads it: exact decimals, UTC times with Z
EXPORT_COLS = tuple(
    Col(c.name, "to_char(e.event_creation_date AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')" if c.kind == "ts" else f"{c.expr}::text",
        "text") for c in EVENT_COLS)
EXPORT_SUFFIXES = (".parquet", ".pq", ".csv")


def export_events(q: Query, out: Path, url: Any = None, batch_rows: int = 200_000) -> int:
    """Write the events of `q` to `out` (.parquet/.pq: zstd Parquet, every column a string,
    like the retention archive; .csv: CSV with a header), an event file `sr-platform load`
    reloads exactly. Written under a temporary name (0600) and renamed when complete, so a
    failed export leaves no file. Returns the rows written."""
    import pyarrow.parquet as pq

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise ValueError(f"out: {out.name!r} must end in {', '.join(EXPORT_SUFFIXES)}")
    schema = pa.schema([(c.name, pa.string()) for c in EXPORT_COLS])
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    rows = 0
    try:
        os.fchmod(fd, 0o600)  # private whatever the umask
        with os.fdopen(fd, "wb") as fh:
            if suffix == ".csv":
                writer = pacsv.CSVWriter(fh, schema, write_options=pacsv.WriteOptions(
                    quoting_style="needed"))
            else:
                writer = pq.ParquetWriter(fh, schema, compression="zstd")
            with writer:
                for table in iter_event_tables(q, batch_rows, url, EXPORT_COLS):
                    writer.write_table(table.select(schema.names))
                    rows += table.num_rows
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows
