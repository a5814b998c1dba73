"""The schema against the seed (US-004), column by column, on PostgreSQL 18 and 15, and the
constraints, defaults, trigger and partitioning behaving as documented."""

import psycopg
import pytest
from psycopg import errors

from sr_platform.core import db

from .conftest import insert_event

TS = "timestamp with time zone"
VC = "character varying"
NOW = "CURRENT_TIMESTAMP"

# (column, data_type, char length, numeric precision, numeric scale, nullable, default)
SEED_EVENTS = [
    ("original_event_id", "uuid", None, None, None, "NO", "gen_random_uuid()"),
    ("event_type", VC, 20, None, None, "NO", "'new_resistance'::character varying"),
    ("event_creation_date", TS, None, None, None, "NO", None),
    ("granularity", VC, 2, None, None, "NO", None),
    ("instrument", VC, 10, None, None, "NO", None),
    ("event_price_level", "numeric", None, 18, 6, "NO", None),
    ("atr_at_event", "numeric", None, 18, 6, "NO", None),
    ("volume_at_event", "numeric", None, 18, 2, "YES", None),
    ("new_resistance_negative_rebound", "numeric", None, 18, 6, "NO", None),
    ("new_resistance_negative_rebound_in_atr", "numeric", None, 18, 6, "NO", None),
    ("day_of_week", "smallint", None, 16, 0, "NO", None),
    ("hour_of_day", "smallint", None, 16, 0, "NO", None),
    ("created_at", TS, None, None, None, "YES", NOW),
    ("updated_at", TS, None, None, None, "YES", NOW),
]
SEED_LEVELS = [
    ("id", "uuid", None, None, None, "NO", "gen_random_uuid()"),
    ("original_event_id", "uuid", None, None, None, "NO", None),
    ("event_type", VC, 20, None, None, "NO", None),
    ("last_test_date", TS, None, None, None, "YES", None),
    ("test_count", "integer", None, 32, 0, "YES", "0"),
    ("breach_date", TS, None, None, None, "YES", None),
    ("status", VC, 20, None, None, "YES", "'active'::character varying"),
    ("created_at", TS, None, None, None, "YES", NOW),
    ("updated_at", TS, None, None, None, "YES", NOW),
    # added so the FK can reference the partitioned events' composite key (docs/schema.md)
    ("instrument", VC, 10, None, None, "NO", None),
    ("granularity", VC, 2, None, None, "NO", None),
    ("event_creation_date", TS, None, None, None, "NO", None),
]


def _columns(conn, table):
    return [tuple(r) for r in conn.execute(
        """SELECT column_name, data_type, character_maximum_length, numeric_precision,
                  numeric_scale, is_nullable, column_default
           FROM information_schema.columns
           WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position""",
        (table,))]


@pytest.mark.parametrize("table,expected", [("new_resistance_events", SEED_EVENTS),
                                            ("support_and_resistance_master", SEED_LEVELS)])
def test_columns_match_the_seed(any_server_url, make_db, table, expected):
    url = make_db(any_server_url)
    with psycopg.connect(db.libpq_url(url)) as conn:
        assert _columns(conn, table) == expected


def test_constraints_and_indexes_match_the_seed(any_server_url, make_db):
    url = make_db(any_server_url)
    with psycopg.connect(db.libpq_url(url)) as conn:
        checks = dict(conn.execute(
            """SELECT conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
               FROM pg_constraint WHERE contype = 'c' AND conrelid IN
               ('new_resistance_events'::regclass, 'support_and_resistance_master'::regclass)
            """).fetchall())
        indexes = dict(conn.execute(
            """SELECT indexname, indexdef FROM pg_indexes
               WHERE tablename = 'new_resistance_events'""").fetchall())
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1')")
        fk = conn.execute(
            """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
               FROM pg_constraint WHERE contype = 'f'""").fetchall()
    assert sorted(checks) == [
        "new_resistance_events.new_resistance_events_atr_at_event_check",
        "new_resistance_events.new_resistance_events_day_of_week_check",
        "new_resistance_events.new_resistance_events_event_price_level_check",
        "new_resistance_events.new_resistance_events_granularity_check",
        "new_resistance_events.new_resistance_events_hour_of_day_check",
        "new_resistance_events.new_resistance_events_new_resistance_negative_rebound_check",
        "support_and_resistance_master.support_and_resistance_master_status_check",
    ]
    assert "(day_of_week >= 0) AND (day_of_week <= 6)" in checks[
        "new_resistance_events.new_resistance_events_day_of_week_check"]
    assert {k: v.split(" USING ")[1] for k, v in indexes.items()} == {
        "new_resistance_events_pkey":
            "btree (instrument, granularity, event_creation_date, original_event_id)",
        "idx_events_instrument_granularity": "btree (instrument, granularity)",
        "idx_events_creation_date": "btree (event_creation_date DESC)",
        "idx_events_price_level": "btree (event_price_level)",
    }
    # the FK is per leaf: levels of a pair reference the events leaf of that pair
    assert fk == [(
        "support_and_resistance_master_h1_eur_usd",
        "support_and_resistance_master_h1_eur_usd_event_fkey",
        "FOREIGN KEY (instrument, granularity, event_creation_date, original_event_id) "
        "REFERENCES new_resistance_events_h1_eur_usd(instrument, granularity, "
        "event_creation_date, original_event_id) ON DELETE CASCADE")]


