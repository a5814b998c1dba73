"""Migration 0006: the id registry kept by statement-level triggers (transition tables) on every
write path, and load-then-attach of new partitions (staged standalone tables, indexes, the
levels foreign key and the registry done set-based, then ATTACH)."""

import hashlib
import threading
import uuid
from datetime import UTC, datetime

import pandas as pd
import psycopg
import pytest
from psycopg import errors

from sr_platform.core import db, event_files, file_transaction, loader, migrate
from sr_platform.core.keys import PARTITIONED_TABLES

from .conftest import insert_event
from .helpers import row, scalar, write_csv
from .test_loader_hardening import ID, admin, assert_registry_consistent, registry

# migration 0009's change-log triggers on every events leaf
CHANGE_TRIGGERS = ("trg_changes_delete", "trg_changes_insert", "trg_changes_truncate",
                   "trg_changes_update")


def new_instrument() -> str:
    """A pair no other test made (the session database keeps its partitions)."""
    return f"N{uuid.uuid4().hex[:7].upper()}"


def index_shapes(url: str, table: str) -> list[str]:
    """The leaf's index definitions without their names (ATTACH would build any missing)."""
    return sorted(d.split(" USING ")[1] + (" UNIQUE" if "UNIQUE" in d else "") for (d,) in
                  _fetch(url, "SELECT pg_get_indexdef(indexrelid) FROM pg_index "
                              "WHERE indrelid = %s::regclass", (table,)))


def _fetch(url: str, query: str, params=()) -> list[tuple]:
    with psycopg.connect(db.libpq_url(url)) as conn:
        return conn.execute(query, params).fetchall()


def triggers(url: str, table: str) -> list[str]:
    return [r[0] for r in _fetch(url, "SELECT tgname::text FROM pg_trigger WHERE tgrelid = "
                                      "%s::regclass AND NOT tgisinternal ORDER BY 1", (table,))]


def test_new_pair_is_staged_indexed_and_attached_like_ensure_partition(clean_db, tmp_path):
    new, made = new_instrument(), new_instrument()
    path = write_csv(tmp_path / "new.csv", [row(h, instrument=new) for h in range(10, 14)]
                     + [row(9, instrument=new, granularity="D")])
    result = loader.load_file(path, clean_db)
    assert (result.loaded, result.rejected) == (5, 0)
    assert result.new_pairs == [(new, "D"), (new, "H1")]
    with admin(clean_db) as conn:
        conn.execute("SELECT ensure_partition(%s, 'H1')", (made,))
    for table in PARTITIONED_TABLES:
        staged, reference = (loader.leaf_name(table, (i, "H1")) for i in (new, made))
        assert scalar(clean_db, "SELECT relispartition FROM pg_class WHERE oid = %s::regclass",
                      (staged,)) is True
        assert index_shapes(clean_db, staged) == index_shapes(clean_db, reference)
        assert triggers(clean_db, staged) == triggers(clean_db, reference)
        bound = scalar(clean_db, "SELECT pg_get_expr(relpartbound, oid) FROM pg_class "
                                 "WHERE oid = %s::regclass", (staged,))
        assert bound == f"FOR VALUES IN ('{new}')"
    leaf = loader.leaf_name("new_resistance_events", (new, "H1"))
    assert triggers(clean_db, leaf) == [*CHANGE_TRIGGERS, "trg_new_resistance_events_updated_at",
                                        "trg_registry_delete", "trg_registry_insert",
                                        "trg_registry_truncate", "trg_registry_update"]
    # the levels' foreign key, validated, into the same pair's events leaf
    levels = loader.leaf_name("support_and_resistance_master", (new, "H1"))
    assert _fetch(clean_db, "SELECT confrelid::regclass::text, convalidated, confdeltype "
                            "FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'",
                  (levels,)) == [(leaf, True, "c")]
    assert scalar(clean_db, "SELECT count(*) FROM support_and_resistance_master "
                            "WHERE instrument = %s", (new,)) == 5
    assert_registry_consistent(clean_db)
    # a second file of the same pair goes into the existing leaves
    more = write_csv(tmp_path / "more.csv", [row(h, instrument=new) for h in range(14, 17)])
    again = loader.load_file(more, clean_db)
    assert (again.loaded, again.new_pairs) == (3, [])
    assert loader.load_file(path, clean_db).duplicates == 5
    assert scalar(clean_db, "SELECT count(*) FROM new_resistance_events "
                            "WHERE instrument = %s", (new,)) == 8
    assert_registry_consistent(clean_db)


