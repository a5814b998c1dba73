"""Issue 8 (hardening) against a real PostgreSQL: loads stream in chunks with exact line
numbers and file-wide rules across chunk boundaries; .csv.gz files; one id per event (the
event_id_registry of migration 0005, kept by triggers); faults: the database stopped mid-load,
unreadable files in a landing folder."""

import gzip
import hashlib
import os
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from sr_platform.core import copy_encoding, db, event_files, landing, loader, migrate, settings
from sr_platform.core.event_files import REQUIRED, EventFileError
from sr_platform.core.keys import INSTRUMENT_RE
from sr_platform.core.localpg import LocalCluster

from .conftest import insert_event
from .helpers import (
    assert_loaded_once,
    assert_loaded_once_and_derived,
    counts,
    csv_text,
    events_snapshot,
    fetch,
    levels_snapshot,
    load_log_rows,
    rejections,
    row,
    run_cli,
    scalar,
    truncate,
    write_csv,
)

ID = {k: f"{i:08x}-0d5e-4c53-9a57-1e2c3d4b5a69" for i, k in enumerate("ABCDEFGH", start=1)}
ID_USED_RULE = "original_event_id unique"


def uid(key: str) -> str:
    return ID[key]


def registry(url: str) -> list[tuple]:
    return fetch(url, "SELECT original_event_id::text, instrument, granularity, "
                      "event_creation_date FROM event_id_registry ORDER BY 1")


def events_keys(url: str) -> list[tuple]:
    return fetch(url, "SELECT original_event_id::text, instrument, granularity, "
                      "event_creation_date FROM new_resistance_events ORDER BY 1")


def assert_registry_consistent(url: str) -> None:
    assert registry(url) == events_keys(url)


@pytest.fixture
def chunk_sizes(monkeypatch) -> list[tuple[int, int]]:
    """(records, malformed records) of each chunk the loader validates."""
    sizes: list[tuple[int, int]] = []
    real = loader.validate

    def spy(raw, assume_tz=None):
        sizes.append((len(raw.frame), len(raw.malformed)))
        return real(raw, assume_tz=assume_tz)

    monkeypatch.setattr(loader, "validate", spy)
    return sizes


# ---------------------------------------------------------------------------------------------
# chunks

CHUNKED_COLUMNS = [*REQUIRED, "original_event_id"]


