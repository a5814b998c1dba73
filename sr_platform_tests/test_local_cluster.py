"""The project-local PostgreSQL and the `sr-platform` CLI."""

import os
import subprocess

import pytest

from sr_platform.core import db, migrate, settings
from sr_platform.core.localpg import runtime_dir_for


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
