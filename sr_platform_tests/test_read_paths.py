"""The read API's fast paths (issue 15, section 2): a big read through psql equals the same
read in process, value by value, for edge values (6-decimal prices, the largest DECIMALs,
NULL volumes, microsecond and pre-2000 times, empty results); the row order without Arrow's
general sort (ties on time between and within pairs); the per-URL connection pool."""

import os
import select
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest

from sr_platform import read_events
from sr_platform.core import db, reading

ORDER = "event_creation_date, instrument, granularity, original_event_id"
T = datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC)
LOW, HIGH = "00000000-0000-4000-8000-000000000001", "ffffffff-0000-4000-8000-000000000001"
# (id, time, granularity, instrument, price, atr, volume, rebound, rebound_in_atr)
EDGE_ROWS = [
    (HIGH, T, "H1", "EUR_USD", "123456.123456", "0.000001", None, "-999999999999.999999", "0"),
    (LOW, T, "H1", "EUR_USD", "1.100000", "0.001234", "9999999999999999.99", "-0.5", "-7.25"),
    (str(uuid.uuid4()), T, "D", "EUR_USD", "999999999999.999999", "0.1", "0.01", "0", "1.5"),
    (str(uuid.uuid4()), T, "H1", "GBP_USD", "0.000001", "123.456789", None, "-0.000001",
     "-999999999999.999999"),
    (str(uuid.uuid4()), datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "H1", "GBP_USD",
     "1.2", "0.3", "100.5", "-0.1", "0.000001"),
    (str(uuid.uuid4()), datetime(2026, 2, 1, 0, 0, 0, 1, tzinfo=UTC), "D", "EUR_USD",
     "0.1", "0.2", "0.3", "-0.4", "0.5"),
]


@pytest.fixture
def edge_url(server_url, make_db):
    url = make_db(server_url)
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        for inst, gran in {(r[3], r[2]) for r in EDGE_ROWS}:
            conn.execute("SELECT ensure_partition(%s, %s)", (inst, gran))
        conn.cursor().executemany(
            "INSERT INTO new_resistance_events (original_event_id, event_creation_date, "
            "granularity, instrument, event_price_level, atr_at_event, volume_at_event, "
            "new_resistance_negative_rebound, new_resistance_negative_rebound_in_atr, "
            "day_of_week, hour_of_day) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 0, 0)",
            [(i, t, g, inst, *(None if v is None else Decimal(v) for v in vals))
             for i, t, g, inst, *vals in EDGE_ROWS])
    return url


def _db_values(url: str) -> dict[str, list]:
    cols = ", ".join(c.name for c in reading.EVENT_COLS)
    with psycopg.connect(db.libpq_url(url)) as conn:
        cur = conn.execute(f"SELECT {cols} FROM new_resistance_events ORDER BY {ORDER}")
        rows = cur.fetchall()
        names = [d.name for d in cur.description]
    return {n: [r[i] for r in rows] for i, n in enumerate(names)}


def _check_against_db(frame: pd.DataFrame, want: dict[str, list], exact: bool) -> None:
    for name, values in want.items():
        got = frame[name].tolist()
        if isinstance(values[0], Decimal) or name == "volume_at_event":
            # float64: exactly the double nearest the stored decimal; exact: the Decimal
            expect = [None if v is None else (v if exact else float(v)) for v in values]
            got = [None if (v is None or (isinstance(v, float) and np.isnan(v))) else v
                   for v in got]
        elif name == "original_event_id":
            expect = [str(v) for v in values]
        elif name == "event_creation_date":
            expect = [pd.Timestamp(v) for v in values]
        else:
            expect = values
        assert got == expect, name


@pytest.fixture
def through_psql(monkeypatch):
    """Every read that may go through psql does; the calls are counted."""
    calls = []
    real = reading.psql_table

    def counted(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)
    monkeypatch.setattr(reading, "BIG_ROWS", 0)
    monkeypatch.setattr(reading, "psql_table", counted)
    return calls


@pytest.mark.parametrize("exact", [False, True])
def test_big_read_through_psql_equals_the_in_process_read_and_the_database(
        edge_url, through_psql, exact):
    via_psql = read_events(url=edge_url, exact=exact)
    assert len(through_psql) == 1
    with psycopg.connect(db.libpq_url(edge_url), autocommit=True) as conn:
        in_process = read_events(url=conn, exact=exact)  # a caller's connection: never psql
    assert len(through_psql) == 1
    pd.testing.assert_frame_equal(via_psql, in_process)
    want = _db_values(edge_url)
    assert len(want["original_event_id"]) == len(EDGE_ROWS)
    _check_against_db(via_psql, want, exact)
    # the tie on time within a pair is ordered by id; across pairs by instrument, granularity
    at_t = via_psql[via_psql["event_creation_date"] == pd.Timestamp(T)]
    assert list(zip(at_t["instrument"], at_t["granularity"], at_t["original_event_id"],
                    strict=True))[:3] == [("EUR_USD", "D", at_t["original_event_id"].iloc[0]),
                                          ("EUR_USD", "H1", LOW), ("EUR_USD", "H1", HIGH)]
    assert via_psql["event_price_level"].iloc[
        via_psql["original_event_id"].tolist().index(HIGH)] == (
        Decimal("123456.123456") if exact else 123456.123456)