def chunked_file(path: Path) -> Path:
    """Bad rows, duplicates and a quoted newline on both sides of 3-line chunk boundaries."""
    def line(hour: int, key: str, **o: str) -> str:
        r = row(hour, original_event_id=uid(key), **o)
        return ",".join(r[c] for c in CHUNKED_COLUMNS)

    lines = [
        ",".join(CHUNKED_COLUMNS),                       # 1
        line(10, "A"),                                   # 2
        line(11, "B"),                                   # 3
        line(12, "E", event_price_level="0"),            # 4 bad
        line(13, "A"),                                   # 5 duplicate of 2, next chunk
        line(14, "C"),                                   # 6
        "",                                              # 7 blank
        line(15, "D"),                                   # 8
        line(16, "C"),                                   # 9 duplicate of 6
        line(16, "F") + ",surplus",                      # 10 ragged
        line(17, "F").replace(",EUR_USD,", ',"EUR\nUSD",'),  # 11-12: a quoted newline
        line(18, "G"),                                   # 13
        line(19, "D"),                                   # 14 duplicate of 8
        line(20, "H"),                                   # 15
        line(21, "B"),                                   # 16 duplicate of 3
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


CHUNKED_REJECTIONS = [
    (4, ["event_price_level: 0 must be > 0"]),
    (5, [f"original_event_id: duplicate of line 2 ({ID['A']})"]),
    (9, [f"original_event_id: duplicate of line 6 ({ID['C']})"]),
    (10, ["csv: expected 8 fields, found 9"]),
    (11, [f"instrument: {'EUR' + chr(10) + 'USD'!r} does not match {INSTRUMENT_RE}"]),
    (14, [f"original_event_id: duplicate of line 8 ({ID['D']})"]),
    (16, [f"original_event_id: duplicate of line 3 ({ID['B']})"]),
]


def test_chunk_boundaries_keep_lines_duplicates_and_quarantine_exact(clean_db, tmp_path,
                                                                     monkeypatch, chunk_sizes):
    path = chunked_file(tmp_path / "chunked.csv")
    assert path.read_text().count("\n") == 16
    monkeypatch.setattr(event_files, "CHUNK_ROWS", 3)
    # the pair exists (as after any earlier test): rows are checked chunk by chunk in one
    # pass (a new pair's repeats are found at the attach, then the file is read once more)
    with admin(clean_db) as conn:
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1')")

    result = loader.load_file(path, clean_db)
    # quote-free 3-line blocks through pandas (the blank line is no record, the ragged line is
    # read exactly), then the csv module from the first quote on, 3 records a chunk
    assert chunk_sizes == [(3, 0), (2, 0), (2, 1), (3, 0), (2, 0)]
    assert (result.rows_read, result.loaded, result.duplicates, result.rejected) == (13, 6, 0, 7)
    assert result.reasons == Counter({"original_event_id unique in file": 4,
                                      "event_price_level > 0": 1, "csv field count": 1,
                                      "instrument format": 1})
    assert rejections(clean_db) == CHUNKED_REJECTIONS
    assert fetch(clean_db, "SELECT original_event_id::text, hour_of_day FROM "
                           "new_resistance_events ORDER BY hour_of_day") == [
        (ID["A"], 10), (ID["B"], 11), (ID["C"], 14), (ID["D"], 15), (ID["G"], 18), (ID["H"], 20)]
    assert_loaded_once(clean_db, 6)
    assert load_log_rows(clean_db, path) == [(None, None, 13, 6, 0, 7)]
    chunked = (events_snapshot(clean_db), levels_snapshot(clean_db), rejections(clean_db))

    again = loader.load_file(path, clean_db)  # a reload, chunk by chunk: all duplicates
    assert (again.rows_read, again.loaded, again.duplicates, again.rejected) == (13, 0, 6, 7)
    assert rejections(clean_db) == CHUNKED_REJECTIONS

    truncate(clean_db)  # the same file in one chunk stores exactly the same
    monkeypatch.setattr(event_files, "CHUNK_ROWS", 1_000)
    whole = loader.load_file(path, clean_db)
    assert (whole.rows_read, whole.loaded, whole.rejected) == (13, 6, 7)
    assert (events_snapshot(clean_db), levels_snapshot(clean_db),
            rejections(clean_db)) == chunked


def test_pair_slice_in_chunks_counts_only_its_rows(clean_db, tmp_path, monkeypatch):
    monkeypatch.setattr(event_files, "CHUNK_ROWS", 2)
    path = write_csv(tmp_path / "mixed.csv", [
        row(10, original_event_id=uid("A")),
        row(11, instrument="GBP_USD", original_event_id=uid("B")),
        row(12, original_event_id=uid("C")),
        row(13, instrument="GBP_USD", original_event_id=uid("A")),  # duplicate of line 2
        row(14, instrument="GBP_USD", event_price_level="0", original_event_id=uid("D")),
    ])
    gbp = loader.load_file(path, clean_db, pair=("GBP_USD", "H1"))
    assert (gbp.rows_read, gbp.loaded, gbp.duplicates, gbp.rejected) == (3, 1, 0, 2)
    assert gbp.ids == {ID["B"]}
    assert rejections(clean_db) == [
        (5, [f"original_event_id: duplicate of line 2 ({ID['A']})"]),
        (6, ["event_price_level: 0 must be > 0"])]
    eur = loader.load_file(path, clean_db, pair=("EUR_USD", "H1"))
    assert (eur.rows_read, eur.loaded, eur.duplicates, eur.rejected) == (2, 2, 0, 0)
    assert eur.ids == {ID["A"], ID["C"]}
    assert_loaded_once(clean_db, 3)
    assert_registry_consistent(clean_db)


# ---------------------------------------------------------------------------------------------
# .csv.gz


def test_csv_gz_is_accepted_wherever_csv_is(clean_db, tmp_path, monkeypatch, chunk_sizes):
    folder = tmp_path / "landing"
    folder.mkdir()
    text = csv_text([row(10), row(11, granularity="M5"), row(12, instrument="GBP_USD"),
                     row(13)])
    gz = folder / "events.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    (folder / "notes.txt.gz").write_bytes(gzip.compress(b"not an event file"))

    assert loader.find_event_files([folder]) == [gz]
    assert landing.event_files(folder) == [gz]
    assert loader.file_pairs(gz) == {("EUR_USD", "H1"), ("GBP_USD", "H1")}
    scan = landing.scan(folder, None)
    assert (list(scan.new_files), scan.pairs_by_file, scan.refused) == (
        [str(gz)], {str(gz): {("EUR_USD", "H1"), ("GBP_USD", "H1")}}, {})

    monkeypatch.setattr(event_files, "CHUNK_ROWS", 2)  # streamed: never more than a chunk at once
    result = loader.load_file(gz, clean_db)
    assert chunk_sizes == [(2, 0), (2, 0)]
    assert (result.rows_read, result.loaded, result.rejected) == (4, 3, 1)
    assert fetch(clean_db, "SELECT source_sha256, line_number, reasons FROM rejected_events") == [
        (hashlib.sha256(gz.read_bytes()).hexdigest(), 3,
         ["granularity: 'M5' is not one of W, D, H4, H1"])]
    assert_loaded_once(clean_db, 3)

    proc = run_cli(clean_db, "load", str(folder))  # the CLI finds it in a folder too
    assert proc.returncode == 2, proc.stderr
    assert "events.csv.gz" in proc.stdout
    assert_loaded_once_and_derived(clean_db, 3)  # the CLI refreshes the pairs it read


def test_corrupt_csv_gz_is_not_an_event_file(clean_db, tmp_path):
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(gzip.compress(csv_text([row(10)] * 50).encode())[:60])
    with pytest.raises(EventFileError) as exc:
        loader.load_file(path, clean_db)
    assert str(exc.value) == f"{path}: not an event file: unreadable gzip (EOFError)"
    assert counts(clean_db) == {"new_resistance_events": 0, "support_and_resistance_master": 0,
                                "rejected_events": 0}


# ---------------------------------------------------------------------------------------------
# one id per event


def admin(url: str) -> psycopg.Connection:
    return psycopg.connect(db.libpq_url(url), autocommit=True)


def test_direct_insert_of_a_reused_id_fails_naming_it(clean_db):
    x = ID["A"]
    with admin(clean_db) as conn:
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1'), "
                     "ensure_partition('GBP_USD', 'H1')")
        insert_event(conn, original_event_id=x)
        used = f"original_event_id {x} is already used by EUR_USD H1 2026-03-04T13:00:00Z"
        for overrides in ({"instrument": "GBP_USD"},
                          {"event_creation_date": datetime(2026, 3, 4, 14, tzinfo=UTC),
                           "hour_of_day": 14}):
            with pytest.raises(errors.UniqueViolation) as exc:
                insert_event(conn, original_event_id=x, **overrides)
            assert str(exc.value).splitlines()[0] == used
        with pytest.raises(errors.UniqueViolation) as exc:  # straight into a leaf as well
            conn.execute("INSERT INTO new_resistance_events_h1_gbp_usd SELECT "
                         "original_event_id, event_type, event_creation_date, granularity, "
                         "'GBP_USD', event_price_level, atr_at_event, volume_at_event, "
                         "new_resistance_negative_rebound, "
                         "new_resistance_negative_rebound_in_atr, day_of_week, hour_of_day "
                         "FROM new_resistance_events_h1_eur_usd")
        assert str(exc.value).splitlines()[0] == used
        with pytest.raises(errors.InsufficientPrivilege):  # only the triggers write it
            conn.execute("SET ROLE sr_writer")
            conn.execute("DELETE FROM event_id_registry")
    assert registry(clean_db) == [(x, "EUR_USD", "H1", datetime(2026, 3, 4, 13, tzinfo=UTC))]


