"""The read API (sr_platform.read, issue 15): exact equality with the database for every
filter and backend, types (also of empty results), argument errors naming the argument, a
clear connection error, as-of reads equal to recomputing from the events up to T, and the
CLI export's round trip through `sr-platform load`."""

import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import psycopg
import pyarrow as pa
import pytest

import sr_platform
from sr_platform import iter_events, read_events, read_features, read_levels
from sr_platform.core import db, levels
from sr_platform.core.reading import EVENT_COLS, FEATURE_COLS, LEVEL_COLS, ReadError

from .helpers import loaded_database

END = datetime(2026, 3, 1, tzinfo=UTC)
ORDER = "event_creation_date, instrument, granularity, original_event_id"


@pytest.fixture(scope="module")
def data_url(server_url, tmp_path_factory):
    """A database of its own with three instruments over ~2 months (all granularities),
    loaded and refreshed (levels and features) by the ingest service."""
    with loaded_database(server_url, tmp_path_factory.mktemp("read"), "srtest_read", 7,
                         END) as url:
        yield url


def _rows(url: str, query: str, params=()) -> tuple[list[str], list[tuple]]:
    with psycopg.connect(db.libpq_url(url)) as conn:
        cur = conn.execute(query, params)
        return [d.name for d in cur.description], cur.fetchall()


def _py(v):
    """A database value as the frame holds it: floats for Decimal, str for UUID."""
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, datetime):
        return v.astimezone(UTC)
    return v


def _frame_py(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    return v


def _values(frame, backend: str) -> dict[str, list]:
    if backend == "arrow":
        return {c: frame.column(c).to_pylist() for c in frame.column_names}
    if backend == "polars":
        return _values(frame.to_arrow(), "arrow")
    return {c: [_frame_py(v) for v in frame[c].tolist()] for c in frame.columns}


def _expected(url: str, select: str, where: str = "TRUE", params=()) -> dict[str, list]:
    names, rows = _rows(url, f"SELECT {select} WHERE {where} ORDER BY {ORDER}", params)
    return {n: [_py(r[i]) for r in rows] for i, n in enumerate(names)}


EVENT_SELECT = ", ".join(c.name for c in EVENT_COLS) + " FROM new_resistance_events"


def _assert_same(got: dict[str, list], want: dict[str, list]) -> None:
    assert list(got) == list(want)
    for c in want:  # column by column: the failure names the column
        assert got[c] == want[c], c


@pytest.mark.parametrize("backend", ["pandas", "arrow", "polars"])
def test_read_events_every_filter_equals_the_database(data_url, backend):
    if backend == "polars":
        pytest.importorskip("polars")
    lo, hi = datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 2, 3, 12, tzinfo=UTC)
    cases = [
        ({}, "TRUE", ()),
        ({"instrument": "EUR_USD"}, "instrument = 'EUR_USD'", ()),
        ({"instrument": ["EUR_USD", "GBP_USD"], "granularity": ["H1", "D"]},
         "instrument IN ('EUR_USD', 'GBP_USD') AND granularity IN ('H1', 'D')", ()),
        ({"granularity": "H4", "start": lo, "end": hi},
         "granularity = 'H4' AND event_creation_date >= %s AND event_creation_date < %s",
         (lo, hi)),
        ({"start": "2026-02-01"}, "event_creation_date >= '2026-02-01T00:00:00Z'", ()),
        ({"end": pd.Timestamp("2026-01-05T13:00:00+01:00")},
         "event_creation_date < '2026-01-05T12:00:00Z'", ()),
    ]
    for kwargs, where, params in cases:
        got = _values(read_events(**kwargs, url=data_url, backend=backend), backend)
        want = _expected(data_url, EVENT_SELECT, where, params)
        assert len(want["original_event_id"]) > 0, kwargs
        _assert_same(got, want)
    # a price band (Decimal bounds; floats go through their shortest repr)
    _, ((price,),) = _rows(data_url, "SELECT event_price_level FROM new_resistance_events "
                                     "WHERE instrument = 'EUR_USD' AND granularity = 'H1' "
                                     "ORDER BY event_creation_date LIMIT 1")
    got = _values(read_events("EUR_USD", "H1", price=float(price), width=0.002, url=data_url,
                              backend=backend), backend)
    want = _expected(data_url, EVENT_SELECT, "instrument = 'EUR_USD' AND granularity = 'H1' "
                     "AND event_price_level BETWEEN %s AND %s",
                     (price - Decimal("0.002"), price + Decimal("0.002")))
    assert len(want["original_event_id"]) > 1
    _assert_same(got, want)
    # a subset of columns, in the order asked
    got = _values(read_events("GBP_USD", columns=["event_price_level", "original_event_id"],
                              url=data_url, backend=backend), backend)
    want = _expected(data_url, "event_price_level, original_event_id FROM "
                     "new_resistance_events", "instrument = 'GBP_USD'")
    _assert_same(got, want)


