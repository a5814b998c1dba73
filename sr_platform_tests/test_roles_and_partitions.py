"""Roles, the partition function's validation and its behaviour under concurrency."""

import threading

import psycopg
import pytest
from psycopg import errors

from sr_platform.core import db

from .conftest import insert_event

HOSTILE = "X'); DROP TABLE new_resistance_events; --"


def _conn(url, role):
    conn = psycopg.connect(db.libpq_url(url), autocommit=True)
    conn.execute(f"SET ROLE {role}")
    return conn


def test_reader_cannot_write(clean_db):
    with _conn(clean_db, "sr_writer") as w:
        w.execute("SELECT ensure_partition('EUR_USD', 'H1')")
        insert_event(w)
    with _conn(clean_db, "sr_reader") as r:
        assert r.execute("SELECT count(*) FROM new_resistance_events").fetchone() == (1,)
        assert r.execute("SELECT count(*) FROM new_resistance_events_h1_eur_usd").fetchone() \
            == (1,)
        for stmt in ("DELETE FROM new_resistance_events",
                     "UPDATE support_and_resistance_master SET test_count = 1",
                     "INSERT INTO rejected_events (source, source_sha256, line_number, "
                     "raw_record, reasons) VALUES ('f', repeat('a', 64), 1, '{}', '{x}')",
                     "SELECT ensure_partition('GBP_USD', 'H1')"):
            with pytest.raises(errors.InsufficientPrivilege) as exc:
                r.execute(stmt)
            assert exc.value.sqlstate == "42501"


def test_writer_writes_but_cannot_alter(clean_db):
    with _conn(clean_db, "sr_writer") as w:
        assert w.execute("SELECT ensure_partition('WRITER_T', 'H4')").fetchone() == (3,)
        insert_event(w, instrument="WRITER_T", granularity="H4")
        assert w.execute("DELETE FROM new_resistance_events").rowcount == 1
        for stmt in ("ALTER TABLE new_resistance_events ADD COLUMN x int",
                     "DROP TABLE new_resistance_events_h4_writer_t",
                     "TRUNCATE new_resistance_events",
                     "CREATE TABLE sneaky (x int)",
                     "CREATE INDEX ON new_resistance_events (volume_at_event)"):
            with pytest.raises(errors.InsufficientPrivilege) as exc:
                w.execute(stmt)
            assert exc.value.sqlstate == "42501"


def test_tables_belong_to_the_owner_role(clean_db):
    with psycopg.connect(db.libpq_url(clean_db)) as conn:
        owners = conn.execute(
            """SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'i', 'I', 'S')
                 AND c.relname NOT LIKE 'alembic%'""").fetchall()
    assert owners == [("sr_owner",)]


def _catalog(conn):
    return conn.execute(
        """SELECT count(*), string_agg(relname, ',' ORDER BY relname) FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"""
    ).fetchone()


@pytest.mark.parametrize("instrument,granularity,message", [
    (HOSTILE, "H1", "invalid instrument"),
    ("eur_usd", "H1", "invalid instrument"),
    ("EUR_USD_LONG", "H1", "invalid instrument"),
    ("_EUR", "H1", "invalid instrument"),
    ("", "H1", "invalid instrument"),
    (None, "H1", "invalid instrument NULL"),
    ("EUR_USD", "M5", "invalid granularity 'M5'"),
    ("EUR_USD", "h1; DROP TABLE x", "invalid granularity"),
])
def test_bad_partition_names_are_refused_and_change_nothing(clean_db, instrument, granularity,
                                                           message):
    with _conn(clean_db, "sr_writer") as w:
        before = _catalog(w)
        with pytest.raises(errors.InvalidParameterValue) as exc:
            w.execute("SELECT ensure_partition(%s, %s)", (instrument, granularity))
        assert message in str(exc.value)
        assert _catalog(w) == before
        assert w.execute("SELECT to_regclass('new_resistance_events')").fetchone()[0] \
            is not None


def test_concurrent_ensure_partition(clean_db):
    results: list = []
    barrier = threading.Barrier(4)

    def worker():
        with _conn(clean_db, "sr_writer") as w:
            barrier.wait()
            results.append(w.execute("SELECT ensure_partition('CONC_T', 'W')").fetchone()[0])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 0, 0, 3]
    with _conn(clean_db, "sr_reader") as r:
        rows = r.execute("SELECT table_name, partition_name, granularity, instrument "
                         "FROM list_partitions() WHERE instrument = 'CONC_T'").fetchall()
    assert rows == [
        ("event_features", "event_features_w_conc_t", "W", "CONC_T"),
        ("new_resistance_events", "new_resistance_events_w_conc_t", "W", "CONC_T"),
        ("support_and_resistance_master", "support_and_resistance_master_w_conc_t", "W",
         "CONC_T"),
    ]


def test_list_partitions_counts_rows(clean_db):
    with _conn(clean_db, "sr_writer") as w:
        w.execute("SELECT ensure_partition('EUR_USD', 'D')")
        for day in range(1, 4):
            insert_event(w, granularity="D",
                         event_creation_date=f"2026-03-0{day}T00:00:00Z")
        rows = w.execute("SELECT partition_name, row_count FROM list_partitions(true) "
                         "WHERE granularity = 'D' AND instrument = 'EUR_USD'").fetchall()
    assert rows == [("event_features_d_eur_usd", 0), ("new_resistance_events_d_eur_usd", 3),
                    ("support_and_resistance_master_d_eur_usd", 0)]
