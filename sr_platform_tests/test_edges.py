"""Edge cases of issues 13 (item 7) and 14 (item 5): file names with control characters,
NUL bytes in fields, a missing landing directory, separate login roles on an external server,
and the landing sensor's bounded cursor."""

import json
import os
import secrets
import time
import uuid
from collections import Counter
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from sr_platform import cli
from sr_platform.core import db, landing, loader, migrate, settings
from sr_platform.core.localpg import free_port
from sr_platform.core.text import printable
from sr_platform.definitions import defs
from sr_platform.events.resources import LandingZone
from sr_platform.events.sensors import landing_zone_sensor
from sr_platform.resources import PostgresResource
from sr_platform.schema.assets import database_schema

from .helpers import counts, fetch, load_log_rows, row, run_cli, write_csv

ESC_NAME = "evil\x1b[2J.csv"  # ESC [ 2 J: clear the screen


def test_printable_escapes_controls_and_keeps_unicode():
    assert printable("a\x1b[2Jb\n\t\x7f\x85\u202e\udcff é 日本") == \
        "a\\x1b[2Jb\\n\\t\\x7f\\x85\\u202e\\udcff é 日本"
    assert printable("plain name.csv") == "plain name.csv"


def test_cli_load_escapes_control_characters_in_file_names(clean_db, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_csv(folder / ESC_NAME, [row(1), row(2)])
    (folder / "bad\x1b]0;owned\x07.csv").write_text("a,b\n1,2\n")  # not an event file
    out = run_cli(clean_db, "load", str(folder))  # the real terminal-facing process
    assert out.returncode == cli.EXIT_NOT_EVENT_FILE, out.stderr
    assert "\x1b" not in out.stdout + out.stderr and "\x07" not in out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].startswith("bad\\x1b]0;owned\\x07.csv not loaded: "
                               f"{printable(folder)}/bad\\x1b]0;owned\\x07.csv: "
                               "not an event file: missing columns")
    assert lines[2].split() == ["evil\\x1b[2J.csv", "2", "2", "0", "0", lines[2].split()[-1]]


def test_a_nul_byte_in_a_field_quarantines_only_its_row(clean_db, tmp_path):
    path = write_csv(tmp_path / "nul.csv", [row(1, event_type="new_resistance"),
                                            row(2, event_type="new_\x00resistance"),
                                            row(3, event_type="new_resistance")])
    (result,) = loader.load_paths([path], clean_db)
    assert result.error is None
    assert (result.rows_read, result.loaded, result.rejected) == (3, 2, 1)
    assert result.reasons == Counter({"nul_byte": 1})
    assert counts(clean_db) == {"new_resistance_events": 2, "support_and_resistance_master": 2,
                                "rejected_events": 1}
    assert fetch(clean_db, "SELECT line_number, reasons, raw_record->>'event_type', "
                           "raw_record->>'instrument' FROM rejected_events") == [
        (3, ["event_type: holds a NUL byte (stored as \\x00)"], "new_\\x00resistance",
         "EUR_USD")]
    assert load_log_rows(clean_db, path) == [(None, None, 3, 2, 0, 1)]


# -- the landing sensor ------------------------------------------------------------------------

def _tick(instance, landing_dir: Path, cursor: str | None = None):
    # the database is never used by a tick: its URL points nowhere
    resources = {"landing_zone": LandingZone(path=str(landing_dir)),
                 "postgres": PostgresResource(
                     database_url=f"postgresql://sr@127.0.0.1:{free_port()}/sr_platform")}
    return landing_zone_sensor(dg.build_sensor_context(
        instance=instance, resources=resources, definitions=defs, cursor=cursor))


def _requested(result) -> list[str]:
    if isinstance(result, dg.SkipReason) or not result.run_requests:
        return []
    (req,) = result.run_requests
    return req.run_config["ops"]["ingest_files"]["config"]["files"]


def _skip(result) -> str | None:
    if isinstance(result, dg.SkipReason):
        return result.skip_message
    return result.skip_reason.skip_message if result.skip_reason else None


def _cursor(result, previous: str | None) -> str | None:
    """The cursor the next tick gets (a bare SkipReason keeps the previous one)."""
    return previous if isinstance(result, dg.SkipReason) else result.cursor