def test_latest_is_the_newest_n_of_each_pair_oldest_first(data_url):
    got = read_events(["EUR_USD", "USD_JPY"], ["H1", "W"], latest=3, url=data_url)
    want = _expected(data_url, EVENT_SELECT,
                     "(instrument, granularity, event_creation_date, original_event_id) IN "
                     "(SELECT instrument, granularity, event_creation_date, original_event_id "
                     " FROM (SELECT *, row_number() OVER (PARTITION BY instrument, granularity "
                     "ORDER BY event_creation_date DESC, original_event_id DESC) n "
                     "FROM new_resistance_events WHERE instrument IN ('EUR_USD', 'USD_JPY') "
                     "AND granularity IN ('H1', 'W')) r WHERE n <= 3)")
    assert len(want["original_event_id"]) >= 9  # a weekly pair may hold fewer than 3
    _assert_same(_values(got, "pandas"), want)
    assert read_events("EUR_USD", "H1", latest=1, url=data_url)["event_creation_date"].iloc[0] \
        == max(read_events("EUR_USD", "H1", url=data_url)["event_creation_date"])


def test_types_float_and_exact(data_url):
    frame = read_events("EUR_USD", url=data_url)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "original_event_id": "str", "event_type": "str",
        "event_creation_date": "datetime64[us, UTC]", "granularity": "str",
        "instrument": "str", "event_price_level": "float64", "atr_at_event": "float64",
        "volume_at_event": "float64", "new_resistance_negative_rebound": "float64",
        "new_resistance_negative_rebound_in_atr": "float64", "day_of_week": "int16",
        "hour_of_day": "int16"}
    assert frame["volume_at_event"].isna().any()  # NULL volumes are NaN
    exact = read_events("EUR_USD", exact=True, url=data_url, backend="arrow")
    assert exact.schema.field("event_price_level").type == pa.decimal128(18, 6)
    assert exact.schema.field("volume_at_event").type == pa.decimal128(18, 2)
    assert exact.schema.field("event_creation_date").type == pa.timestamp("us", tz="UTC")
    names, rows = _rows(data_url, f"SELECT event_price_level, volume_at_event FROM "
                        f"new_resistance_events WHERE instrument = 'EUR_USD' ORDER BY {ORDER}")
    assert exact.column("event_price_level").to_pylist() == [r[0] for r in rows]
    assert exact.column("volume_at_event").to_pylist() == [r[1] for r in rows]
    as_pandas = read_events("EUR_USD", exact=True, url=data_url)
    assert as_pandas["event_price_level"].tolist() == [r[0] for r in rows]  # Decimal objects
    pl = pytest.importorskip("polars")
    schema = read_events("EUR_USD", url=data_url, backend="polars").schema
    assert (schema["original_event_id"], schema["event_creation_date"],
            schema["event_price_level"], schema["day_of_week"]) == (
        pl.String, pl.Datetime("us", "UTC"), pl.Float64, pl.Int16)


