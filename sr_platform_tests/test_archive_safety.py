"""The retention archive never loses a row: a row leaves the database only once a complete,
readable archive file holds it, whatever stops the prune (kill -9, a full disk, a rerun)."""

import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pyarrow.parquet as pq
import pytest

from sr_platform import cli
from sr_platform.core import db, loader, retention, settings
from sr_platform.core.features import refresh_features

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
EVENTS_CUT = datetime(2024, 6, 1, tzinfo=UTC)
FEATURES_CUT = datetime(2021, 6, 1, tzinfo=UTC)
PAIR = ("ARC_T", "H1")
STAMP = "20260601T000000Z"


def _load(url: str, tmp_path: Path, expired: int, kept: int = 2,
          start: datetime = EVENTS_CUT - timedelta(days=400)) -> None:
    """`expired` events before the events cutoff (a minute apart), `kept` after it."""
    stamps = [start + timedelta(minutes=i) for i in range(expired)] + \
        [EVENTS_CUT + timedelta(minutes=i) for i in range(kept)]
    path = tmp_path / f"events_{expired}_{kept}.csv"
    pd.DataFrame([{
        "event_creation_date": ts.isoformat().replace("+00:00", "Z"),
        "granularity": PAIR[1], "instrument": PAIR[0],
        "event_price_level": f"{1.1 + (i * 7919 % 10007) / 100000:.6f}",
        "atr_at_event": "0.001500", "volume_at_event": "" if i % 2 else f"{i % 997}.50",
        "new_resistance_negative_rebound": "-0.000750",
        "new_resistance_negative_rebound_in_atr": "-0.500000",
    } for i, ts in enumerate(stamps)]).to_csv(path, index=False)
    result = loader.load_file(path, url)
    assert (result.loaded, result.rejected) == (expired + kept, 0)


def _db_ids(url: str) -> set[str]:
    with psycopg.connect(db.libpq_url(url)) as conn:
        return {str(r[0]) for r in conn.execute(
            "SELECT original_event_id FROM new_resistance_events WHERE instrument = %s",
            (PAIR[0],))}


def _archive_files(root: Path) -> list[Path]:
    """The events archive files, as `sr-platform load <root>` would find them."""
    return loader.find_event_files([root / STAMP / retention.EVENTS]) \
        if (root / STAMP / retention.EVENTS).exists() else []


def _archived(root: Path) -> Counter:
    """How many readable archive files hold each id (read_table fails on an incomplete file)."""
    ids: Counter = Counter()
    for path in _archive_files(root):
        ids.update(pq.read_table(path).column("original_event_id").to_pylist())
    return ids


def _temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name.endswith(".tmp"))


# pauses the prune at one point of its Nth archived batch, for the test to kill it there
CHILD = """
import os, sys, time
from datetime import datetime
from pathlib import Path
import psycopg
from sr_platform.core import retention

url, root, mode, n, marker = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), \\
    Path(sys.argv[5])
state = {"writes": 0, "renames": 0, "pending": False}

def pause():
    marker.write_text(mode)
    time.sleep(3600)

real_write, real_commit, real_replace = retention._Archive.write, psycopg.Connection.commit, \\
    os.replace

def write(self, *args, **kwargs):
    state["writes"] += 1
    state["pending"] = True
    return real_write(self, *args, **kwargs)

def commit(self):
    due = state["pending"] and state["writes"] == n
    if due and mode == "before_commit":  # the batch's file is in place, its DELETE uncommitted
        pause()
    real_commit(self)
    state["pending"] = False
    if due and mode == "after_commit":
        pause()

def replace(src, dst):
    state["renames"] += 1
    if mode == "before_rename" and state["renames"] == n:  # the temp file complete, not renamed
        pause()
    return real_replace(src, dst)

retention._Archive.write, psycopg.Connection.commit, os.replace = write, commit, replace
retention.prune(url, as_of=datetime.fromisoformat(sys.argv[6]), archive_dir=root,
                batch_rows=10)
"""


def _prune_and_kill(url: str, root: Path, mode: str, n: int, tmp_path: Path) -> None:
    marker = tmp_path / f"paused_{mode}"
    env = dict(os.environ, PYTHONPATH=str(settings.PROJECT_ROOT))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, url, str(root), mode, str(n),
                             str(marker), AS_OF.isoformat()], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the prune ended ({proc.returncode}) before reaching {mode} of "
                            f"batch {n}: {proc.stdout.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "the prune never paused"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("mode", ["after_commit", "before_commit", "before_rename"])