@pytest.fixture
def writer(clean_db):
    with psycopg.connect(db.libpq_url(clean_db), autocommit=True) as conn:
        conn.execute("SET ROLE sr_writer")
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1')")
        yield conn


@pytest.mark.parametrize("column,value", [
    ("granularity", "M5"),
    ("event_price_level", 0),
    ("event_price_level", -1),
    ("atr_at_event", 0),
    ("new_resistance_negative_rebound", "0.000001"),
    ("day_of_week", 7),
    ("day_of_week", -1),
    ("hour_of_day", 24),
])
def test_each_check_is_enforced(writer, column, value):
    with pytest.raises(errors.CheckViolation) as exc:
        insert_event(writer, **{column: value})
    assert exc.value.sqlstate == "23514"


def test_status_check_is_enforced(writer):
    eid, _ = insert_event(writer)
    with pytest.raises(errors.CheckViolation) as exc:
        writer.execute(
            """INSERT INTO support_and_resistance_master
               (original_event_id, event_type, status, instrument, granularity,
                event_creation_date)
               SELECT original_event_id, event_type, 'gone', instrument, granularity,
                      event_creation_date FROM new_resistance_events""")
    assert exc.value.sqlstate == "23514"
    assert eid is not None


@pytest.mark.parametrize("column", [
    "event_creation_date", "instrument", "event_price_level", "atr_at_event",
    "new_resistance_negative_rebound", "new_resistance_negative_rebound_in_atr", "day_of_week",
    "hour_of_day"])
def test_each_not_null_is_enforced(writer, column):
    with pytest.raises(errors.NotNullViolation) as exc:
        insert_event(writer, **{column: None})
    assert exc.value.sqlstate == "23502"


def test_level_needs_its_event(writer):
    with pytest.raises(errors.ForeignKeyViolation) as exc:
        writer.execute(
            """INSERT INTO support_and_resistance_master
               (original_event_id, event_type, instrument, granularity, event_creation_date)
               VALUES (gen_random_uuid(), 'new_resistance', 'EUR_USD', 'H1', now())""")
    assert exc.value.sqlstate == "23503"


def test_defaults_and_cascade(writer):
    eid, leaf = insert_event(writer)
    row = writer.execute(
        """SELECT event_type, created_at IS NOT NULL, updated_at = created_at
           FROM new_resistance_events WHERE original_event_id = %s""", (eid,)).fetchone()
    assert row == ("new_resistance", True, True)
    assert leaf == "new_resistance_events_h1_eur_usd"
    level = writer.execute(
        """INSERT INTO support_and_resistance_master
           (original_event_id, event_type, instrument, granularity, event_creation_date)
           SELECT original_event_id, event_type, instrument, granularity, event_creation_date
           FROM new_resistance_events RETURNING id, status, test_count""").fetchone()
    assert level[0].version == 4  # gen_random_uuid()
    assert level[1:] == ("active", 0)
    # deleting the event deletes its level (retention never orphans or fails)
    writer.execute("DELETE FROM new_resistance_events WHERE original_event_id = %s", (eid,))
    assert writer.execute("SELECT count(*) FROM support_and_resistance_master").fetchone() == (0,)


def test_updated_at_trigger(writer):
    eid, _ = insert_event(writer)
    writer.execute("SELECT pg_sleep(0.01)")
    before, after, created = writer.execute(
        """WITH u AS (UPDATE new_resistance_events SET volume_at_event = 1
                      WHERE original_event_id = %s RETURNING updated_at, created_at)
           SELECT (SELECT updated_at FROM new_resistance_events
                   WHERE original_event_id = %s), u.updated_at, u.created_at FROM u""",
        (eid, eid)).fetchone()
    assert after > before
    assert created == before
    writer.execute(
        """INSERT INTO rejected_events (source, source_sha256, line_number, raw_record, reasons)
           VALUES ('f.csv', repeat('a', 64), 2, '{}', ARRAY['x'])""")
    writer.execute("SELECT pg_sleep(0.01)")
    changed = writer.execute(
        """UPDATE rejected_events SET reasons = ARRAY['y']
           RETURNING updated_at > created_at""").fetchone()
    assert changed == (True,)


def test_rows_land_in_their_leaf_and_queries_prune(writer):
    writer.execute("SELECT ensure_partition('USD_JPY', 'D')")
    _, leaf1 = insert_event(writer)
    _, leaf2 = insert_event(writer, instrument="USD_JPY", granularity="D",
                            event_price_level=150)
    assert (leaf1, leaf2) == ("new_resistance_events_h1_eur_usd",
                              "new_resistance_events_d_usd_jpy")
    plan = "\n".join(r[0] for r in writer.execute(
        """EXPLAIN SELECT * FROM new_resistance_events
           WHERE instrument = 'USD_JPY' AND granularity = 'D'
           ORDER BY event_creation_date DESC LIMIT 1000"""))
    assert "new_resistance_events_d_usd_jpy" in plan
    assert "eur_usd" not in plan


def test_no_catch_all_partition(writer):
    with pytest.raises(errors.CheckViolation) as exc:
        insert_event(writer, instrument="NO_PART")  # no partition made for it
    assert "no partition" in str(exc.value)
    defaults = writer.execute(
        "SELECT count(*) FROM pg_partitioned_table WHERE partdefid <> 0").fetchone()
    assert defaults == (0,)