def test_pair_slice_stages_only_its_pair(clean_db, tmp_path):
    a, b = new_instrument(), new_instrument()
    path = write_csv(tmp_path / "two.csv", [row(10, instrument=a), row(11, instrument=b)])
    result = loader.load_file(path, clean_db, pair=(a, "H1"))
    assert (result.loaded, result.new_pairs) == (1, [(a, "H1")])
    assert scalar(clean_db, "SELECT to_regclass(%s)::text",
                  (loader.leaf_name("new_resistance_events", (b, "H1")),)) is None


def test_a_failure_before_commit_leaves_no_staged_table(clean_db, tmp_path, monkeypatch):
    new = new_instrument()
    path = write_csv(tmp_path / "new.csv", [row(h, instrument=new) for h in range(10, 13)])
    original = file_transaction.FileTransaction.chunk

    def chunk_then_fail(self, raw, checked):
        original(self, raw, checked)
        raise RuntimeError("killed after the COPY")

    monkeypatch.setattr(file_transaction.FileTransaction, "chunk", chunk_then_fail)
    with pytest.raises(RuntimeError):
        loader.load_file(path, clean_db)
    for table in PARTITIONED_TABLES:
        assert scalar(clean_db, "SELECT to_regclass(%s)::text",
                      (loader.leaf_name(table, (new, "H1")),)) is None
    assert scalar(clean_db, "SELECT count(*) FROM event_id_registry WHERE instrument = %s",
                  (new,)) == 0
    monkeypatch.setattr(file_transaction.FileTransaction, "chunk", original)
    assert loader.load_file(path, clean_db).loaded == 3  # the rerun loads it once
    assert_registry_consistent(clean_db)


def test_attach_refuses_tables_not_staged_by_the_transaction(clean_db):
    with admin(clean_db) as conn:
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1')")
        conn.execute("SET ROLE sr_writer")
        with pytest.raises(errors.ObjectNotInPrerequisiteState, match="no staged partition"):
            conn.execute("SELECT attach_staged_partitions(ARRAY['EUR_USD'], ARRAY['H1'])")
        with pytest.raises(errors.InvalidParameterValue):  # identifiers are validated
            conn.execute("SELECT stage_partitions(ARRAY['x\"; DROP TABLE t; --'], "
                         "ARRAY['H1'])")
        with pytest.raises(errors.InsufficientPrivilege):  # owner-only helper
            conn.execute("SELECT registry_add_triggers('new_resistance_events', NULL)")


def test_ensure_partition_waits_for_a_load_staging_the_same_pair(clean_db):
    new = new_instrument()
    leaf = loader.leaf_name("new_resistance_events", (new, "H1"))
    got: list = []
    with psycopg.connect(db.libpq_url(clean_db)) as load:
        load.execute("SET ROLE sr_writer")
        assert load.execute("SELECT stage_partitions(ARRAY[%s], ARRAY['H1'])",
                            (new,)).fetchone()[0] == [f"{new}/H1"]
        load.execute(f'INSERT INTO "{leaf}" (original_event_id, event_creation_date, '
                     "granularity, instrument, event_price_level, atr_at_event, "
                     "new_resistance_negative_rebound, new_resistance_negative_rebound_in_atr, "
                     "day_of_week, hour_of_day) VALUES (%s, '2026-03-04T13:00Z', 'H1', %s, 1, "
                     "1, -1, -1, 2, 13)", (ID["A"], new))

        def maintenance():
            with admin(clean_db) as conn:
                got.append(conn.execute("SELECT ensure_partition(%s, 'H1')",
                                        (new,)).fetchone()[0])

        other = threading.Thread(target=maintenance)
        other.start()
        other.join(1.0)
        assert other.is_alive() and got == []  # queued on the pair's lock
        load.execute("SELECT attach_staged_partitions(ARRAY[%s], ARRAY['H1'])", (new,))
        load.commit()
        other.join(30)
    assert got == [0]  # it found the leaves the load made
    assert registry(clean_db) == [(ID["A"], new, "H1", datetime(2026, 3, 4, 13, tzinfo=UTC))]


