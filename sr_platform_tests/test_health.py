"""health.collect() against the real PostgreSQL: the WAL archive's size and the free space of its
filesystem (exact values from an archive directory made here), and the check on them."""

import shutil

import pytest
from sqlalchemy.engine import make_url

from sr_platform.core import db, health, settings
from sr_platform.core.health import Thresholds

local_only = pytest.mark.skipif(settings.external_database_url() is not None,
                                reason="SR_PLATFORM_DATABASE_URL is set: no local cluster")


@pytest.fixture
def archive(tmp_path):
    """A WAL archive with 3 files of 3,345 bytes in all (a subdirectory is not counted)."""
    d = tmp_path / "wal_archive"
    (d / "subdir").mkdir(parents=True)
    (d / "subdir" / "ignored").write_bytes(b"x" * 500)
    for name, size in (("000000010000000000000001", 1000), ("000000010000000000000002", 2345),
                       ("00000002.history", 0)):
        (d / name).write_bytes(b"\0" * size)
    return d


def _collect(url, tmp_path, archive, **thresholds):
    return health.collect(url, backup_root=tmp_path / "backups", wal_archive=archive,
                          thresholds=Thresholds(**thresholds))


def _space(h: health.Health) -> health.Check:
    (check,) = [c for c in h.checks if c.name == "wal_archive_space"]
    return check


def test_archive_usage_counts_the_files_of_the_archive(archive):
    usage = health.archive_usage(archive)
    disk = shutil.disk_usage(archive)
    assert (usage["wal_archive_bytes"], usage["wal_archive_files"]) == (3345, 3)
    assert 0 < usage["wal_archive_fs_free_bytes"] <= disk.total
    assert 0 < usage["wal_archive_fs_free_pct"] <= 100


def test_archive_check_warns_on_size_and_errors_on_free_space(server_url, make_db, tmp_path,
                                                                archive):
    url = make_db(server_url)
    # over the size threshold, free space fine: WARN
    h = _collect(url, tmp_path, archive, wal_archive_gb=3344e-9, wal_archive_free_pct=(0, -1))
    m = h.metrics
    assert (m["wal_archive_bytes"], m["wal_archive_files"]) == (3345, 3)
    free, free_bytes = m["wal_archive_fs_free_pct"], m["wal_archive_fs_free_bytes"]
    check = _space(h)
    assert check.level == "warn"
    mode = check.metadata["archive_mode"]
    assert mode in ("on", "off")
    advice = ("; only the base backup rotation (database_backup) prunes the archive: take a "
              "backup, or move big one-off writes to a cluster without archiving")
    assert check.summary == (f"WAL archive 0.00 GB in 3 files (over 3.344e-06 GB); "
                             f"{free:.1f}% ({free_bytes / 1e9:.1f} GB) free on its filesystem; "
                             f"archive_mode={mode}" + advice)
    assert check.metadata == {"wal_archive_bytes": 3345, "wal_archive_files": 3,
                              "fs_free_bytes": free_bytes, "fs_free_pct": free,
                              "warn_gb": 3344e-9, "warn_free_pct": 0, "error_free_pct": -1,
                              "archive_mode": mode}
    # exactly at the size threshold: ok
    h = _collect(url, tmp_path, archive, wal_archive_gb=3345e-9, wal_archive_free_pct=(0, -1))
    assert _space(h).level == "ok"
    assert _space(h).summary.startswith("WAL archive 0.00 GB in 3 files; ")
    # less free space than the error threshold (no filesystem is 100.5 % free): ERROR
    h = _collect(url, tmp_path, archive, wal_archive_free_pct=(101, 100.5))
    free, free_bytes = h.metrics["wal_archive_fs_free_pct"], h.metrics["wal_archive_fs_free_bytes"]
    assert _space(h).level == "error"
    assert _space(h).summary == (f"WAL archive 0.00 GB in 3 files; {free:.1f}% "
                                 f"({free_bytes / 1e9:.1f} GB) free on its filesystem (below "
                                 f"100.5%); archive_mode={mode}" + advice)
    # below the warning threshold only: WARN
    h = _collect(url, tmp_path, archive, wal_archive_free_pct=(101, 0))
    assert _space(h).level == "warn"
    assert "free on its filesystem (below 101%)" in _space(h).summary