def test_kill_9_mid_prune_loses_no_row(clean_db, tmp_path, mode):
    """50 expired rows, batches of 10, killed at batch 3: after the commit, between the
    file's rename and the commit, before the rename. Every deleted row is in a readable
    file; a row is in two files only when the kill fell between rename and commit."""
    _load(clean_db, tmp_path, expired=50)
    everything = _db_ids(clean_db)
    root = tmp_path / "archive"
    _prune_and_kill(clean_db, root, mode, 3, tmp_path)

    deleted = everything - _db_ids(clean_db)
    archived = _archived(root)
    assert len(deleted) == (30 if mode == "after_commit" else 20)
    assert set(archived) >= deleted
    if mode == "before_commit":  # the third batch's file holds 10 rows still in the database
        assert len(archived) == 30 and set(archived) - deleted <= _db_ids(clean_db)
        in_db_and_file = set(archived) - deleted
    else:
        assert set(archived) == deleted
        in_db_and_file = set()
    assert set(archived.values()) == {1}
    assert len(_temp_files(root)) == (1 if mode == "before_rename" else 0)

    report = retention.prune(clean_db, as_of=AS_OF, archive_dir=root, batch_rows=10)
    assert report.rows[retention.EVENTS] == 50 - len(deleted)
    deleted = everything - _db_ids(clean_db)
    archived = _archived(root)
    assert len(deleted) == 50 and set(archived) == deleted
    assert {i for i, n in archived.items() if n == 2} == in_db_and_file
    assert {i for i, n in archived.items() if n == 1} == deleted - in_db_and_file
    assert _temp_files(root) == []  # the rerun removed the killed run's temp file

    # reloading the archive restores exactly the deleted rows; a duplicate is skipped
    results = loader.load_paths([root / STAMP / retention.EVENTS], clean_db)
    assert sum(r.loaded for r in results) == 50
    assert sum(r.duplicates for r in results) == len(in_db_and_file)
    assert sum(r.rejected for r in results) == 0
    assert _db_ids(clean_db) == everything


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k,mode=0755", "tmpfs",
                           str(mnt)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a 300 KiB tmpfs (needs root): {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_full_disk_stops_with_every_deleted_row_archived(clean_db, tmp_path, tiny_fs,
                                                         monkeypatch, capsys):
    """`sr-platform prune --archive` (batches of 10,000) onto a 300 KiB filesystem: it stops
    with ENOSPC, says how many rows it deleted, and exactly those are archived."""
    _load(clean_db, tmp_path, expired=30_000)
    everything = _db_ids(clean_db)
    monkeypatch.setenv("SR_PLATFORM_DATABASE_URL", clean_db)
    monkeypatch.setenv("SR_PLATFORM_BACKUP_DIR", str(tiny_fs))
    assert cli.main(["prune", "--archive", "--as-of", AS_OF.isoformat()]) == 1
    err = capsys.readouterr().err
    root = tiny_fs / "archive"
    deleted = everything - _db_ids(clean_db)
    archived = _archived(root)
    assert 0 < len(deleted) < 30_000 and len(deleted) % retention.BATCH_ROWS == 0
    assert set(archived) == deleted and set(archived.values()) == {1}
    assert (f"the archive disk is full (No space left on device). Rows deleted so far: "
            f"{len(deleted):,} events (with their levels) and 0 features, every one of them "
            f"in a completed archive file under {root}") in err
    assert "the batch in progress was rolled back; nothing else was deleted." in err
    assert _temp_files(root) == []  # the failed batch's temp file is removed


def test_rerun_with_same_as_of_overwrites_no_archive(clean_db, tmp_path):
    """Prune 50 rows (batches of 20), load 10 archived rows back, prune again with the same
    as-of: every earlier file is untouched and the 10 rows are archived a second time."""
    _load(clean_db, tmp_path, expired=50)
    everything = _db_ids(clean_db)
    root = tmp_path / "archive"
    retention.prune(clean_db, as_of=AS_OF, archive_dir=root, batch_rows=20)
    before = {p: (p.read_bytes(), pq.read_table(p).column("original_event_id").to_pylist())
              for p in _archive_files(root)}
    assert sum(len(ids) for _, ids in before.values()) == 50
    back = pq.read_table(sorted(before)[0]).slice(0, 10)  # ten archived rows, loaded back
    pq.write_table(back, tmp_path / "back.parquet")
    assert loader.load_file(tmp_path / "back.parquet", clean_db).loaded == 10
    reloaded = set(back.column("original_event_id").to_pylist())
    assert len(_db_ids(clean_db)) == 12

    second = retention.prune(clean_db, as_of=AS_OF, archive_dir=root, batch_rows=20)
    assert second.rows[retention.EVENTS] == 10
    for path, (data, ids) in before.items():  # every earlier file as it was
        assert path.read_bytes() == data
        assert pq.read_table(path).column("original_event_id").to_pylist() == ids
    new = [p for p in _archive_files(root) if p not in before]
    assert len(new) == 1
    assert set(pq.read_table(new[0]).column("original_event_id").to_pylist()) == reloaded
    deleted = everything - _db_ids(clean_db)
    archived = _archived(root)
    assert len(deleted) == 50 and set(archived) == deleted
    assert {i for i, n in archived.items() if n == 2} == reloaded
    assert sum(archived.values()) == 60


def test_load_of_the_archive_restores_exactly_the_deleted_rows(clean_db, tmp_path, monkeypatch):
    """`sr-platform load <archive>/<stamp>/new_resistance_events` after a prune of 45 rows in
    batches of 10: the 45 rows come back, every column as it was."""
    _load(clean_db, tmp_path, expired=45, kept=3)
    with psycopg.connect(db.libpq_url(clean_db)) as conn:
        query = ("SELECT original_event_id, event_creation_date, event_price_level, "
                 "atr_at_event, volume_at_event, new_resistance_negative_rebound, "
                 "new_resistance_negative_rebound_in_atr, day_of_week, hour_of_day "
                 "FROM new_resistance_events WHERE instrument = %s ORDER BY 1")
        before = conn.execute(query, (PAIR[0],)).fetchall()
    root = tmp_path / "archive"
    report = retention.prune(clean_db, as_of=AS_OF, archive_dir=root, batch_rows=10)
    assert report.rows[retention.EVENTS] == 45 and len(_db_ids(clean_db)) == 3
    assert len(_archive_files(root)) == 5
    monkeypatch.setenv("SR_PLATFORM_DATABASE_URL", clean_db)
    assert cli.main(["load", str(root / STAMP / retention.EVENTS)]) == 0
    assert len(_db_ids(clean_db)) == 48
    with psycopg.connect(db.libpq_url(clean_db)) as conn:
        assert conn.execute(query, (PAIR[0],)).fetchall() == before


def test_archive_directories_0700_files_0600(clean_db, tmp_path):
    stamps_start = FEATURES_CUT - timedelta(days=1)
    _load(clean_db, tmp_path, expired=5, start=stamps_start)
    refresh_features(clean_db, PAIR)
    parent = tmp_path / "public"
    parent.mkdir()
    parent.chmod(0o755)
    old_umask = os.umask(0o022)
    try:
        report = retention.prune(clean_db, as_of=AS_OF, archive_dir=parent / "archive",
                                 batch_rows=3)
    finally:
        os.umask(old_umask)
    assert report.rows[retention.EVENTS] == 5
    assert report.rows[retention.FEATURES] == 5
    dirs = [parent / "archive"] + [p for p in (parent / "archive").rglob("*") if p.is_dir()]
    files = [p for p in (parent / "archive").rglob("*") if not p.is_dir()]
    assert {stat.S_IMODE(p.stat().st_mode) for p in dirs} == {0o700}
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    assert {p.relative_to(parent).as_posix() for p in dirs} == {
        "archive", f"archive/{STAMP}", f"archive/{STAMP}/{retention.EVENTS}",
        f"archive/{STAMP}/{retention.FEATURES}",
        f"archive/{STAMP}/{retention.EVENTS}/new_resistance_events_h1_arc_t",
        f"archive/{STAMP}/{retention.FEATURES}/event_features_h1_arc_t"}
    assert len(files) == 4 and sorted(files) == sorted(report.archived)


def test_failed_commit_keeps_its_file_and_says_so(clean_db, tmp_path, monkeypatch):
    """The second batch's COMMIT fails (injected: it raises without committing): its file
    stays, the error names it, and the rerun archives its rows again (a duplicate, no loss)."""
    _load(clean_db, tmp_path, expired=25)
    everything = _db_ids(clean_db)
    root = tmp_path / "archive"
    real_commit, calls = psycopg.Connection.commit, []

    def commit(self):
        calls.append(1)
        if len(calls) == 2:
            raise psycopg.OperationalError("injected: the server went away during COMMIT")
        real_commit(self)

    monkeypatch.setattr(psycopg.Connection, "commit", commit)
    with pytest.raises(retention.PruneError) as stopped:
        retention.prune(clean_db, as_of=AS_OF, archive_dir=root, batch_rows=10)
    monkeypatch.undo()
    deleted = everything - _db_ids(clean_db)
    archived = _archived(root)
    assert len(deleted) == 10 and len(archived) == 20 and set(archived) > deleted
    second = sorted(_archive_files(root))[1]
    assert (f"Rows deleted so far: 10 events (with their levels) and 0 features, every one of "
            f"them in a completed archive file under {root}") in str(stopped.value)
    assert (f"the batch being committed may or may not be deleted; its rows are in {second} "
            f"either way") in str(stopped.value)
    retention.prune(clean_db, as_of=AS_OF, archive_dir=root, batch_rows=10)
    archived = _archived(root)
    assert everything - _db_ids(clean_db) == set(archived) and len(archived) == 25
    assert sum(archived.values()) == 35