def test_registry_exact_on_every_write_path(clean_db):
    a, b = new_instrument(), new_instrument()
    leaf_a = loader.leaf_name("new_resistance_events", (a, "H1"))
    with admin(clean_db) as conn:
        conn.execute("SELECT ensure_partition(%s, 'H1'), ensure_partition(%s, 'H1'), "
                     "ensure_partition(%s, 'D')", (a, b, a))
        conn.execute("SET ROLE sr_writer")
        # parent, granularity child, leaf; several rows a statement
        insert_event(conn, original_event_id=ID["A"], instrument=a)
        conn.execute("INSERT INTO new_resistance_events_h1 SELECT gen_random_uuid(), "
                     "event_type, event_creation_date + interval '1 hour', granularity, "
                     "instrument, event_price_level, atr_at_event, volume_at_event, "
                     "new_resistance_negative_rebound, new_resistance_negative_rebound_in_atr, "
                     "day_of_week, 14 FROM new_resistance_events WHERE instrument = %s", (a,))
        conn.execute(f'INSERT INTO "{leaf_a}" SELECT gen_random_uuid(), event_type, '
                     "event_creation_date + g * interval '1 day', granularity, instrument, "
                     "event_price_level, atr_at_event, volume_at_event, "
                     "new_resistance_negative_rebound, new_resistance_negative_rebound_in_atr, "
                     "(day_of_week + g) %% 7, hour_of_day FROM new_resistance_events, "
                     "generate_series(1, 5) g WHERE instrument = %s", (a,))
        assert_registry_consistent(clean_db)
        assert scalar(clean_db, "SELECT count(*) FROM event_id_registry") == 12
        # retention's path: per leaf, by ctid
        conn.execute(f'DELETE FROM "{leaf_a}" WHERE ctid = ANY(ARRAY(SELECT ctid FROM '
                     f'"{leaf_a}" ORDER BY event_creation_date DESC LIMIT 3))')
        assert_registry_consistent(clean_db)
        # key updates: the id, the time, a move to another leaf and another granularity
        conn.execute("UPDATE new_resistance_events SET original_event_id = %s "
                     "WHERE original_event_id = %s", (ID["B"], ID["A"]))
        conn.execute(f'UPDATE "{leaf_a}" SET event_creation_date = event_creation_date '
                     "+ interval '1 minute' WHERE original_event_id = %s", (ID["B"],))
        conn.execute("UPDATE new_resistance_events SET instrument = %s "
                     "WHERE original_event_id = %s", (b, ID["B"]))
        conn.execute("UPDATE new_resistance_events SET granularity = 'D' WHERE ctid IN "
                     "(SELECT ctid FROM new_resistance_events_h1 WHERE instrument = %s "
                     "LIMIT 2)", (a,))
        # two rows swapping ids in one statement
        two = [r[0] for r in conn.execute(
            "SELECT original_event_id FROM new_resistance_events WHERE instrument = %s "
            "AND granularity = 'D' ORDER BY 1", (a,))]
        conn.execute("UPDATE new_resistance_events SET original_event_id = CASE "
                     "original_event_id WHEN %s THEN %s::uuid ELSE %s::uuid END "
                     "WHERE original_event_id IN (%s, %s)", (two[0], two[1], two[0], *two))
        # a non-key update touches nothing
        conn.execute("UPDATE new_resistance_events SET volume_at_event = 1")
        assert_registry_consistent(clean_db)
        assert (ID["B"], b) in [(r[0], r[1]) for r in registry(clean_db)]
        # conflicts: with a stored id, and one statement writing an id twice
        used = (f"original_event_id {ID['B']} is already used by {b} H1 "
                "2026-03-04T13:01:00Z")
        with pytest.raises(errors.UniqueViolation) as exc:
            conn.execute(f'INSERT INTO "{leaf_a}" SELECT %s, event_type, event_creation_date, '
                         "granularity, %s, event_price_level, atr_at_event, volume_at_event, "
                         "new_resistance_negative_rebound, "
                         "new_resistance_negative_rebound_in_atr, day_of_week, hour_of_day "
                         "FROM new_resistance_events WHERE original_event_id = %s",
                         (ID["B"], a, ID["B"]))
        assert str(exc.value).splitlines()[0] == used
        with pytest.raises(errors.UniqueViolation) as exc:
            conn.execute(
                f'INSERT INTO "{leaf_a}" SELECT %s, event_type, event_creation_date + '
                "g * interval '1 hour', granularity, %s, event_price_level, atr_at_event, "
                "volume_at_event, new_resistance_negative_rebound, "
                "new_resistance_negative_rebound_in_atr, day_of_week, hour_of_day + g "
                "FROM new_resistance_events, generate_series(1, 2) g "
                "WHERE original_event_id = %s", (ID["C"], a, ID["B"]))
        assert str(exc.value).splitlines()[0] == (
            f"original_event_id {ID['C']} is already used by {a} H1 2026-03-04T14:01:00Z")
        assert_registry_consistent(clean_db)
    with admin(clean_db) as conn:  # TRUNCATE of a leaf, then of a granularity child
        conn.execute(f'TRUNCATE "{leaf_a}", "{loader.leaf_name(PARTITIONED_TABLES[1], (a, "H1"))}"')
        assert_registry_consistent(clean_db)
        assert registry(clean_db) != []
        conn.execute("TRUNCATE new_resistance_events_h1, support_and_resistance_master_h1")
        assert_registry_consistent(clean_db)