def test_a_missing_landing_directory_is_reported_as_missing(tmp_path):
    missing = tmp_path / "no" / "landing"
    with dg.instance_for_test() as instance:
        result = _tick(instance, missing)
        assert isinstance(result, dg.SkipReason)
        assert result.skip_message == (
            f"the landing directory {missing} does not exist (set by SR_PLATFORM_LANDING_DIR, "
            "default data/landing): create it or point the variable at the landing zone")
        (tmp_path / "file").write_text("")
        assert _tick(instance, tmp_path / "file").skip_message.startswith(
            f"the landing directory {tmp_path / 'file'} is not a directory (set by ")
        missing.mkdir(parents=True)  # an empty one is just that
        assert _skip(_tick(instance, missing)) == f"no new files in {missing}"


def test_the_landing_cursor_stays_bounded_and_requests_each_file_once(tmp_path, monkeypatch):
    monkeypatch.setattr(landing, "SETTLE_NS", 200_000_000, raising=False)  # not minutes
    zone = tmp_path / "landing"
    zone.mkdir()
    files = [write_csv(zone / f"e{i:04d}.csv", [row(i % 24)]) for i in range(1000)]
    with dg.instance_for_test() as instance:
        first = _tick(instance, zone)
        assert _requested(first) == [str(f) for f in files]
        instance.add_dynamic_partitions("instruments", ["EUR_USD"])
        time.sleep(0.3)  # the 1,000 files are now older than the settle time of the next tick
        second = _tick(instance, zone, first.cursor)
        assert _requested(second) == [] and _skip(second) == f"no new files in {zone}"
        cursor = _cursor(second, first.cursor)
        assert len(cursor) < 100 + len(str(zone))  # against ~70 kB naming 1,000 files
        state = json.loads(cursor)
        assert state == {"v": 2, "watermark": state["watermark"], "recent": {},
                         "dirs": [str(zone)]}
        assert _requested(_tick(instance, zone, cursor)) == []  # none twice

        # a rewritten file; a file moved in with an old mtime (mv keeps it: ctime is new);
        # a directory of old files moved in whole
        with files[500].open("a") as fh:
            fh.write(files[500].read_text().splitlines()[-1] + "\n")
        old = write_csv(tmp_path / "old.csv", [row(5, instrument="GBP_USD")])
        os.utime(old, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
        old = old.rename(zone / "old.csv")
        batch = tmp_path / "batch"
        batch.mkdir()
        inner = write_csv(batch / "b.csv", [row(6, instrument="USD_JPY")])
        os.utime(inner, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
        batch.rename(zone / "batch")
        third = _tick(instance, zone, cursor)
        assert _requested(third) == [str(zone / "batch" / "b.csv"), str(files[500]), str(old)]
        instance.add_dynamic_partitions("instruments", ["GBP_USD", "USD_JPY"])
        assert _requested(_tick(instance, zone, third.cursor)) == []
        time.sleep(0.3)
        fifth = _tick(instance, zone, third.cursor)
        assert _requested(fifth) == [] and json.loads(fifth.cursor)["recent"] == {}
        assert _requested(_tick(instance, zone, fifth.cursor)) == []


# -- separate login roles on an external server ------------------------------------------------

@pytest.fixture
def three_logins(pg15_server_url, tmp_path):
    """A fresh database on the PG15 server and three LOGIN roles with passwords, members of
    sr_owner, sr_writer and sr_reader; the passwords in a PGPASSFILE (not in the URLs)."""
    admin = db.libpq_url(db.role_url(pg15_server_url, db.ADMIN_ROLE))
    tag = uuid.uuid4().hex[:8]
    logins = {db.OWNER_ROLE: f"own_{tag}", db.WRITER_ROLE: f"wri_{tag}",
              db.READER_ROLE: f"rea_{tag}"}
    name = f"srtest_roles_{tag}"
    u = make_url(pg15_server_url)
    passfile = tmp_path / "pgpass"
    passfile.touch(0o600)
    with psycopg.connect(admin, autocommit=True) as conn:
        for group, login in logins.items():
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (group,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
            password = secrets.token_hex(16)
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(login), sql.Literal(password), sql.Identifier(group)))
            with passfile.open("a") as fh:
                fh.write(f"{u.host}:{u.port}:{name}:{login}:{password}\n")
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER sr_owner").format(sql.Identifier(name)))
    urls = {role: f"postgresql://{login}@{u.host}:{u.port}/{name}"
            for role, login in logins.items()}
    yield urls, logins, db.with_database(admin, name), passfile
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        for login in logins.values():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login)))