def _dtypes(frame) -> dict[str, str]:
    return {c: str(t) for c, t in frame.dtypes.items()}


@pytest.mark.parametrize("reader, cols", [(read_events, EVENT_COLS), (read_levels, LEVEL_COLS),
                                          (read_features, FEATURE_COLS)])
def test_empty_results_have_the_types(data_url, reader, cols):
    full = reader("EUR_USD", url=data_url)
    assert len(full) > 0
    for kwargs in ({"instrument": "NOPE"}, {"start": "2030-01-01"},
                   {"instrument": "NOPE", "latest": 5},
                   {"instrument": "NOPE", "granularity": "H1", "latest": 5}):
        empty = reader(**kwargs, url=data_url)
        assert len(empty) == 0 and _dtypes(empty) == _dtypes(full), kwargs
        arrow = reader(**kwargs, url=data_url, backend="arrow")
        assert arrow.num_rows == 0
        assert arrow.schema == reader("EUR_USD", url=data_url, backend="arrow").schema
    assert list(full.columns) == [c.name for c in cols]


def test_read_levels_and_features_equal_the_database(data_url):
    level_select = ("l.id, l.original_event_id, l.instrument, l.granularity, "
                    "l.event_creation_date, e.event_price_level, e.atr_at_event, l.event_type, "
                    "l.status, l.test_count, l.last_test_date, l.breach_date "
                    "FROM support_and_resistance_master l JOIN new_resistance_events e USING "
                    "(instrument, granularity, event_creation_date, original_event_id)")
    order_l = ORDER.replace("event_creation_date", "l.event_creation_date").replace(
        "instrument", "l.instrument").replace("granularity", "l.granularity").replace(
        "original_event_id", "l.original_event_id")
    for kwargs, where in (({}, "TRUE"), ({"instrument": "EUR_USD", "status": "breached"},
                                         "l.instrument = 'EUR_USD' AND status = 'breached'"),
                          ({"granularity": ["D", "W"], "status": ["active"]},
                           "l.granularity IN ('D', 'W') AND status = 'active'")):
        names, rows = _rows(data_url, f"SELECT {level_select} WHERE {where} ORDER BY {order_l}")
        want = {n: [_py(r[i]) for r in rows] for i, n in enumerate(names)}
        assert len(rows) > 0
        for backend in ("pandas", "arrow"):
            _assert_same(_values(read_levels(**kwargs, url=data_url, backend=backend),
                                 backend), want)
    feature_select = ", ".join(c.name for c in FEATURE_COLS) + " FROM event_features"
    _assert_same(_values(read_features(url=data_url), "pandas"),
                 _expected(data_url, feature_select))
    _assert_same(_values(read_features("USD_JPY", "H1", latest=4, url=data_url), "pandas"),
                 _expected(data_url, feature_select, "instrument = 'USD_JPY' AND "
                           "granularity = 'H1' AND event_creation_date >= (SELECT "
                           "event_creation_date FROM event_features WHERE instrument = "
                           "'USD_JPY' AND granularity = 'H1' ORDER BY 1 DESC LIMIT 1 "
                           "OFFSET 3)"))


def test_every_kind_of_url(data_url):
    want = read_events("EUR_USD", "D", url=data_url)
    reader = db.role_url(data_url, db.READER_ROLE)
    pd.testing.assert_frame_equal(read_events("EUR_USD", "D", url=reader), want)
    with psycopg.connect(db.libpq_url(data_url)) as conn:  # not autocommit: left as it was
        conn.execute("SET DateStyle = 'SQL, DMY'")
        pd.testing.assert_frame_equal(read_events("EUR_USD", "D", url=conn), want)
        assert conn.execute("SHOW DateStyle").fetchone()[0] == "SQL, DMY"
        assert not conn.closed
    engine = db.engine(data_url)
    try:
        pd.testing.assert_frame_equal(read_events("EUR_USD", "D", url=engine), want)
    finally:
        engine.dispose()