def test_0006_round_trip_keeps_the_registry_exact(server_url, make_db, tmp_path):
    url = make_db(server_url, migrated=False)
    migrate.upgrade(url, "0005")
    with admin(url) as conn:
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1')")
        insert_event(conn, original_event_id=ID["A"])
    migrate.upgrade(url)
    assert migrate.current(url) == migrate.head()
    leaf = "new_resistance_events_h1_eur_usd"
    assert triggers(url, leaf) == [*CHANGE_TRIGGERS, "trg_new_resistance_events_updated_at",
                                   "trg_registry_delete", "trg_registry_insert",
                                   "trg_registry_truncate", "trg_registry_update"]
    path = write_csv(tmp_path / "f.csv", [row(h, instrument="GBP_USD") for h in range(3)])
    assert loader.load_file(path, url).new_pairs == [("GBP_USD", "H1")]
    assert_registry_consistent(url)
    migrate.downgrade(url, "0005")
    assert triggers(url, leaf) == ["trg_events_registry_delete", "trg_events_registry_insert",
                                   "trg_events_registry_update",
                                   "trg_new_resistance_events_updated_at"]
    assert triggers(url, "new_resistance_events_h1_gbp_usd") == triggers(url, leaf)
    with admin(url) as conn:  # 0005's row triggers guard the id again
        insert_event(conn, original_event_id=ID["B"], instrument="GBP_USD")
        with pytest.raises(errors.UniqueViolation, match=ID["A"]):
            insert_event(conn, original_event_id=ID["A"], instrument="GBP_USD")
    assert loader.load_file(write_csv(tmp_path / "g.csv", [row(5, instrument="AUD_USD")]),
                            url).loaded == 1  # the loader still works at 0005
    assert_registry_consistent(url)
    migrate.upgrade(url)
    assert triggers(url, "new_resistance_events_h1_aud_usd") == triggers(url, leaf)
    with admin(url) as conn:
        insert_event(conn, original_event_id=ID["C"], instrument="AUD_USD", hour_of_day=14,
                     event_creation_date=datetime(2026, 3, 4, 14, tzinfo=UTC))
    assert_registry_consistent(url)
    assert len(registry(url)) == 7


def test_new_partitions_skip_the_id_checks_then_recheck_on_a_conflict(clean_db, tmp_path,
                                                                       monkeypatch):
    """A new pair's rows are loaded without the per-row id checks; an id they repeat (in
    another chunk) or share with a stored event fails the attach, and the file is loaded again
    with every row checked: the same rows loaded and quarantined, by the same rules, as a load
    that checked them."""
    monkeypatch.setattr(event_files, "CHUNK_ROWS", 2)  # the repeats fall in other chunks
    new, old = new_instrument(), new_instrument()
    with admin(clean_db) as conn:
        conn.execute("SELECT ensure_partition(%s, 'H1')", (old,))
        insert_event(conn, original_event_id=ID["A"], instrument=old,
                     event_creation_date=datetime(2026, 3, 4, 5, tzinfo=UTC), hour_of_day=5)
    path = write_csv(tmp_path / "mixed.csv", [
        row(10, instrument=new, original_event_id=ID["B"]),                    # line 2
        row(9, instrument=new, granularity="D", original_event_id=ID["C"]),    # 3
        row(12, instrument=new, original_event_id=ID["A"]),                    # 4: stored
        row(11, instrument=new, original_event_id=ID["B"]),                    # 5: repeats 2
        row(13, instrument=old, original_event_id=ID["C"]),                    # 6: repeats 3
        row(14, instrument=new, original_event_id=ID["D"])])                   # 7
    shown: list[int] = []
    result = loader.load_file(path, clean_db, progress=shown.append)
    assert (result.loaded, result.rejected, result.duplicates) == (3, 3, 0)
    assert result.new_pairs == [(new, "D"), (new, "H1")]
    assert fetch_lines(clean_db, path) == [
        (4, [f"original_event_id: already used by {old} H1 2026-03-04T05:00:00Z"]),
        (5, [f"original_event_id: duplicate of line 2 ({ID['B']})"]),
        (6, [f"original_event_id: duplicate of line 3 ({ID['C']})"])]
    assert sorted(_fetch(clean_db, "SELECT original_event_id::text FROM new_resistance_events "
                                   "WHERE instrument IN (%s, %s)", (new, old))) == [
        (ID["A"],), (ID["B"],), (ID["C"],), (ID["D"],)]
    assert scalar(clean_db, "SELECT count(*) FROM load_log WHERE source = %s",
                  (str(path.resolve()),)) == 1
    # the unchecked attempt COPYed all 6 rows and showed them; the recheck showed none again
    assert sum(shown) == 6
    assert_registry_consistent(clean_db)