def test_registry_follows_deletes_updates_and_truncate(clean_db, tmp_path):
    path = write_csv(tmp_path / "three.csv", [
        row(10, original_event_id=uid("A")), row(11, original_event_id=uid("B")),
        row(12, original_event_id=uid("C"))])
    assert loader.load_file(path, clean_db).loaded == 3
    assert_registry_consistent(clean_db)
    with admin(clean_db) as conn:
        conn.execute("SELECT ensure_partition('GBP_USD', 'H1')")
        conn.execute("SET ROLE sr_writer")
        # retention's path: delete events (their levels go by ON DELETE CASCADE)
        conn.execute("DELETE FROM new_resistance_events WHERE hour_of_day = 10")
        assert [r[0] for r in registry(clean_db)] == [ID["B"], ID["C"]]
        insert_event(conn, original_event_id=ID["A"], instrument="GBP_USD")  # the id is free
        conn.execute("DELETE FROM support_and_resistance_master")  # a level pins its event key
        conn.execute("UPDATE new_resistance_events SET original_event_id = %s "
                     "WHERE original_event_id = %s", (ID["D"], ID["B"]))
        conn.execute("UPDATE new_resistance_events SET event_creation_date = "
                     "event_creation_date + interval '1 day' WHERE original_event_id = %s",
                     (ID["C"],))
        # a row moving to another leaf (DELETE + INSERT underneath)
        conn.execute("UPDATE new_resistance_events SET instrument = 'GBP_USD' "
                     "WHERE original_event_id = %s", (ID["D"],))
        assert_registry_consistent(clean_db)
        assert sorted((r[0], r[1]) for r in registry(clean_db)) == [
            (ID["A"], "GBP_USD"), (ID["C"], "EUR_USD"), (ID["D"], "GBP_USD")]
        with pytest.raises(errors.UniqueViolation):
            conn.execute("UPDATE new_resistance_events SET original_event_id = %s "
                         "WHERE original_event_id = %s", (ID["A"], ID["C"]))
    assert_registry_consistent(clean_db)
    truncate(clean_db)  # conftest's clean_db statement
    assert registry(clean_db) == []