def test_iter_events_batches_cover_the_read(data_url):
    batches = list(iter_events(["EUR_USD", "GBP_USD"], start="2026-01-15", batch_rows=50,
                               url=data_url))
    assert all(0 < len(b) <= 50 for b in batches) and len(batches) > 4
    got = pd.concat(batches, ignore_index=True)
    want = read_events(["EUR_USD", "GBP_USD"], start="2026-01-15", url=data_url)
    want = want.sort_values(["instrument", "granularity", "event_creation_date",
                             "original_event_id"], ignore_index=True)
    pd.testing.assert_frame_equal(got, want)
    arrow = list(iter_events("EUR_USD", "W", batch_rows=1, columns=["original_event_id"],
                             url=data_url, backend="arrow"))
    assert [t.num_rows for t in arrow] == [1] * len(arrow) and arrow[0].column_names == [
        "original_event_id"]


def test_known_at_reads_what_was_held_then(data_url):
    t = datetime(2026, 3, 5, tzinfo=UTC)
    with psycopg.connect(db.libpq_url(data_url), autocommit=True) as conn:
        conn.execute("UPDATE new_resistance_events SET created_at = %s "
                     "WHERE instrument = 'GBP_USD'", (t,))
        conn.execute("UPDATE new_resistance_events SET created_at = %s "
                     "WHERE instrument = 'GBP_USD' AND granularity = 'H1' "
                     "AND event_creation_date >= '2026-02-01'", (t + timedelta(days=2),))
    got = read_events("GBP_USD", known_at=t, url=data_url)
    want = _expected(data_url, EVENT_SELECT, "instrument = 'GBP_USD' AND created_at <= %s",
                     (t,))
    assert 0 < len(want["original_event_id"]) < len(read_events("GBP_USD", url=data_url))
    _assert_same(_values(got, "pandas"), want)
    assert len(read_events("GBP_USD", known_at=t - timedelta(seconds=1), url=data_url)) == 0


def _outcomes_up_to(url: str, pair, t: datetime) -> pd.DataFrame:
    """The reference: level_outcomes over the pair's events at or before t, read row by row
    (Decimal -> float) and ordered as the refresh orders them."""
    _, rows = _rows(url, "SELECT original_event_id::text, event_creation_date, "
                    "event_price_level, atr_at_event FROM new_resistance_events "
                    "WHERE instrument = %s AND granularity = %s AND event_creation_date <= %s "
                    "ORDER BY event_creation_date, original_event_id", (*pair, t))
    events = pd.DataFrame([(i, ts, float(p), float(a)) for i, ts, p, a in rows],
                          columns=["original_event_id", "ts", "price", "atr"])
    return levels.level_outcomes(events)


def _as_list(values) -> list:
    return [None if pd.isna(v) else pd.Timestamp(v).tz_localize(None)
            if isinstance(v, pd.Timestamp | datetime) and pd.Timestamp(v).tzinfo is not None
            else pd.Timestamp(v) if isinstance(v, datetime) else v for v in values]