def fetch_lines(url: str, path) -> list[tuple]:
    return [(line, list(reasons)) for line, reasons in _fetch(
        url, "SELECT line_number, reasons FROM rejected_events WHERE source = %s "
             "ORDER BY line_number", (str(path.resolve()),))]


def test_level_ids_derive_from_the_event_id_on_both_load_paths(clean_db, tmp_path):
    """Migration 0007: every level row the loader writes, into a staged leaf (server side) or
    an existing one (COPY), has id = level_id(event id), which Python computes identically."""
    new = new_instrument()
    first = write_csv(tmp_path / "a.csv", [row(h, instrument=new) for h in range(10, 13)])
    again = write_csv(tmp_path / "b.csv", [row(h, instrument=new) for h in range(13, 15)])
    assert loader.load_file(first, clean_db).new_pairs == [(new, "H1")]
    assert loader.load_file(again, clean_db).new_pairs == []
    pairs = _fetch(clean_db, "SELECT original_event_id::text, id::text, "
                             "level_id(original_event_id)::text "
                             "FROM support_and_resistance_master WHERE instrument = %s "
                             "ORDER BY event_creation_date", (new,))
    assert len(pairs) == 5
    assert [i for _, i, _ in pairs] == [sql_id for _, _, sql_id in pairs]
    expected = [str(uuid.UUID(bytes=hashlib.md5(loader.LEVEL_ID_NAMESPACE.bytes
                                                + uuid.UUID(e).bytes).digest()))
                for e, _, _ in pairs]
    assert [i for _, i, _ in pairs] == expected
    assert [str(uuid.UUID(h)) for h in loader.level_ids(pd.Series([e for e, _, _ in pairs]))] \
        == expected
    # a fixed value, so the namespace and the byte order can never drift
    assert scalar(clean_db, "SELECT level_id('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')::text") \
        == "43a6868e-c0e3-b8d9-f344-58452194dbd8"


def test_a_new_pairs_slice_is_checked_against_the_files_other_rows(clean_db, tmp_path,
                                                                   monkeypatch):
    """A pair's slice (Dagster's partition runs) writes only its rows, so the attach cannot see
    an id its row repeats from another slice in an earlier chunk: a slice is always checked."""
    monkeypatch.setattr(event_files, "CHUNK_ROWS", 2)
    new, other = new_instrument(), new_instrument()
    path = write_csv(tmp_path / "slices.csv", [
        row(10, instrument=other, original_event_id=ID["A"]),                 # line 2
        row(11, instrument=new, original_event_id=ID["B"]),                   # 3
        row(12, instrument=other, original_event_id=ID["C"]),                 # 4
        row(13, instrument=new, original_event_id=ID["A"])])                  # 5: repeats 2
    result = loader.load_file(path, clean_db, pair=(new, "H1"))
    assert (result.loaded, result.rejected, result.new_pairs) == (1, 1, [(new, "H1")])
    assert result.ids == {ID["B"]}
    assert fetch_lines(clean_db, path) == [
        (5, [f"original_event_id: duplicate of line 2 ({ID['A']})"])]
    assert_registry_consistent(clean_db)
