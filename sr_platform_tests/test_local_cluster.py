"""The project-local PostgreSQL and the `sr-platform` CLI."""

import logging
import os
import socket
import subprocess

import psycopg
import pytest

from sr_platform.core import db, migrate, settings
from sr_platform.core.localpg import PROVISION_VERSION, LocalCluster, free_port, runtime_dir_for


def _cli(*args, env=None):
    return subprocess.run(["sr-platform", *args], capture_output=True, text=True,
                          env=env or dict(os.environ))


@pytest.mark.skipif(settings.external_database_url() is not None,
                    reason="SR_PLATFORM_DATABASE_URL is set: no local cluster is started")
def test_local_cluster_start_is_idempotent_and_reports_status(server_url):
    cluster = db.local_cluster()
    cluster.start()  # already running: a no-op
    st = cluster.status()
    assert st.running
    runtime = runtime_dir_for(settings.state_dir()) if os.geteuid() == 0 else settings.state_dir()
    assert st.data_dir == runtime / "pgdata"
    assert st.runtime_dir == runtime
    assert "PostgreSQL" in st.version
    out = _cli("db", "status")
    assert out.returncode == 0, out.stderr
    assert f"port:     {st.port}" in out.stdout
    assert "state:    up" in out.stdout
    assert f"data:     {st.data_dir}" in out.stdout
    assert f"runtime:  {runtime}" in out.stdout
    assert f"passwords in {settings.state_dir() / 'pgpass'} (0600)" in out.stdout
    with db.connect(server_url) as conn:
        listen = conn.execute("SHOW listen_addresses").fetchone()[0]
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        wal = conn.execute("SHOW wal_level").fetchone()[0]
    assert (listen, preload, wal) == ("127.0.0.1", "pg_stat_statements", "replica")


def test_cli_migration_commands_against_a_url(server_url, make_db):
    url = make_db(server_url, migrated=False)
    env = dict(os.environ, SR_PLATFORM_DATABASE_URL=url)
    assert _cli("db", "current", env=env).stdout.strip() == "None"
    up = _cli("db", "upgrade", "0002", env=env)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "at revision 0002"
    assert _cli("db", "upgrade", env=env).stdout.strip() == f"at revision {migrate.head()}"
    assert _cli("db", "current", env=env).stdout.strip() == f"{migrate.head()} (head)"
    assert _cli("db", "history", env=env).stdout.splitlines()[0].startswith("base -> 0001: ")
    assert _cli("db", "url", env=env).stdout.strip() == db.role_url(url, db.WRITER_ROLE)
    down = _cli("db", "downgrade", "base", env=env)
    assert down.returncode == 0, down.stderr
    assert migrate.current(url) is None


def test_cli_errors_are_one_clear_line(server_url, make_db):
    url = make_db(server_url, migrated=False)
    env = dict(os.environ, SR_PLATFORM_DATABASE_URL=url)
    out = _cli("db", "upgrade", "9999", env=env)
    assert out.returncode == 1
    assert out.stderr.startswith("sr-platform: error: ")
    assert "9999" in out.stderr
    assert "Traceback" not in out.stderr


def test_start_moves_to_a_free_port_when_its_port_is_taken(tmp_path, caplog):
    """A cluster of its own (the checkout's is shared by the tests), without WAL archiving."""
    port = free_port()
    cluster = LocalCluster(tmp_path / "state", settings.pg_bin_dir(), port=port, archive=False)
    try:
        cluster.start()
        assert cluster.port == port
        cluster.stop()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
            # SO_REUSEADDR: the stopped server's closed connections may linger in TIME_WAIT
            # on this port (a busy machine); a LISTENING socket still takes it from start()
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            with caplog.at_level(logging.WARNING, logger="sr_platform.core.localpg"):
                cluster.start()
            new = cluster.port
            assert new != port
            assert caplog.messages == [
                f"local cluster {cluster.data_dir}: port {port} on 127.0.0.1 is taken by "
                f"another process; moving to port {new}"]
            assert f"port = {new}\n" in (cluster.data_dir / "sr_platform.conf").read_text()
            # provisioned again for the new port; every login role gets in with the passfile
            assert (cluster.home / ".provisioned").read_text() == f"{new}:{PROVISION_VERSION}"
            for role in ("sr_app_reader", "sr_app_writer", "sr_owner", "postgres"):
                with psycopg.connect(cluster.url("postgres", role)) as conn:
                    assert conn.execute("SELECT current_user, current_setting('port')"
                                        ).fetchone() == (role, str(new))
        cluster.stop()
        cluster.start()  # the old port is free again: the cluster keeps its new one
        assert cluster.port == new
        # archive=False: replica-level WAL, nothing archived even after a segment switch
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            assert conn.execute("SELECT current_setting('archive_mode'), "
                                "current_setting('wal_level')").fetchone() == ("off", "replica")
            conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS i")
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
            assert conn.execute("SELECT archived_count, failed_count FROM pg_stat_archiver"
                                ).fetchone() == (0, 0)
        assert list(cluster.wal_archive.iterdir()) == []
    finally:
        cluster.remove()
    assert not cluster.data_dir.exists()


def test_wal_archive_setting(monkeypatch):
    monkeypatch.delenv(settings.WAL_ARCHIVE_ENV, raising=False)
    assert settings.wal_archive() is True
    assert db.local_cluster().archive is True
    for value, expected in (("off", False), ("OFF", False), ("0", False), ("on", True),
                            ("", True)):
        monkeypatch.setenv(settings.WAL_ARCHIVE_ENV, value)
        assert settings.wal_archive() is expected, value
    monkeypatch.setenv(settings.WAL_ARCHIVE_ENV, "off")
    assert db.local_cluster().archive is False
    assert "archive_mode = off\n" in db.local_cluster()._wal_settings()
    monkeypatch.setenv(settings.WAL_ARCHIVE_ENV, "sometimes")
    with pytest.raises(ValueError, match="SR_PLATFORM_WAL_ARCHIVE='sometimes': expected on or off"):
        settings.wal_archive()


def test_start_keeps_the_port_of_a_live_server_that_pg_ctl_status_misreports(
        tmp_path, monkeypatch):
    """A running server is never moved to another port under itself (seen once on a loaded
    machine: settings said one port, the server ran on another, every connection failed)."""
    cluster = LocalCluster(tmp_path / "state", settings.pg_bin_dir(), port=free_port(),
                           archive=False)
    try:
        cluster.start()
        port = cluster.port
        real_run = LocalCluster._run

        def status_says_stopped(self, args, check=True):
            if args[1] == "status":
                return subprocess.CompletedProcess(args, 3, "", "")
            return real_run(self, args, check)

        monkeypatch.setattr(LocalCluster, "_run", status_says_stopped)
        assert cluster.is_running()
        cluster.start()
        assert cluster.port == port
        with psycopg.connect(cluster.url("postgres")) as conn:
            assert conn.execute("SELECT current_setting('port')").fetchone() == (str(port),)
        monkeypatch.undo()
        cluster.stop()
        assert not cluster.is_running()
        # a stale pid file naming a live process that is not postgres does not count
        (cluster.data_dir / "postmaster.pid").write_text(f"{os.getpid()}\n")
        assert not cluster.is_running()
        (cluster.data_dir / "postmaster.pid").unlink()
    finally:
        cluster.remove()