def test_as_of_levels_equal_recomputing_from_the_events_up_to_t(data_url):
    """The property, over many T and every pair: read_levels(as_of=T) is exactly
    level_outcomes on the events <= T, and never shows the future."""
    pairs = [(i, g) for i in ("EUR_USD", "GBP_USD", "USD_JPY") for g in ("W", "D", "H4", "H1")]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    times = [start + timedelta(hours=h) for h in range(-300, 24 * 62, 97)]
    _, events_at = _rows(data_url, "SELECT event_creation_date FROM new_resistance_events "
                         "WHERE instrument = 'EUR_USD' AND granularity = 'H1' ORDER BY 1 "
                         "OFFSET 40 LIMIT 1")
    times.append(events_at[0][0])  # T exactly an event's time: that event is known
    checked = 0
    for t in times:
        got = read_levels(as_of=t, url=data_url)
        assert (got["event_creation_date"] <= t).all()
        assert ((got["breach_date"] <= t) | got["breach_date"].isna()).all()
        assert ((got["last_test_date"] <= t) | got["last_test_date"].isna()).all()
        for pair in pairs:
            mine = got[(got["instrument"] == pair[0]) & (got["granularity"] == pair[1])]
            mine = mine.sort_values(["event_creation_date", "original_event_id"])
            ref = _outcomes_up_to(data_url, pair, t)
            assert mine["original_event_id"].tolist() == ref["original_event_id"].tolist()
            assert mine["status"].tolist() == ref["status"].tolist(), (t, pair)
            assert mine["test_count"].tolist() == ref["test_count"].tolist(), (t, pair)
            for c in ("last_test_date", "breach_date"):
                assert _as_list(mine[c]) == _as_list(ref[c]), (t, pair, c)
            checked += len(ref)
    assert checked > 1000
    # with a start (only the events from it on are read): the same levels
    t = start + timedelta(days=40)
    whole = read_levels("EUR_USD", as_of=t, url=data_url)
    part = read_levels("EUR_USD", start=start + timedelta(days=20), as_of=t, url=data_url)
    pd.testing.assert_frame_equal(
        part, whole[whole["event_creation_date"] >= start + timedelta(days=20)].reset_index(
            drop=True))
    breached = read_levels("EUR_USD", status="breached", as_of=t, url=data_url)
    pd.testing.assert_frame_equal(breached, whole[whole["status"] == "breached"].reset_index(
        drop=True))
    # far in the future: the stored outcomes (the refresh computed the same)
    pd.testing.assert_frame_equal(read_levels(as_of="2100-01-01", url=data_url),
                                  read_levels(url=data_url))
    # a level breached later still reads active before its breach
    stored = read_levels("EUR_USD", status="breached", url=data_url)
    first = stored.iloc[0]
    before = read_levels("EUR_USD", as_of=first["breach_date"] - timedelta(microseconds=1),
                         url=data_url)
    assert before.set_index("original_event_id").loc[first["original_event_id"],
                                                     "status"] == "active"


@pytest.mark.parametrize("kwargs, arg", [
    ({"granularity": "M1"}, "granularity"),
    ({"granularity": ["H1", "h4"]}, "granularity"),
    ({"instrument": "eur/usd"}, "instrument"),
    ({"start": "2026-03-02", "end": "2026-03-01"}, "start"),
    ({"start": datetime(2026, 3, 1)}, "start"),
    ({"end": "2026-03-01T10:00:00"}, "end"),
    ({"known_at": datetime(2026, 3, 1)}, "known_at"),
    ({"start": "yesterday"}, "start"),
    ({"backend": "spark"}, "backend"),
    ({"latest": 0}, "latest"),
    ({"price": 1.1}, "price"),
    ({"price": 1.1, "width": -1}, "width"),
    ({"columns": ["nope"]}, "columns"),
])
def test_bad_arguments_name_the_argument(kwargs, arg):
    with pytest.raises(ValueError) as err:
        read_events(**kwargs, url="postgresql://nobody@127.0.0.1:1/none")
    assert str(err.value).startswith(f"{arg}: ")