def test_archive_thresholds_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SR_PLATFORM_HEALTH_WAL_ARCHIVE_GB", "5.5")
    monkeypatch.setenv("SR_PLATFORM_HEALTH_WAL_ARCHIVE_FREE_PCT_ERROR", "3")
    th = Thresholds.from_env()
    assert (th.wal_archive_gb, th.wal_archive_free_pct) == (5.5, (20.0, 3.0))
    assert Thresholds().wal_archive_gb == 20.0


@local_only
def test_the_local_clusters_archive_is_measured_by_default(server_url, make_db, tmp_path):
    url = make_db(server_url)
    cluster = db.local_cluster()
    assert health.local_wal_archive(url) == cluster.wal_archive
    # a passfile URL on another port is another cluster (e.g. one `sr-platform recover` made)
    assert health.local_wal_archive(make_url(url).set(port=1).render_as_string(False)) is None
    # the archiver may add a segment meanwhile: the count lies between two counts around it
    before = health.archive_usage(cluster.wal_archive)["wal_archive_files"]
    h = health.collect(url, backup_root=tmp_path / "backups")
    after = health.archive_usage(cluster.wal_archive)["wal_archive_files"]
    assert before <= h.metrics["wal_archive_files"] <= after
    assert isinstance(h.metrics["wal_archive_bytes"], int)
    assert _space(h).summary.startswith("WAL archive ")


@local_only
def test_the_archive_measured_is_the_one_named(server_url, make_db, tmp_path):
    """Its files and bytes, exactly (a directory inside is not a file of it)."""
    url = make_db(server_url)
    archive = tmp_path / "archive"
    (archive / "sub").mkdir(parents=True)
    (archive / "000000010000000000000001").write_bytes(b"x" * 10)
    (archive / "000000010000000000000002").write_bytes(b"y" * 20)
    h = health.collect(url, backup_root=tmp_path / "backups", wal_archive=archive)
    assert (h.metrics["wal_archive_files"], h.metrics["wal_archive_bytes"]) == (2, 30)


@local_only
def test_another_server_is_not_local(server_url, make_db, tmp_path):
    """A URL with its own password (no passfile), as for an external server."""
    url = make_url(make_db(server_url)).set(
        username="sr_app_writer", password=db.local_cluster().passwords()["sr_app_writer"],
        query={}).render_as_string(hide_password=False)
    assert not db.has_passfile(url)
    h = health.collect(url, backup_root=tmp_path / "backups")
    assert [h.metrics[k] for k in ("wal_archive_bytes", "wal_archive_files",
                                   "wal_archive_fs_free_bytes", "wal_archive_fs_free_pct")] \
        == [None] * 4
    check = _space(h)  # nothing measured is no pass
    assert (check.level, check.summary) == ("warn", "not measured: the WAL archive is not on "
                                                    "this machine (it is watched where the "
                                                    "server runs)")
    (disk,) = [c for c in h.checks if c.name == "free_disk"]
    assert (disk.level, disk.summary) == ("warn", "not measured: the data directory is not on "
                                                  "this machine")
    assert disk.metadata["free_disk_pct"] is None
    assert "WAL archive: not local (the server's archive is watched where it runs)" in h.notes
    assert [c.name for c in h.checks] == list(health.CHECK_NAMES)


def test_readable_bytes():
    assert [health.readable_bytes(n) for n in (None, 999, 1000, 152_345_678, 2.5e9, 3e12)] \
        == ["n/a", "999 B", "1.00 kB", "152.35 MB", "2.50 GB", "3.00 TB"]