def test_loader_quarantines_an_id_used_by_another_pair_or_time(clean_db, tmp_path):
    x = ID["A"]
    first = write_csv(tmp_path / "first.csv", [row(13, original_event_id=x)])
    assert loader.load_file(first, clean_db).loaded == 1
    other = write_csv(tmp_path / "other.csv", [
        row(13, instrument="GBP_USD", original_event_id=x),  # line 2: another pair
        row(14, original_event_id=ID["B"]),
        row(15, original_event_id=x.upper()),  # line 4: the same id at another time (a
    ])                                           # duplicate of line 2 within the file)
    later = write_csv(tmp_path / "later.csv", [row(15, original_event_id=x)])

    result = loader.load_file(other, clean_db)
    assert (result.rows_read, result.loaded, result.duplicates, result.rejected) == (3, 1, 0, 2)
    assert result.reasons == Counter({ID_USED_RULE: 1, "original_event_id unique in file": 1})
    used = "original_event_id: already used by EUR_USD H1 2026-03-04T13:00:00Z"
    assert rejections(clean_db) == [
        (2, [used]), (4, [f"original_event_id: duplicate of line 2 ({x})"])]
    assert load_log_rows(clean_db, other) == [(None, None, 3, 1, 0, 2)]

    result = loader.load_file(later, clean_db, pair=("EUR_USD", "H1"))
    assert (result.rows_read, result.loaded, result.rejected, result.ids) == (1, 0, 1, set())
    assert fetch(clean_db, "SELECT reasons FROM rejected_events WHERE source = %s",
                 (str(later.resolve()),)) == [([used],)]
    again = loader.load_file(first, clean_db)  # same id, same key: a duplicate, as before
    assert (again.loaded, again.duplicates, again.rejected) == (0, 1, 0)
    assert_loaded_once(clean_db, 2)
    assert_registry_consistent(clean_db)


