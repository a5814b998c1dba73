"""Range reads split into parallel COPY streams (core/split_read.py, issue 15 section 2):
value for value the frame one COPY on a caller's connection gives, in process and through
psql, for events and features; every stream reads the snapshot the first one exported; the
plan splits by leaf or by time; the ordering and reordering equal Arrow's sort."""

import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from psycopg import sql

from sr_platform import read_events, read_features
from sr_platform.core import db, reading
from sr_platform.core import split_read as sr

from .helpers import loaded_database

END = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def data_url(server_url, tmp_path_factory):
    """Three instruments over ~2 months, loaded and refreshed by the ingest service, plus
    rows that make the ordering hard: ties on time across pairs and within a pair."""
    with loaded_database(server_url, tmp_path_factory.mktemp("split"), "srtest_split", 11,
                         END) as url:
        yield from _with_hard_rows(url)


def _with_hard_rows(url: str):
    t = datetime(2026, 2, 2, 12, 0, tzinfo=UTC)
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO new_resistance_events (original_event_id, event_creation_date, "
            "granularity, instrument, event_type, event_price_level, atr_at_event, "
            "volume_at_event, new_resistance_negative_rebound, "
            "new_resistance_negative_rebound_in_atr, day_of_week, hour_of_day) "
            "VALUES (%s, %s, %s, %s, %s, 1.1, 0.01, %s, -0.5, -1, 0, 12)",
            [(str(uuid.UUID(int=k)), t, g, i, kind, vol)
             for k, (i, g, kind, vol) in enumerate([
                 ("EUR_USD", "H1", "new_resistance", None),
                 ("EUR_USD", "H1", "other, \"quoted\"", Decimal("1.25")),
                 ("EUR_USD", "D", "new_resistance", None),
                 ("GBP_USD", "H1", "new_resistance", Decimal("2"))], start=1)])
        conn.execute("ANALYZE")
    yield url


@pytest.fixture
def streams(monkeypatch):
    """Every range read splits (whatever its size); the streams of each are recorded."""
    seen: list[int] = []
    real = sr.run_streams

    def recorded(conn, streams, read_one):
        seen.append(streams)
        return real(conn, streams, read_one)
    monkeypatch.setattr(sr, "SPLIT_MIN_ROWS", 0)
    monkeypatch.setattr(sr, "STREAMS", 3)
    monkeypatch.setattr(sr, "run_streams", recorded)
    return seen


CASES = [
    {},
    {"instrument": "EUR_USD"},
    {"instrument": "EUR_USD", "start": "2026-01-20", "end": "2026-02-10"},  # split by time
    {"instrument": ["EUR_USD", "GBP_USD"], "granularity": ["H1", "D"]},
    {"granularity": "H1", "start": "2026-02-02T12:00:00Z"},
    {"columns": ["volume_at_event", "instrument", "original_event_id"]},
    {"exact": True},
    {"start": "2030-01-01"},  # nothing
]


@pytest.mark.parametrize("reader", [read_events, read_features])
@pytest.mark.parametrize("kwargs", CASES)
def test_split_reads_equal_one_copy(data_url, streams, reader, kwargs):
    reader_url = db.role_url(data_url, db.READER_ROLE)
    with psycopg.connect(db.libpq_url(reader_url), autocommit=True) as conn:
        for backend in ("pandas", "arrow"):
            split = reader(**kwargs, url=reader_url, backend=backend)
            one = reader(**kwargs, url=conn, backend=backend)  # a caller's: never split
            if backend == "arrow":
                assert split.equals(one)
            else:
                pd.testing.assert_frame_equal(split, one)
    assert len(streams) == 2 and all(n >= 2 for n in streams)
    if reader is read_events and not kwargs:
        # the hard rows, at one time: EUR_USD D, then H1 by id, then GBP_USD
        mine = [str(uuid.UUID(int=k)) for k in range(1, 5)]
        at = split.filter(pc.is_in(split.column("original_event_id"), pa.array(mine)))
        assert at.select(["instrument", "granularity", "original_event_id", "event_type",
                          "volume_at_event"]).to_pylist() == [
            dict(zip(("instrument", "granularity", "original_event_id", "event_type",
                      "volume_at_event"), row, strict=True)) for row in [
                ("EUR_USD", "D", mine[2], "new_resistance", None),
                ("EUR_USD", "H1", mine[0], "new_resistance", None),
                ("EUR_USD", "H1", mine[1], 'other, "quoted"', 1.25),
                ("GBP_USD", "H1", mine[3], "new_resistance", 2.0)]]


