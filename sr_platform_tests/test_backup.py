"""Logical backups against a real PostgreSQL: a backup restores to the same rows, restores never
overwrite by accident, a tampered file is refused, rotation keeps what the policy says."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sr_platform.core import backup, db, loader, migrate
from sr_platform.core.generate import write_event_files


@pytest.fixture
def with_rows(server_url, make_db, tmp_path):
    url = make_db(server_url)
    files = write_event_files(tmp_path / "landing", years=0.1, instruments=2, seed=5,
                              event_rate=0.5)
    loader.load_paths(files, url)
    return url


def _db_name() -> str:
    return f"srtest_restore_{uuid.uuid4().hex[:8]}"


def test_backup_restores_to_equal_rows_and_revision(with_rows, server_url, tmp_path):
    b = backup.take_backup(with_rows, root=tmp_path / "b", include_dagster=False)
    # the fixture's generated files (seed 5): 842 events with a level row each; no features
    # (loader.load_paths writes events and levels; the ingest service derives the rest)
    assert (b.row_counts["new_resistance_events"], b.row_counts["support_and_resistance_master"],
            b.row_counts["event_features"]) == (842, 842, 0)
    assert b.revision == migrate.head()
    manifest = json.loads((b.path / "manifest.json").read_text())
    assert manifest["row_counts"] == b.row_counts
    assert set(manifest["files"]) == {"sr_platform.dump"}
    assert [x.id for x in backup.list_backups(tmp_path / "b")] == [b.id]

    outcome = backup.verify(url=with_rows, root=tmp_path / "b")
    assert (outcome["ok"], outcome["mismatched_tables"]) == (True, [])
    assert backup.newest_verified(tmp_path / "b").id == b.id
    with psycopg.connect(db.libpq_url(db.with_database(server_url, "postgres"))) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE "
                            "'sr_verify_%%'").fetchone() == (0,)  # the scratch is gone

    name = _db_name()
    try:
        counts = backup.restore(b.id, name, url=with_rows, root=tmp_path / "b")
        assert counts == b.row_counts
        restored = db.with_database(with_rows, name)
        assert migrate.current(restored) == migrate.head()
        # the restored database keeps the role model: the writer loads, the reader reads
        with db.connect(restored, role=db.WRITER_ROLE) as conn:
            conn.execute("SELECT ensure_partition('RESTORED', 'D')")
        with pytest.raises(backup.BackupError, match="exists; pass --replace"):
            backup.restore(b.id, name, url=with_rows, root=tmp_path / "b")
        assert backup.restore(b.id, name, url=with_rows, root=tmp_path / "b",
                              replace=True) == b.row_counts
    finally:
        db.drop_database(server_url, name)


def test_a_tampered_backup_is_refused(with_rows, server_url, tmp_path):
    b = backup.take_backup(with_rows, root=tmp_path / "b", include_dagster=False)
    with open(b.path / "sr_platform.dump", "ab") as fh:
        fh.write(b"x")
    name = _db_name()
    with pytest.raises(backup.BackupError, match="sha256 does not match"):
        backup.restore(b.id, name, url=with_rows, root=tmp_path / "b")
    with psycopg.connect(db.libpq_url(db.with_database(server_url, "postgres"))) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                            (name,)).fetchone() == (0,)


def test_rotation_keeps_seven_daily_and_four_weekly(tmp_path):
    start = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)  # a Thursday
    for day in range(40):
        for hour in (0, 12):  # two backups a day: only the newest of a day is kept
            t = start + timedelta(days=day, hours=hour)
            d = tmp_path / t.strftime(backup.ID_FORMAT)
            d.mkdir()
            (d / "manifest.json").write_text(json.dumps({
                "id": d.name, "created_at": t.isoformat(), "server_version": "18",
                "revision": "0004", "row_counts": {}, "files": {}}))
    removed = backup.rotate(tmp_path, daily=7, weekly=4)
    kept = [b.created_at for b in backup.list_backups(tmp_path)]
    last = start + timedelta(days=39, hours=12)  # 2026-02-09 13:00, a Monday
    daily = [last - timedelta(days=d) for d in range(6, -1, -1)]
    # the newest of each of the last four ISO weeks: Mon 9 Feb (= newest), Sun 8, 1 Feb, 25 Jan
    weekly = [datetime(2026, 1, 25, 13, tzinfo=UTC), datetime(2026, 2, 1, 13, tzinfo=UTC)]
    assert kept == sorted(set(weekly + daily))
    assert len(removed) == 80 - len(kept)


def test_rollback_rehearsal_backup_downgrade_verify_restore(with_rows, server_url, tmp_path,
                                                            monkeypatch, capsys):
    """The runbook's rollback: back up, downgrade (a down step that would drop tables holding
    rows is refused unless --allow-data-loss), verify, get the data back from the backup."""
    from sr_platform.cli import main

    monkeypatch.setenv("SR_PLATFORM_DATABASE_URL", with_rows)
    monkeypatch.setenv("SR_PLATFORM_BACKUP_DIR", str(tmp_path / "b"))
    with psycopg.connect(db.libpq_url(with_rows)) as conn:
        events = conn.execute("SELECT count(*) FROM new_resistance_events").fetchone()[0]
    assert events == 842  # the fixture's seed-5 files
    head = migrate.head()
    assert main(["db", "downgrade", "0001", "--backup-first"]) == 1
    assert "refusing to drop tables that hold data" in capsys.readouterr().err
    assert migrate.current(with_rows) == head  # one transaction: nothing changed
    assert main(["db", "downgrade", "0001", "--allow-data-loss"]) == 0
    assert migrate.current(with_rows) == "0001"
    with psycopg.connect(db.libpq_url(with_rows)) as conn:
        assert conn.execute("SELECT to_regclass('new_resistance_events')").fetchone() == (None,)
    # the dropped rows come back from the backup taken first, into a new database
    b = backup.list_backups(tmp_path / "b")[0]
    name = _db_name()
    try:
        counts = backup.restore(b.id, name, url=with_rows, root=tmp_path / "b")
        assert counts["new_resistance_events"] == events
        assert migrate.current(db.with_database(with_rows, name)) == head
    finally:
        db.drop_database(server_url, name)
    assert main(["db", "upgrade", "--backup-first"]) == 0
    assert migrate.current(with_rows) == head
    assert len(backup.list_backups(tmp_path / "b")) == 2