def test_migration_0005_backfills_and_refuses_stored_duplicates(server_url, make_db):
    url = make_db(server_url, migrated=False)
    migrate.upgrade(url, "0004")
    with admin(url) as conn:
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1'), "
                     "ensure_partition('GBP_USD', 'H1')")
        insert_event(conn, original_event_id=ID["A"])
        insert_event(conn, original_event_id=ID["B"], instrument="GBP_USD")
    migrate.upgrade(url, "0005")
    assert migrate.current(url) == "0005"
    assert registry(url) == events_keys(url) != []
    migrate.downgrade(url, "-1")
    assert scalar(url, "SELECT to_regclass('event_id_registry')") is None
    assert len(events_keys(url)) == 2
    with admin(url) as conn:  # an id stored twice (possible before 0005)
        insert_event(conn, original_event_id=ID["A"], instrument="GBP_USD")
    with pytest.raises(errors.UniqueViolation) as exc:
        migrate.upgrade(url, "0005")
    assert (f"1 event ids are stored more than once (e.g. {ID['A']}): delete the extra rows, "
            "then upgrade") in str(exc.value)
    assert migrate.current(url) == "0004"


# ---------------------------------------------------------------------------------------------
# faults


@pytest.fixture
def throwaway_cluster(tmp_path):
    cluster = LocalCluster(tmp_path / "pg", settings.pg_bin_dir())
    cluster.start()
    db.ensure_database(cluster.url("postgres"), "app", owner=db.OWNER_ROLE)
    url = cluster.url("app")
    migrate.upgrade(url)
    yield cluster, url
    cluster.remove()


def test_database_stopped_mid_load_then_rerun_loads_once(throwaway_cluster, tmp_path,
                                                         monkeypatch):
    cluster, url = throwaway_cluster
    monkeypatch.setattr(event_files, "CHUNK_ROWS", 10)
    monkeypatch.setattr(copy_encoding, "COPY_CHUNK", 5)
    path = write_csv(tmp_path / "forty.csv", [row(h % 24, event_price_level=f"1.{h:04d}")
                                              for h in range(40)] + [row(1, granularity="X")])
    copied: list[int] = []

    def stop_after_the_second_batch(n: int) -> None:
        copied.append(n)
        if len(copied) == 2:  # 10 rows COPYed, the transaction open: the server goes down
            cluster.stop()

    results = loader.load_paths([path], url, progress_factory=lambda p, _: (
        stop_after_the_second_batch))
    assert copied == [5, 5]
    [failed] = results
    prefix = (f"{path}: not loaded, a database error ended the load and the file's "
              "transaction was rolled back (nothing of it stored; rerun to load it): ")
    assert failed.database_failed
    assert failed.error.startswith(prefix)
    # the server's own word when it gets to say it, else the client's
    assert failed.error[len(prefix):].split(":")[0] in ("AdminShutdown", "OperationalError")
    assert not cluster.is_running()

    cluster.start()
    assert counts(url) == {"new_resistance_events": 0, "support_and_resistance_master": 0,
                           "rejected_events": 0}
    assert load_log_rows(url, path) == [] and registry(url) == []
    rerun = loader.load_file(path, url)
    assert (rerun.rows_read, rerun.loaded, rerun.rejected) == (41, 40, 1)
    assert_loaded_once(url, 40)
    third = loader.load_file(path, url)
    assert (third.loaded, third.duplicates, third.rejected) == (0, 40, 1)
    assert_loaded_once(url, 40)
    assert scalar(url, "SELECT count(*) FROM rejected_events") == 1
    assert_registry_consistent(url)