def test_big_split_reads_stream_through_psql(data_url, streams, monkeypatch):
    calls = []
    real = reading.psql_table

    def counted(*args, **kwargs):
        calls.append(kwargs.get("command"))
        return real(*args, **kwargs)
    monkeypatch.setattr(reading, "BIG_ROWS", 0)
    monkeypatch.setattr(reading, "psql_table", counted)
    reader_url = db.role_url(data_url, db.READER_ROLE)
    with psycopg.connect(db.libpq_url(reader_url), autocommit=True) as conn:
        for exact in (False, True):
            pd.testing.assert_frame_equal(read_events(url=reader_url, exact=exact),
                                          read_events(url=conn, exact=exact))
    assert streams == [3, 3] and len(calls) == 6
    assert all(c.startswith("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET "
                            "TRANSACTION SNAPSHOT '") for c in calls)
    assert all(f"; {sr.NO_WORKERS}; COPY (" in c for c in calls)


def test_every_stream_reads_the_snapshot_of_the_first(data_url):
    """A row committed after the snapshot was exported, before the second stream starts,
    is not seen by it: the streams add up to one consistent read."""
    reader_url = db.role_url(data_url, db.READER_ROLE)
    count = sql.SQL("COPY (SELECT count(*) FROM new_resistance_events) TO STDOUT")
    first_done = threading.Event()
    late = str(uuid.uuid4())
    with psycopg.connect(db.libpq_url(reader_url), autocommit=True) as lead:
        before = int(lead.execute("SELECT count(*) FROM new_resistance_events").fetchone()[0])

        def read_one(i, snapshot):
            if i == 0:
                with psycopg.connect(db.libpq_url(data_url), autocommit=True) as writer:
                    writer.execute(
                        "INSERT INTO new_resistance_events (original_event_id, "
                        "event_creation_date, granularity, instrument, event_price_level, "
                        "atr_at_event, new_resistance_negative_rebound, "
                        "new_resistance_negative_rebound_in_atr, day_of_week, hour_of_day) "
                        "VALUES (%s, '2026-02-20', 'D', 'EUR_USD', 1, 1, 0, 0, 4, 0)", (late,))
                first_done.set()
                return int(bytes(reading.copy_out(lead, count)))
            first_done.wait(30)
            with psycopg.connect(db.libpq_url(reader_url), autocommit=True) as other:
                return int(bytes(reading.copy_out(
                    other, sql.SQL(sr.snapshot_sql(snapshot, count.as_string(other))))))
        assert sr.run_streams(lead, 2, read_one) == [before, before]
        assert lead.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert int(lead.execute("SELECT count(*) FROM new_resistance_events"
                                ).fetchone()[0]) == before + 1
        with psycopg.connect(db.libpq_url(data_url), autocommit=True) as writer:
            writer.execute("DELETE FROM new_resistance_events WHERE original_event_id = %s",
                           (late,))


def test_a_failed_stream_raises_and_ends_the_snapshot(data_url):
    reader_url = db.role_url(data_url, db.READER_ROLE)
    with psycopg.connect(db.libpq_url(reader_url), autocommit=True) as lead:
        def read_one(i, snapshot):
            if i == 1:
                raise psycopg.errors.DivisionByZero("stream 1 failed")
            return 0
        with pytest.raises(psycopg.errors.DivisionByZero, match="stream 1 failed"):
            sr.run_streams(lead, 2, read_one)
        assert lead.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with pytest.raises(psycopg.errors.UndefinedObject, match="does not exist"):
            reading.copy_out(lead, sql.SQL(sr.snapshot_sql(
                "00000003-0000001B-1", "COPY (SELECT 1) TO STDOUT")))
        lead.execute("ROLLBACK")
        assert bytes(reading.copy_out(lead, sql.SQL("COPY (SELECT 1) TO STDOUT"))) == b"1\n"