def test_owner_writer_and_reader_urls_are_each_used_for_their_work(three_logins, tmp_path,
                                                                    monkeypatch, capsys):
    urls, logins, admin, passfile = three_logins
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    monkeypatch.setenv(settings.DATABASE_URL_ENV, urls[db.WRITER_ROLE])
    monkeypatch.setenv(settings.OWNER_URL_ENV, urls[db.OWNER_ROLE])
    monkeypatch.setenv(settings.READER_URL_ENV, urls[db.READER_ROLE])
    monkeypatch.setenv("SR_PLATFORM_DEBUG", "1")  # a failure shows its traceback

    # migrations as the owner: the CLI to 0004, then the schema asset with the writer's URL
    assert cli.main(["db", "upgrade", "0004"]) == 0
    assert capsys.readouterr().out == "at revision 0004\n"
    result = dg.materialize([database_schema], resources={
        "postgres": PostgresResource(database_url=urls[db.WRITER_ROLE])})
    assert result.success
    assert cli.main(["db", "current"]) == 0
    assert capsys.readouterr().out == f"{migrate.head()} (head)\n"
    # a column of this test's own: who inserts each load_log row
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("ALTER TABLE load_log ADD COLUMN loaded_by name NOT NULL "
                     "DEFAULT session_user")

    # a load as the writer
    path = write_csv(tmp_path / "roles.csv", [row(1), row(2)])
    assert cli.main(["load", str(path)]) == cli.EXIT_OK
    capsys.readouterr()
    # a read as the reader
    assert cli.main(["db", "status"]) == 0
    assert f"revision: {migrate.head()}\n" in capsys.readouterr().out

    with psycopg.connect(admin) as conn:
        owners = dict(conn.execute("SELECT tablename::text, tableowner::text FROM pg_tables "
                                   "WHERE schemaname = 'public'").fetchall())
        loads = conn.execute("SELECT loaded_by::text, rows_loaded FROM load_log").fetchall()
        events = conn.execute("SELECT count(*) FROM new_resistance_events").fetchone()[0]
    # every object the migrations and the load made is sr_owner's; alembic's own table is
    # the owner login's (the migrating session's user)
    assert owners.pop("alembic_version") == logins[db.OWNER_ROLE]
    assert "new_resistance_events_h1_eur_usd" in owners
    assert set(owners.values()) == {"sr_owner"}
    assert loads == [(logins[db.WRITER_ROLE], 2)] and events == 2

    writer_url = db.database_url()
    assert writer_url == urls[db.WRITER_ROLE]
    with db.connect(writer_url, role=db.READER_ROLE, autocommit=True) as conn:
        assert conn.execute("SELECT session_user::text").fetchone() == (logins[db.READER_ROLE],)
        assert conn.execute("SELECT count(*) FROM new_resistance_events").fetchone() == (2,)
        conn.execute("RESET ROLE")  # the reader login has nothing more than sr_reader
        for stmt in ("DELETE FROM rejected_events", "INSERT INTO rejected_events (source, "
                     "source_sha256, line_number, raw_record, reasons) VALUES ('x', "
                     "repeat('0', 64), 1, '{}', '{x}')", "CREATE TABLE t (i int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
    with db.connect(writer_url, role=db.WRITER_ROLE, autocommit=True) as conn:
        assert conn.execute("SELECT session_user::text").fetchone() == (logins[db.WRITER_ROLE],)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE t (i int)")


def test_landing_scan_reads_the_old_cursor_and_survives_a_clock_stepped_back(tmp_path):
    zone = tmp_path / "landing"
    zone.mkdir()
    a = write_csv(zone / "a.csv", [row(1)])
    # the first cursor format named every file: a.csv is not new, b.csv is
    old_cursor = json.dumps({str(a): landing.signature(a)})
    b = write_csv(zone / "b.csv", [row(2)])
    first = landing.scan(zone, old_cursor)
    assert list(first.new_files) == [str(b)]
    # a tick whose clock ran an hour ahead, then the clock set right: a file that arrives
    # after that still counts (its ctime is below the hour-ahead watermark)
    ahead = landing.scan(zone, first.cursor, now_ns=time.time_ns() + 3600 * 10**9)
    assert ahead.new_files == {} and json.loads(ahead.cursor)["recent"] == {}
    c = write_csv(zone / "c.csv", [row(3)])
    # the files changed within the settle time are examined again (a repeated request loads
    # nothing twice): a.csv and b.csv were made seconds ago
    assert list(landing.scan(zone, ahead.cursor).new_files) == [str(a), str(b), str(c)]