def test_big_read_arrow_and_columns_and_empty(edge_url, through_psql):
    arrow = read_events(url=edge_url, backend="arrow")
    with psycopg.connect(db.libpq_url(edge_url), autocommit=True) as conn:
        assert arrow.equals(read_events(url=conn, backend="arrow"))
        some = read_events(columns=["volume_at_event", "original_event_id"], url=edge_url)
        assert list(some.columns) == ["volume_at_event", "original_event_id"]
        pd.testing.assert_frame_equal(some, read_events(
            columns=["volume_at_event", "original_event_id"], url=conn))
        empty = read_events(start="2100-01-01", url=edge_url)
        assert len(empty) == 0
        assert dict(empty.dtypes) == dict(read_events(url=conn).dtypes)
    assert len(through_psql) == 3


def test_big_read_without_psql_reads_in_process(edge_url, monkeypatch):
    monkeypatch.setattr(reading, "BIG_ROWS", 0)
    monkeypatch.setattr(reading, "_psql", lambda: None)
    _check_against_db(read_events(url=edge_url), _db_values(edge_url), False)


def test_psql_error_is_raised_not_swallowed(edge_url):
    cols = [c for c in reading.EVENT_COLS if c.name == "day_of_week"]
    with pytest.raises(RuntimeError, match="^the read failed: ERROR: +division by zero"):
        reading.psql_table(db.role_url(edge_url, db.READER_ROLE),
                           "SELECT (1 / 0)::smallint FROM generate_series(1, 3)", cols, False)
    table = reading.psql_table(db.role_url(edge_url, db.READER_ROLE),
                               "SELECT 7::smallint FROM generate_series(1, 3)", cols, False)
    assert table.column("day_of_week").to_pylist() == [7, 7, 7]


def test_order_without_the_general_sort_equals_arrow_sort():
    """Runs of pairs out of order, ties on time across and within pairs, rows not in runs:
    the same order as Arrow's sort on the four keys."""
    rng = np.random.default_rng(3)
    n = 4000
    pairs = [("GBP_USD", "H1"), ("EUR_USD", "H4"), ("EUR_USD", "D"), ("AUD_USD", "W")]
    runs = np.repeat(np.arange(len(pairs)), n // len(pairs))
    ts = rng.integers(0, 300, n) * 1_000_000
    ids = [str(uuid.UUID(int=int(x))) for x in rng.integers(0, 2**62, n)]
    keys = [(k, "ascending") for k in reading.ORDER]
    for order in (runs, rng.permutation(runs)):  # in runs of a pair; interleaved
        table = pa.table({
            "event_creation_date": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "instrument": [pairs[i][0] for i in order],
            "granularity": [pairs[i][1] for i in order],
            "original_event_id": ids, "x": np.arange(n)})
        assert reading._sorted(table).equals(table.sort_by(keys))
        unique = table.set_column(0, "event_creation_date", pa.array(
            rng.permutation(n) * 1000, pa.timestamp("us", tz="UTC")))  # no ties: fast path
        assert reading._sorted(unique).equals(unique.sort_by(keys))


def test_reader_connections_are_pooled_and_replaced_when_the_server_closes_them(edge_url):
    key = (os.getpid(), edge_url)
    read_events("EUR_USD", url=edge_url)
    (first,) = reading._POOL.idle[key]
    read_events("EUR_USD", url=edge_url)
    assert reading._POOL.idle[key] == [first]  # the same connection, given back
    with psycopg.connect(db.libpq_url(edge_url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first.info.backend_pid,))
    for _ in range(500):  # until the server's close reaches the socket
        if select.select([first.fileno()], [], [], 0.01)[0]:
            break
        time.sleep(0.01)
    got = read_events("EUR_USD", url=edge_url)
    assert len(got) == 4
    (second,) = reading._POOL.idle[key]
    assert second is not first and first.closed


def test_copy_out_raises_psycopg_errors_and_leaves_the_connection_usable(edge_url):
    from psycopg import sql
    with psycopg.connect(db.libpq_url(edge_url), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            reading.copy_out(conn, sql.SQL("COPY (SELECT * FROM nope) TO STDOUT"))
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.errors.DivisionByZero):  # after rows were sent
            reading.copy_out(conn, sql.SQL(
                "COPY (SELECT 1 / (3 - g) FROM generate_series(1, 5) g) TO STDOUT"))
        assert conn.execute("SELECT 2").fetchone() == (2,)
        assert bytes(reading.copy_out(conn, sql.SQL(
            "COPY (SELECT g, 'a' FROM generate_series(1, 2) g) TO STDOUT (FORMAT csv)"))
        ) == b"1,a\n2,a\n"
        assert reading.copy_out(conn, sql.SQL("COPY (SELECT 1 WHERE false) TO STDOUT")) == b""


def test_a_callers_idle_connection_gets_its_transaction_as_psycopg_opens_it(edge_url):
    """A non-autocommit connection outside a transaction: the read opens one, as any
    psycopg statement would (the direct COPY loop alone would bypass psycopg's BEGIN)."""
    with psycopg.connect(db.libpq_url(edge_url)) as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert len(read_events("EUR_USD", url=conn)) == 4
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.rollback()
        with conn.transaction():  # inside one: the direct loop, the same rows
            assert len(read_events("EUR_USD", url=conn)) == 4


def test_only_possibly_big_reads_ask_the_planner():
    make = reading.Query.make
    assert reading._may_be_big(make())
    assert reading._may_be_big(make("EUR_USD", start="2025-01-01", end="2026-01-01"))
    assert reading._may_be_big(make(["EUR_USD", "GBP_USD"], start="2026-01-01",
                                    end="2026-01-02"))
    assert not reading._may_be_big(make("EUR_USD", start="2026-01-01", end="2026-02-01"))
    assert not reading._may_be_big(make(latest=5))
    assert not reading._may_be_big(make(price=1.1, width=0.1))
