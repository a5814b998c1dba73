"""Versioned migrations: the rollback procedure, the data-loss guard, and drift between the
Python table definitions and the migrated database."""

import re
import subprocess

import psycopg
import pytest
from psycopg import errors

from sr_platform.core import backup, db, migrate, settings, tables

from .conftest import insert_event


def schema_dump(url: str) -> str:
    """pg_dump --schema-only, minus comments and the per-run \\restrict token."""
    # pg_dump of the server's own major version: pg_dump 18 against a 15 server prints
    # uninitialised column options (`SET (pg_attver=<random>)`), so two dumps never matched
    tools = backup.client_bin_dir(backup.server_major(url))
    out = subprocess.run(
        [str(tools / "pg_dump"), "--schema-only", "--no-comments",
         db.libpq_url(url)], check=True, capture_output=True, text=True).stdout
    lines = [ln for ln in out.splitlines()
             if ln.strip() and not ln.startswith("--") and not re.match(r"\\(un)?restrict", ln)]
    return "\n".join(lines)


def test_history_is_linear_and_every_revision_has_sql(tmp_path):
    revs = migrate.history()
    assert [r[0] for r in revs] == [f"{n:04d}" for n in range(1, 10)]
    assert [r[1] for r in revs] == [None] + [f"{n:04d}" for n in range(1, 9)]
    for rev, _, _ in revs:
        for step in ("up", "down"):
            assert len(list(settings.sql_dir().glob(f"{rev}_*.{step}.sql"))) == 1


def test_round_trip_leaves_an_identical_catalog(any_server_url, make_db):
    url = make_db(any_server_url)
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        conn.execute("SET ROLE sr_writer")
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1')")
    first = schema_dump(url)
    assert "new_resistance_events_h1_eur_usd" in first

    migrate.downgrade(url, "base")
    assert migrate.current(url) is None
    with psycopg.connect(db.libpq_url(url)) as conn:
        left = conn.execute(
            """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relname NOT LIKE 'alembic_version%'""").fetchone()
        funcs = conn.execute(
            """SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname = 'public'""").fetchone()
    assert (left, funcs) == ((0,), (0,))

    migrate.upgrade(url)
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        conn.execute("SET ROLE sr_writer")
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1')")
    assert schema_dump(url) == first
    assert migrate.current(url) == migrate.head()


def test_downgrading_the_newest_revision_keeps_data(server_url, make_db):
    """Runbook: downgrading 0004 drops only the load history, 0003 only functions; events,
    levels and partitions stay, and upgrading again restores the rest."""
    url = make_db(server_url)
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1')")
        insert_event(conn)
    for below in ("0008", "0007", "0006", "0005", "0004", "0003", "0002"):
        migrate.downgrade(url, "-1")
        assert migrate.current(url) == below
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM new_resistance_events").fetchone() == (1,)
        assert conn.execute("SELECT to_regproc('ensure_partition')").fetchone() == (None,)
    migrate.upgrade(url)
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        assert conn.execute("SELECT ensure_partition('EUR_USD', 'H1')").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM new_resistance_events").fetchone() == (1,)


def test_dropping_tables_with_data_needs_explicit_consent(server_url, make_db):
    url = make_db(server_url)
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1')")
        insert_event(conn)
    with pytest.raises(errors.ObjectInUse) as exc:
        migrate.downgrade(url, "0001")
    assert "refusing to drop tables that hold data" in str(exc.value)
    assert migrate.current(url) == migrate.head()  # one transaction: nothing was undone
    migrate.downgrade(url, "0001", allow_data_loss=True)
    assert migrate.current(url) == "0001"


def test_code_tables_match_the_database(server_url, make_db):
    url = make_db(server_url)
    eng = db.engine(url)
    with eng.connect() as conn:
        assert tables.schema_drift(conn) == []
    with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
        conn.execute("ALTER TABLE event_features ALTER COLUMN hours_to_breach TYPE numeric(14,2)")
        conn.execute("ALTER TABLE rejected_events DROP COLUMN rejected_at")
    with eng.connect() as conn:
        drift = tables.schema_drift(conn)
    eng.dispose()
    assert drift[0] == ("event_features: code expects ('hours_to_breach', 'NUMERIC(12, 2)', True)"
                        ", database has ('hours_to_breach', 'NUMERIC(14, 2)', True)")
    assert "rejected_events: code has 9 columns, database 8" in drift
