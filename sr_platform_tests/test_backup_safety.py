"""Backups on the setups users have, and what a kill, another OS user or `ps` can see:
- the local cluster's platform database carries pg_stat_statements (only a superuser may
  create it) and still restores as the owner;
- a PostgreSQL 15 server is dumped with version 15 tools (a newer pg_dump writes settings it
  cannot restore);
- a killed backup leaves no child running and no half backup listed; the next run cleans up;
- files are private (0600/0700) even under a world-traversable parent; no password in argv;
- restore into a name with a space; a manifest cannot point outside its directory."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from sr_platform.core import backup, backup_cycle, db, loader
from sr_platform.core.generate import write_event_files
from sr_platform.core.localpg import SUPERUSER, read_pgpass

from .conftest import PG15_BIN


def _load_sample(url: str, tmp_path: Path, instruments: int = 2) -> int:
    files = write_event_files(tmp_path / f"landing_{uuid.uuid4().hex[:6]}", years=0.1,
                              instruments=instruments, seed=5, event_rate=0.5)
    return sum(r.loaded for r in loader.load_paths(files, url))


def _count_databases(server_url: str, pattern: str) -> int:
    with psycopg.connect(db.libpq_url(db.with_database(server_url, "postgres"))) as conn:
        return conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s",
                            (pattern,)).fetchone()[0]


def test_a_database_with_pg_stat_statements_backs_up_and_restores(server_url, make_db,
                                                                   tmp_path):
    """What `make run` leaves: the platform database has the monitoring extension, which the
    owner (who restores) may not create. Failed with 'permission denied to create extension'."""
    url = make_db(server_url)
    db.ensure_extensions(db.role_url(url, db.ADMIN_ROLE))
    with psycopg.connect(db.libpq_url(url)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension "
                            "WHERE extname = 'pg_stat_statements'").fetchone() == (1,)
    loaded = _load_sample(url, tmp_path)
    c = backup_cycle.run(url, root=tmp_path / "b", include_dagster=False)
    assert (c.ok, c.verification["mismatched_tables"]) == (True, [])
    assert c.logical.row_counts["new_resistance_events"] == loaded
    name = f"srtest_restore_{uuid.uuid4().hex[:8]}"
    try:
        counts = backup.restore(c.logical.id, name, url=url, root=tmp_path / "b")
        assert counts == c.logical.row_counts
        # the local cluster's administrator puts the extension back
        with psycopg.connect(db.libpq_url(db.with_database(url, name))) as conn:
            assert conn.execute("SELECT count(*) FROM pg_extension "
                                "WHERE extname = 'pg_stat_statements'").fetchone() == (1,)
    finally:
        db.drop_database(url, name)


def _password_url(pg15_server_url: str, database: str) -> tuple[str, str]:
    """A URL of the PG15 server that carries the superuser's password, as an external
    SR_PLATFORM_DATABASE_URL would, with no passfile."""
    u = make_url(pg15_server_url)
    password = read_pgpass(Path(u.query["passfile"]))[SUPERUSER]
    plain = u._replace(query={}).set(username=SUPERUSER, password=password, database=database)
    return plain.render_as_string(hide_password=False), password


def test_postgresql_15_is_dumped_with_its_own_tools_and_no_password_in_argv(
        pg15_server_url, make_db, tmp_path):
    """Failed with 'SET transaction_timeout' (pg_dump 18's dump) and showed the password to
    `ps`."""
    assert backup.client_bin_dir(15) == PG15_BIN
    migrated = make_db(pg15_server_url)
    loaded = _load_sample(migrated, tmp_path)
    url, password = _password_url(pg15_server_url, make_url(migrated).database)
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:  # every process's argv, as any user could read it
        while not done.is_set():
            for p in Path("/proc").iterdir():
                if p.name.isdigit():
                    try:
                        args = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    except OSError:
                        continue
                    if "pg_dump" in args or "pg_restore" in args:
                        seen.append(args)

    t = threading.Thread(target=watch)
    t.start()
    try:
        c = backup_cycle.run(url, root=tmp_path / "b", include_dagster=False)
    finally:
        done.set()
        t.join()
    assert (c.ok, c.logical.row_counts["new_resistance_events"]) == (True, loaded)
    assert c.logical.server_version.startswith("15.")
    assert seen, "no pg_dump/pg_restore process was seen"
    assert [a for a in seen if password in a] == []


def test_restore_into_a_name_with_a_space(server_url, make_db, tmp_path):
    url = make_db(server_url)
    _load_sample(url, tmp_path)
    b = backup.take_backup(url, root=tmp_path / "b", include_dagster=False)
    name = f"srtest restore {uuid.uuid4().hex[:6]}"
    try:
        assert backup.restore(b.id, name, url=url, root=tmp_path / "b") == b.row_counts
    finally:
        db.drop_database(url, name)
    assert _count_databases(server_url, name) == 0


def test_a_manifest_naming_a_file_outside_its_backup_is_refused(server_url, make_db,
                                                                tmp_path):
    url = make_db(server_url)
    b = backup.take_backup(url, root=tmp_path / "b", include_dagster=False)
    manifest = json.loads((b.path / "manifest.json").read_text())
    manifest["files"]["../../../../etc/passwd"] = {"sha256": "0" * 64, "bytes": 1}
    (b.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(backup.BackupError, match="refusing file '../../../../etc/passwd'"):
        backup.restore(b.id, "srtest_never", url=url, root=tmp_path / "b")
    assert backup.list_backups(tmp_path / "b") == []
    assert _count_databases(server_url, "srtest_never") == 0


def _as_nobody(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup",
                           "--clear-groups", *args], capture_output=True, text=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to `nobody` needs root")
def test_backup_files_are_private_under_a_world_traversable_parent(server_url, make_db):
    url = make_db(server_url)
    parent = Path(tempfile.mkdtemp(prefix="srtest_open_"))
    try:
        parent.chmod(0o755)  # like /srv or a home directory others can enter
        root = parent / "backups"
        c = backup_cycle.run(url, root=root, include_dagster=False)
        dump = c.logical.path / "sr_platform.dump"
        modes = {p.relative_to(root).as_posix(): oct(p.stat().st_mode & 0o777)
                 for p in [root, *root.rglob("*")] if p.name != ".lock"}
        assert {k: v for k, v in modes.items() if v not in ("0o700", "0o600")} == {}
        assert oct(root.stat().st_mode & 0o777) == "0o700"
        assert _as_nobody("cat", str(dump)).returncode != 0
        assert _as_nobody("ls", str(root)).returncode != 0
        # a backup directory made loose by hand is made private again by the next backup
        root.chmod(0o755)
        backup.take_backup(url, root=root, include_dagster=False)
        assert oct(root.stat().st_mode & 0o777) == "0o700"
    finally:
        subprocess.run(["rm", "-rf", str(parent)], check=True)


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_backup_leaves_no_child_and_the_next_run_cleans_up(server_url, make_db,
                                                                   tmp_path):
    """kill -9 of a backup while pg_dump runs: pg_dump dies too (it used to finish a dump
    with no manifest), the half backup is never listed, and the next run removes it and any
    scratch database an interrupted verification left."""
    url = make_db(server_url)
    _load_sample(url, tmp_path)
    root = tmp_path / "b"
    owner = db.role_url(url, db.OWNER_ROLE)
    with db.connect(owner, autocommit=True) as conn:  # a table pg_dump must lock
        conn.execute("CREATE SCHEMA IF NOT EXISTS holdup; CREATE TABLE holdup.t (x int)")
    blocker = psycopg.connect(db.libpq_url(owner))
    blocker.execute("LOCK TABLE holdup.t IN ACCESS EXCLUSIVE MODE")  # pg_dump waits on it
    code = ("import sys; from sr_platform.core import backup_cycle; "
            "backup_cycle.run(sys.argv[1], root=sys.argv[2], include_dagster=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, url, str(root)],
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        deadline = time.monotonic() + 120
        dumps: list[int] = []
        while not dumps:
            assert proc.poll() is None and time.monotonic() < deadline, "no pg_dump started"
            dumps = [c for c in _children(proc.pid)
                     if b"pg_dump" in Path(f"/proc/{c}/cmdline").read_bytes()]
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while any(_alive(c) for c in dumps) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [c for c in dumps if _alive(c)] == []  # died with its parent
    finally:
        blocker.close()
        if proc.poll() is None:
            proc.kill()
    assert backup.list_backups(root) == []
    scratch = f"{backup.SCRATCH_PREFIX}{uuid.uuid4().hex[:8]}"  # as a killed verify leaves
    db.ensure_database(url, scratch, owner=db.OWNER_ROLE)
    partial = [p.name for p in root.iterdir() if p.name.startswith(backup.PARTIAL)]
    assert len(partial) == 1
    removed = backup.cleanup(url, root)
    assert sorted(removed) == sorted([f"unfinished backup {root / partial[0]}",
                                      f"scratch database {scratch}"])
    assert [p.name for p in root.iterdir() if p.name != ".lock"] == []
    assert _count_databases(server_url, f"{backup.SCRATCH_PREFIX}%") == 0
    c = backup_cycle.run(url, root=root, include_dagster=False)
    assert c.ok and c.cleaned == []


def test_the_cli_backup_rotates_and_trims_the_wal_archive(server_url, tmp_path, monkeypatch,
                                                          capsys):
    """`sr-platform backup` on the local cluster (the one `make run` uses) rotates like the
    nightly job: two backups the same day keep the newer of each kind, and the WAL archive
    keeps nothing older than the kept base backup's start. It used to keep every backup and
    every segment (9.2 GB after 35 minutes of probing)."""
    from sr_platform.cli import main
    from sr_platform.core import pitr

    if db.settings.external_database_url():
        pytest.skip("physical backups need the project's local cluster")
    monkeypatch.setenv("SR_PLATFORM_BACKUP_DIR", str(tmp_path / "b"))
    assert main(["backup"]) == 0
    first = backup.list_backups(tmp_path / "b")[0].id
    assert main(["backup"]) == 0
    out = capsys.readouterr().out
    logical = [b.id for b in backup.list_backups(tmp_path / "b")]
    base = pitr.list_base_backups(tmp_path / "b")
    assert len(logical) == 1 and logical[0] != first
    assert len(base) == 1
    assert f"rotated out: {first} (logical)" in out
    archive = db.local_cluster().wal_archive
    segments = sorted(p.name for p in archive.iterdir() if len(p.name) == 24)
    assert segments and segments[0] >= base[0].start_wal