def test_bad_arguments_of_levels_and_iter():
    with pytest.raises(ValueError, match="^status: unknown status 'gone'"):
        read_levels(status="gone", url="postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(ValueError, match="^as_of: .* naive"):
        read_levels(as_of=datetime(2026, 1, 1), url="postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(ValueError, match="^batch_rows: "):
        next(iter_events(batch_rows=0))


def test_connection_failure_is_one_clear_line(tmp_path):
    with _closed_port() as port:
        url = f"postgresql://sr_app_reader:s3cret-pw@127.0.0.1:{port}/sr_platform"
        with pytest.raises(ReadError) as err:
            read_events("EUR_USD", url=url)
        message = str(err.value)
        assert message.startswith(f"cannot read: the database at 127.0.0.1:{port}/sr_platform "
                                  "is unreachable (")
        assert message.endswith("Connection refused)")
        assert "s3cret" not in message and "\n" not in message
        # the CLI export: exit 1, that line, no file
        done = _cli(url, "export", "--out", str(tmp_path / "x.parquet"))
        assert done.returncode == 1
        assert done.stderr == f"sr-platform: error: {message}\n"
        assert list(tmp_path.iterdir()) == []


class _closed_port:  # noqa: N801 - a context manager: a port where nothing listens
    def __enter__(self) -> int:
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


def test_import_is_light_and_polars_error_is_clear(data_url, monkeypatch):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, sr_platform; "
                          "print('dagster' in sys.modules, 'pandas' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert sr_platform.read_events is read_events
    monkeypatch.setitem(sys.modules, "polars", None)  # as if not installed
    with pytest.raises(ImportError, match="^backend: 'polars' needs the polars package"):
        read_events("EUR_USD", url=data_url, backend="polars")


def _cli(url: str, *args: str):
    import os
    import subprocess
    import sys
    env = {**os.environ, "SR_PLATFORM_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "sr_platform.cli", *args], env=env,
                          capture_output=True, text=True)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_round_trip_through_load(data_url, server_url, make_db, tmp_path, suffix):
    """`sr-platform export` then `sr-platform load` into a fresh database: the same events,
    exactly (decimals compared as Decimal)."""
    import pyarrow.parquet as pq
    out = tmp_path / f"eur{suffix}"
    done = _cli(data_url, "export", "--instrument", "EUR_USD", "--instrument", "USD_JPY",
                "--granularity", "H1", "--granularity", "D", "--start", "2026-01-10",
                "--end", "2026-02-20T12:00:00Z", "--out", str(out))
    assert done.returncode == 0, done.stderr
    want = read_events(["EUR_USD", "USD_JPY"], ["H1", "D"], "2026-01-10",
                       "2026-02-20T12:00:00Z", exact=True, url=data_url)
    assert done.stdout.startswith(f"exported {len(want)} events to {out}")
    assert (out.stat().st_mode & 0o777) == 0o600
    if suffix == ".parquet":
        assert set(pq.read_schema(out).types) == {pa.string()}  # the event-file format
    fresh = make_db(server_url)
    loaded = _cli(fresh, "load", str(out))
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    got = read_events(exact=True, url=fresh)
    pd.testing.assert_frame_equal(got, want)
    assert len(got) > 100 and got["volume_at_event"].isna().any()
    # refused before anything is written: an existing file, a bad suffix, start > end
    again = _cli(data_url, "export", "--out", str(out))
    assert again.returncode == 64 and "exists; --force replaces it" in again.stderr
    bad = _cli(data_url, "export", "--out", str(tmp_path / "x.json"))
    assert bad.returncode == 64 and "must end in .parquet or .csv" in bad.stderr
    bad = _cli(data_url, "export", "--start", "2026-02-01", "--end", "2026-01-01",
               "--out", str(tmp_path / "y.csv"))
    assert bad.returncode == 64 and "--start: " in bad.stderr
    assert not (tmp_path / "y.csv").exists()


def test_export_help_lists_its_exit_codes(capsys):
    from sr_platform import cli
    with pytest.raises(SystemExit) as done:
        cli.main(["export", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out[out.index("exit codes:\n"):].splitlines()[1:] == [
        "  0 the file is written (with no rows when nothing matched)",
        "  1 error, e.g. the database is unreachable (no file left behind)",
        "  64 usage error (bad or missing arguments)"]