def _leaf(i: str, g: str, rows: float) -> sr.Leaf:
    return sr.Leaf((i, g), f"new_resistance_events_{g.lower()}_{i.lower()}", rows)


def test_plan_splits_many_leaves_by_size_and_few_by_time():
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC)
    many = [_leaf(f"I{k}_USD", "H1", r) for k, r in enumerate([50, 40, 30, 30, 20, 20, 10])]
    plan = sr.plan(many, start, end, 3)
    assert sorted(k for s in plan for k, *_ in s) == list(range(7))
    assert [sum(many[k].rows for k, *_ in s) for s in plan] == [70, 70, 60]
    assert all(lo == start and hi == end for s in plan for _, _, lo, hi in s)
    few = [_leaf("EUR_USD", "H1", 1000), _leaf("EUR_USD", "D", 50)]
    plan = sr.plan(few, start, end, 3)
    assert [[(k, lo, hi) for k, _, lo, hi in s] for s in plan] == [
        [(0, start, start + timedelta(days=10)), (1, start, start + timedelta(days=10))],
        [(0, start + timedelta(days=10), start + timedelta(days=20)),
         (1, start + timedelta(days=10), start + timedelta(days=20))],
        [(0, start + timedelta(days=20), end), (1, start + timedelta(days=20), end)]]
    # no upper bound: no time shares, the leaves as they balance
    assert [[k for k, *_ in s] for s in sr.plan(few, start, None, 3)] == [[0], [1]]


@pytest.mark.parametrize("ties", [False, True])
def test_assemble_orders_as_arrow_sorts(ties):
    rng = np.random.default_rng(5)
    pairs = [("AUD_USD", "W"), ("EUR_USD", "D"), ("EUR_USD", "H1"), ("GBP_USD", "H4")]
    parts, expected = [], []
    for s in range(3):
        n = 500
        code = rng.integers(0, len(pairs), n).astype(np.int16)
        ts = (rng.integers(0, 200 if ties else 10**9, n) * 1000
              if ties else rng.permutation(10**6)[:n] * 1000 + s)
        ids = [str(uuid.UUID(int=int(x))) for x in rng.integers(0, 2**62, n)]
        vol = pa.array(rng.random(n), pa.float64(), mask=rng.random(n) < 0.2)
        kind = pa.array(["new_resistance"] * n if s else
                        rng.choice(["new_resistance", "x"], n).tolist(), pa.string())
        dec = pa.array([Decimal(int(x)).scaleb(-6) for x in rng.integers(0, 10**9, n)],
                       pa.decimal128(18, 6))
        part = pa.table({sr.PAIR: code, "event_creation_date": pa.array(
            ts, pa.timestamp("us", tz="UTC")), "original_event_id": ids,
            "volume_at_event": vol, "event_type": kind, "price": dec})
        parts.append(part)
        expected.append(part.append_column("instrument", pa.array(
            [pairs[c][0] for c in code])).append_column("granularity", pa.array(
                [pairs[c][1] for c in code])).drop_columns([sr.PAIR]))
    names = ["original_event_id", "event_type", "event_creation_date", "granularity",
             "instrument", "volume_at_event", "price"]
    keys = [(k, "ascending") for k in reading.ORDER]
    want = pa.concat_tables(expected).sort_by(keys).select(names)
    got = sr.assemble(parts, pairs, names, lambda t: t.sort_by(keys))
    assert parts == [] and got.equals(want)


def test_without_more_connections_the_read_is_one_copy(data_url, streams, monkeypatch):
    """A server out of connections for the other streams (max_connections): the read is
    the one COPY on the connection it has, not an error."""
    reader_url = db.role_url(data_url, db.READER_ROLE)
    want = read_events(url=reader_url)
    assert len(streams) == 1
    reading._POOL.close_all()
    real, taken = reading._POOL.take, []

    def only_one(url):
        if taken:
            raise reading.ReadError("cannot read: FATAL: sorry, too many clients already")
        taken.append(url)
        return real(url)
    monkeypatch.setattr(reading._POOL, "take", only_one)
    pd.testing.assert_frame_equal(read_events(url=reader_url), want)
    assert len(streams) == 2 and taken == [reader_url]