def test_unreadable_files_are_reported_per_file(clean_db, tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    a = write_csv(folder / "a.csv", [row(10)])
    dangling = folder / "b.csv"
    dangling.symlink_to(folder / "gone.csv")
    c = write_csv(folder / "c.csv", [row(11)])
    unreadable = []
    if os.geteuid() != 0:  # root reads files whatever their mode
        d = write_csv(folder / "d.csv", [row(12)])
        d.chmod(0)
        unreadable.append(d)

    results = loader.load_paths([folder], clean_db)
    assert [r.path for r in results] == [a, dangling, c, *unreadable]
    assert results[1].error == f"{dangling}: cannot read: No such file or directory"
    for r in results[3:]:
        assert r.error == f"{r.path}: cannot read: Permission denied"
    assert [(r.loaded, r.error is None) for r in results] == [
        (1, True), (0, False), (1, True)] + [(0, False)] * len(unreadable)
    assert_loaded_once(clean_db, 2)

    scan = landing.scan(folder, None)  # the sensor's listing goes on past them too
    assert sorted(scan.new_files) == sorted(str(p) for p in [a, c, *unreadable])
    assert scan.refused == {str(dangling): f"{dangling}: cannot read: No such file or directory",
                            **{str(p): f"{p}: cannot read: Permission denied"
                               for p in unreadable}}
    assert set(scan.pairs_by_file) == {str(a), str(c)}

    proc = run_cli(clean_db, "load", str(folder))
    assert proc.returncode == 3, proc.stderr
    assert re.search(rf"^b\.csv\s+not loaded: {re.escape(str(dangling))}: cannot read: "
                     "No such file or directory$", proc.stdout, re.M)
    assert_loaded_once_and_derived(clean_db, 2)  # the CLI refreshes the pairs it read


def test_scan_reads_two_columns_only(tmp_path, monkeypatch):
    """file_pairs (the sensor's pre-scan) parses instrument and granularity, nothing else."""
    path = write_csv(tmp_path / "pairs.csv", [row(10), row(11, instrument="GBP_USD"),
                                              row(12, granularity="D"),
                                              row(13, instrument="bad/one")])
    parsed: list[list[str]] = []
    real = event_files.EventFile.chunks

    def spy(self, rows=None, columns=None, **kw):
        for chunk in real(self, rows, columns, **kw):
            parsed.append(list(chunk.frame.columns))
            yield chunk

    monkeypatch.setattr(event_files.EventFile, "chunks", spy)
    assert loader.file_pairs(path) == {("EUR_USD", "H1"), ("GBP_USD", "H1"), ("EUR_USD", "D")}
    assert parsed == [["granularity", "instrument", "_line"]]



def test_loader_on_a_database_before_0005_dedupes_by_leaf(server_url, make_db, tmp_path,
                                                          monkeypatch):
    """Without the registry (a database not yet upgraded; the benchmark's baseline) the loader
    finds stored rows by their full key in the pair's leaf, as before 0005."""
    url = make_db(server_url, migrated=False)
    migrate.upgrade(url, "0004")
    monkeypatch.setattr(event_files, "CHUNK_ROWS", 2)
    path = write_csv(tmp_path / "five.csv", [row(10), row(11), row(12, instrument="GBP_USD"),
                                             row(10), row(13)])
    first = loader.load_file(path, url)
    assert (first.rows_read, first.loaded, first.duplicates, first.rejected) == (5, 4, 0, 1)
    again = loader.load_file(path, url)
    assert (again.rows_read, again.loaded, again.duplicates, again.rejected) == (5, 0, 4, 1)
    assert_loaded_once(url, 4)
    assert fetch(url, "SELECT line_number, cardinality(reasons) FROM rejected_events") == [(5, 1)]


def test_cli_exits_1_when_the_database_fails(tmp_path):
    """A database failure is an error (exit 1) naming the file, not a bad file (exit 3)."""
    import os
    import subprocess

    from sr_platform.core.localpg import free_port

    f = tmp_path / "events.csv"
    f.write_text("event_creation_date,granularity,instrument,event_price_level,atr_at_event,"
                 "new_resistance_negative_rebound,new_resistance_negative_rebound_in_atr\n"
                 "2026-03-04T13:00:00Z,H1,EUR_USD,1.1,0.001,-0.0005,-0.5\n")
    env = dict(os.environ, SR_PLATFORM_DATABASE_URL=(
        f"postgresql://nobody@127.0.0.1:{free_port()}/x?connect_timeout=2"))
    proc = subprocess.run(["sr-platform", "load", str(f)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{f}: not loaded, a database error ended the load" in proc.stdout
    assert "OperationalError" in proc.stdout
