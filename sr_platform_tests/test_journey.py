"""The journey (issue 13): exactly what `make run` leaves, then every command of the README's
"Commands" as a subprocess, each checked by its effect, and each operations job once.

Two legs: a FRESH local cluster (a temporary SR_PLATFORM_HOME: the developer's own cluster is
never touched) brought up by a real `sr-platform dev` (cluster, `sr_platform` database with
pg_stat_statements, migrations, the generated sample, the schema asset, the UI), and an
external PostgreSQL 15 named by a URL that carries a password, as CI has. On both, no process
spawned by a command may show a password in its arguments. Run with -s to see the times.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from sr_platform.cli import dev_environment
from sr_platform.core import db, settings
from sr_platform.core.localpg import LocalCluster, free_port, read_pgpass
from sr_platform.operations.definitions import jobs as operations_jobs

from .dagster_dev import graphql, run_messages, sr_platform_dev, stripped_environment

RESTORED = "journey_restored"
EXTERNAL_LOGIN = "sr_journey"
TABLES = ("new_resistance_events", "support_and_resistance_master", "event_features",
          "rejected_events", "load_log")
BACKUP_ID = r"\d{8}T\d{6}Z(?:-\d+)?"
# the journey checks that the SLA job runs, not this shared machine's speed (no timed asserts)
LENIENT_SLA = {"SR_PLATFORM_SLA_INSERT_P99_MS": "10000", "SR_PLATFORM_SLA_BULK_ROWS_PER_S": "1",
               "SR_PLATFORM_SLA_LATEST_P95_MS": "100000",
               "SR_PLATFORM_SLA_RANGE_P95_MS": "100000"}


class ArgvWatch:
    """Samples every process's argv (/proc/*/cmdline) every few ms while in use: records
    the programs seen and any argv that holds one of `secrets`."""

    def __init__(self, secrets_: list[str]) -> None:
        self.secrets = [s.encode() for s in secrets_ if s]
        self.seen: set[str] = set()
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = str(os.getpid())
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit() or entry.name == me:
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                        argv = fh.read()
                except OSError:
                    continue
                if not argv:
                    continue
                self.seen.add(os.path.basename(argv.split(b"\0")[0]).decode(errors="replace"))
                for s in self.secrets:
                    if s in argv:
                        self.leaks.append(argv.replace(b"\0", b" ").replace(s, b"<PASSWORD>")
                                          .decode(errors="replace"))
            time.sleep(0.003)

    def __enter__(self) -> "ArgvWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Journey:
    leg: str
    env: dict[str, str] = field(repr=False)
    tmp: Path
    backups: Path
    landing: Path
    secrets: list[str] = field(default_factory=list, repr=False)  # no argv may show them
    admin: str = ""  # admin URL of the app database, for the test's own queries
    times: dict[str, float] = field(default_factory=dict)
    sample_rows: int = 0

    @property
    def external(self) -> bool:
        return self.leg == "pg15"

    def sr(self, *args: str, rc: int = 0, watch: bool = False,
           timing: str | None = None) -> subprocess.CompletedProcess:
        """`sr-platform ARGS` as the user runs it; asserts its exit code."""
        return self.run(["sr-platform", *args], rc=rc, watch=watch, timing=timing)

    def run(self, argv: list[str], rc: int = 0, watch: bool = False, timing: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        started = time.perf_counter()
        if watch:
            with ArgvWatch(self.secrets) as w:
                proc = subprocess.run(argv, env=env or self.env, cwd=self.tmp,
                                      capture_output=True, text=True)
            assert not w.leaks, f"a password in a process's arguments: {w.leaks[:3]}"
            self.last_seen = w.seen
        else:
            proc = subprocess.run(argv, env=env or self.env, cwd=self.tmp,
                                  capture_output=True, text=True)
        if timing:
            self.times[timing] = time.perf_counter() - started
        assert proc.returncode == rc, (f"{' '.join(argv[:3])} exited {proc.returncode}, "
                                       f"not {rc}\nstdout:\n{proc.stdout[-3000:]}\n"
                                       f"stderr:\n{proc.stderr[-3000:]}")
        return proc

    def query(self, text: str, params: tuple = (), database: str | None = None):
        url = db.with_database(self.admin, database) if database else self.admin
        with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
            cur = conn.execute(text, params)
            return cur.fetchall() if cur.description else []

    def counts(self, database: str | None = None, url: str | None = None) -> dict[str, int]:
        """Exact row counts of every top-level table of the public schema."""
        url = url or (db.with_database(self.admin, database) if database else self.admin)
        with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                "AND relkind IN ('r', 'p') AND NOT relispartition ORDER BY 1")]
            return {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(t))).fetchone()[0] for t in tables}


def _environment(tmp: Path, **extra: str) -> dict[str, str]:
    """The user's shell after `make run`'s install: the venv's tools on PATH, this checkout
    importable, every place the platform writes in `tmp`, nothing of the developer's."""
    dagster_home = tmp / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(settings.PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    keep = {k: os.environ[k] for k in ("SR_PLATFORM_PG_BIN",) if os.environ.get(k)}
    env = stripped_environment(
        DAGSTER_HOME=str(dagster_home), SR_PLATFORM_BACKUP_DIR=str(tmp / "backups"),
        SR_PLATFORM_LANDING_DIR=str(tmp / "landing"),
        SR_PLATFORM_ALERT_LOG=str(tmp / "alerts.log"), **keep, **extra)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _local_cluster(home: Path) -> LocalCluster:
    return LocalCluster(home, settings.pg_bin_dir())


@pytest.fixture(params=["local", "pg15"])
def journey(request, tmp_path) -> Iterator[Journey]:
    work = tmp_path / "work"
    work.mkdir()
    if request.param == "local":
        home = tmp_path / "home"
        env = _environment(tmp_path, SR_PLATFORM_HOME=str(home),
                           SR_PLATFORM_PG_PORT=str(free_port()))
        j = Journey("local", env, work, tmp_path / "backups", tmp_path / "landing")
        try:
            yield j
        finally:  # whatever failed, nothing of the journey is left running
            _local_cluster(tmp_path / "recovered").remove()
            _local_cluster(home).remove()
        return
    server = request.getfixturevalue("pg15_server_url")
    password = secrets.token_hex(16)
    with psycopg.connect(db.libpq_url(server), autocommit=True) as conn:
        # a login role with a password, with what docs/security.md asks of an
        # external URL: member of sr_writer (and CREATEDB), of sr_owner (migrations, backups)
        # and of sr_reader
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
            sql.Identifier(EXTERNAL_LOGIN), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT sr_owner, sr_writer, sr_reader TO {}").format(
            sql.Identifier(EXTERNAL_LOGIN)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER sr_owner").format(
            sql.Identifier(settings.APP_DATABASE)))
    port = make_url(server).port
    url = f"postgresql://{EXTERNAL_LOGIN}:{password}@127.0.0.1:{port}/{settings.APP_DATABASE}"
    env = _environment(tmp_path, SR_PLATFORM_DATABASE_URL=url)
    j = Journey("pg15", env, work, tmp_path / "backups", tmp_path / "landing", [password],
                admin=db.with_database(server, settings.APP_DATABASE))
    try:
        yield j
    finally:
        with psycopg.connect(db.libpq_url(server), autocommit=True) as conn:
            for (name,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname IN (%s, %s, %s) "
                    "OR datname LIKE 'sr\\_verify\\_%%'",
                    (settings.APP_DATABASE, settings.DAGSTER_DATABASE, RESTORED)).fetchall():
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                    sql.Identifier(name)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(EXTERNAL_LOGIN)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(EXTERNAL_LOGIN)))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a leg is 4-8 min on a busy 2-core machine
def test_journey(journey: Journey):
    j = journey
    try:
        _make_run(j)
        source = _first_commands(j)
        backup_id = _backup(j, source)
        _restore(j, backup_id, source)
        _prune(j)
        _recover(j)
        _operations_jobs(j)
        _stop(j)
    finally:  # the times so far, also when a step fails
        print(f"\njourney ({j.leg}) times on the sample ({j.sample_rows:,} events): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in j.times.items()))


def _make_run(j: Journey) -> None:
    """`sr-platform dev` (what `make run` runs) until the UI answers and the landing sensor's
    run has loaded the sample, then stopped."""
    started = time.perf_counter()
    with sr_platform_dev(j.env, j.tmp) as dev:
        j.times["make run until the UI answers"] = time.perf_counter() - started
        if not j.external:
            j.admin = j.sr("db", "url", "--role", "admin").stdout.strip()
        files = sorted(j.landing.glob("*.csv"))
        assert len(files) == 28  # the generated sample: 28 instruments, one year
        j.sample_rows = sum(len(f.read_text().splitlines()) - 1 for f in files)
        statuses = _wait_for_sample_load(dev.port, j)
        j.times["make run until the sample is loaded"] = time.perf_counter() - started
    assert statuses and set(statuses) == {"SUCCESS"}, statuses
    if not j.external:
        j.secrets = list(read_pgpass(Path(j.env["SR_PLATFORM_HOME"]) / "pgpass").values())
        assert len(j.secrets) == 5
        # what ensure_database gives the platform database of the local cluster
        assert j.query("SELECT extname::text FROM pg_extension WHERE extname = "
                       "'pg_stat_statements'") == [("pg_stat_statements",)]
    # the whole sample is in the database, one level per event
    assert j.query("SELECT count(*), count(DISTINCT instrument) FROM new_resistance_events") \
        == [(j.sample_rows, 28)]
    assert j.query("SELECT count(*) FROM support_and_resistance_master") == [(j.sample_rows,)]
    assert j.query("SELECT count(DISTINCT source) FROM load_log") == [(28,)]


def _wait_for_sample_load(port: int, j: Journey, timeout: float = 600) -> list[str]:
    """The statuses of the landing sensor's runs, once they are all done and the sample's
    rows are in (or one of them did not succeed)."""
    query = ('{ runsOrError(filter: {pipelineName: "ingest_landing_files"}) '
             '{ ... on Runs { results { runId status } } } }')
    deadline = time.monotonic() + timeout
    while True:
        runs = graphql(port, query)["runsOrError"]["results"]
        statuses = [r["status"] for r in runs]
        if statuses and set(statuses) <= {"SUCCESS", "FAILURE", "CANCELED"}:
            if set(statuses) != {"SUCCESS"}:
                # the failed runs' last messages, so a failure says why (the storage is gone
                # after the test)
                return statuses + [m for r in runs if r["status"] != "SUCCESS"
                                   for m in run_messages(port, r["runId"])[-15:]]
            if j.query("SELECT count(*) FROM new_resistance_events") == [(j.sample_rows,)]:
                return statuses
        assert time.monotonic() < deadline, f"the sample is not loaded: runs {statuses}"
        time.sleep(2)


def _first_commands(j: Journey) -> dict[str, int]:
    """db status / url / upgrade / current / history, rejected, a reload of the sample."""
    status = j.sr("db", "status").stdout
    if j.external:
        assert status.startswith("database: external (SR_PLATFORM_DATABASE_URL) 127.0.0.1:")
        assert "version:  PostgreSQL 15." in status
    else:
        assert "state:    up" in status and "version:  postgres (PostgreSQL) 18" in status
    head = j.sr("db", "current").stdout.strip()
    assert head.endswith(" (head)")
    assert j.sr("db", "upgrade").stdout.strip() == f"at revision {head.split()[0]}"
    history = j.sr("db", "history").stdout.splitlines()
    assert history[0].startswith("base -> ") and any(
        line.split(" -> ")[1].startswith(head.split()[0] + ":") for line in history), history
    url = make_url(j.sr("db", "url", "--role", "reader").stdout.strip())
    assert url.database == settings.APP_DATABASE
    assert url.username == (EXTERNAL_LOGIN if j.external else "sr_app_reader")
    assert j.sr("rejected").stdout.strip() == "0 rejected rows, 0 reasons"  # a clean sample
    before = j.counts()
    out = j.sr("load", str(j.landing)).stdout  # the sample again: nothing new
    assert re.search(r"^total\s+([\d,]+)\s+0\s+\1\s+0\s", out, re.M), out
    after = j.counts()
    assert after["load_log"] == before["load_log"] + 28
    assert {t: n for t, n in after.items() if t != "load_log"} == \
        {t: n for t, n in before.items() if t != "load_log"}
    return after


def _backup(j: Journey, source: dict[str, int]) -> str:
    proc = j.sr("backup", watch=True, timing="backup")
    # the tools really ran while argv was sampled
    assert {"pg_dump", "pg_restore"} <= j.last_seen, sorted(j.last_seen)
    out = proc.stdout
    logical = re.search(rf"^({BACKUP_ID}) (\S+)$", out, re.M)
    assert logical, out
    backup_id = logical.group(1)
    assert Path(logical.group(2)) == j.backups / backup_id
    physical = re.findall(rf"^({BACKUP_ID}) (\S+) \(physical base backup\)$", out, re.M)
    assert physical == ([] if j.external else [(physical[0][0],
                                                  str(j.backups / "base" / physical[0][0]))])
    assert re.search(r"^restored into a scratch database: ok \(\d+(\.\d+)? s\)$", out, re.M), out
    manifest = json.loads((j.backups / backup_id / "manifest.json").read_text())
    assert manifest["row_counts"] == source

    listed = j.sr("backup", "list").stdout.splitlines()
    rows = [line.split() for line in listed[1:]]
    assert [(r[0], r[1], r[5]) for r in rows if r[1] == "logical"] == [
        (backup_id, "logical", "yes")]
    assert [(r[0], r[1]) for r in rows if r[1] == "physical"] == \
        ([] if j.external else [(physical[0][0], "physical")])
    return backup_id


def _restore(j: Journey, backup_id: str, source: dict[str, int]) -> None:
    out = j.sr("restore", backup_id, "--into", RESTORED, watch=True, timing="restore").stdout
    assert out.startswith(f"restored {backup_id} into database {RESTORED}: "), out
    assert j.counts(RESTORED) == source == j.counts()
    j.query(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(RESTORED)),
            database="postgres")


def _prune(j: Journey) -> None:
    """A dry run, then the prune, as of a time that makes the sample's oldest month expire."""
    oldest = j.query("SELECT min(event_creation_date) FROM new_resistance_events")[0][0]
    cutoff = (oldest.astimezone(UTC) + timedelta(days=30)).replace(
        hour=0, minute=0, second=0, microsecond=0)
    if (cutoff.month, cutoff.day) == (2, 29):
        cutoff += timedelta(days=1)
    as_of = cutoff.replace(year=cutoff.year + 2)  # events are kept 2 years
    expected = {
        "new_resistance_events": j.query(
            "SELECT count(*) FROM new_resistance_events WHERE event_creation_date < %s",
            (cutoff,))[0][0],
        "support_and_resistance_master": j.query(
            "SELECT count(*) FROM support_and_resistance_master WHERE event_creation_date < %s",
            (cutoff,))[0][0],
        "event_features": j.query(
            "SELECT count(*) FROM event_features WHERE event_creation_date < %s",
            (as_of.replace(year=as_of.year - 5),))[0][0],
        "rejected_events": j.query("SELECT count(*) FROM rejected_events WHERE rejected_at < %s",
                                   (as_of - timedelta(days=365),))[0][0],
        "load_log": j.query("SELECT count(*) FROM load_log WHERE finished_at < %s",
                            (as_of - timedelta(days=730),))[0][0],
    }
    assert 0 < expected["new_resistance_events"] == expected["support_and_resistance_master"]
    before = j.counts()
    dry = j.sr("prune", "--as-of", as_of.isoformat(), "--dry-run").stdout
    assert _cutoffs(dry)["new_resistance_events"] == cutoff.isoformat(), dry
    assert _pruned(dry, "would delete") == expected
    assert j.counts() == before  # a dry run changes nothing
    done = j.sr("prune", "--as-of", as_of.isoformat(), timing="prune").stdout
    assert _pruned(done, "deleted") == expected
    # every deleted event's id leaves the id registry too (migration 0005's triggers)
    gone = dict(expected, event_id_registry=expected["new_resistance_events"])
    after = j.counts()
    # as of a time after now + 7 days the whole change log goes, prune's own announcements too
    assert (before.pop("change_log") > 0, after.pop("change_log")) == (True, 0)
    assert after == {t: n - gone.get(t, 0) for t, n in before.items()}
    assert j.query("SELECT min(event_creation_date) >= %s FROM new_resistance_events",
                   (cutoff,)) == [(True,)]


_PRUNE_ROW = re.compile(r"^  (\w+)\s+(\S+)\s+([\d,]+)  ", re.M)


def _pruned(out: str, verb: str) -> dict[str, int]:
    """{table: rows} of prune's table (table, cutoff, `verb`, oldest row that stays)."""
    assert re.search(rf"^  table\s+keeps rows from \(cutoff\)\s+{verb}  ", out, re.M), out
    found = {t: int(n.replace(",", "")) for t, _, n in _PRUNE_ROW.findall(out) if t != "table"}
    found.pop("change_log", None)  # 0009's log of changes: as of a future time, all of it goes
    assert set(found) == set(TABLES), out
    return found


def _cutoffs(out: str) -> dict[str, str]:
    return {t: c for t, c, _ in _PRUNE_ROW.findall(out)}


def _recover(j: Journey) -> None:
    into = j.tmp.parent / "recovered"
    if j.external:
        err = j.sr("recover", "--to", datetime.now(UTC).isoformat(), "--into", str(into),
                   rc=1).stderr
        assert "need the project's local cluster" in err and "pgBackRest" in err, err
        assert not into.exists()
        return
    with psycopg.connect(db.libpq_url(j.admin), autocommit=True) as conn:
        to = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    at_to = j.counts()
    time.sleep(1.1)  # the deletion is committed in a later second than `to`
    victim = j.query("SELECT min(instrument) FROM new_resistance_events")[0][0]
    with psycopg.connect(db.libpq_url(j.admin), autocommit=True) as conn:
        deleted = conn.execute("DELETE FROM new_resistance_events WHERE instrument = %s",
                               (victim,)).rowcount
    assert deleted > 0
    live = j.counts()
    assert live["new_resistance_events"] == at_to["new_resistance_events"] - deleted
    out = j.sr("recover", "--to", to.isoformat(), "--into", str(into), timing="recover").stdout
    url = re.search(r"^url:\s+(\S+)$", out, re.M)
    assert url, out
    admin = db.role_url(url.group(1), db.ADMIN_ROLE)
    recovered = _local_cluster(into)
    try:
        assert j.counts(url=admin) == at_to  # the deleted rows are back, nothing else moved
        assert j.counts() == live  # the live cluster is untouched
        assert j.sr("recover", "--stop", str(into)).stdout.startswith(
            f"stopped the recovered cluster of {into}")
        assert not recovered.is_running()
        assert j.sr("recover", "--remove", str(into)).stdout.startswith(
            f"removed the recovered cluster of {into}")
    finally:
        recovered.remove()  # idempotent: whatever failed above
    assert not recovered.data_dir.exists() and not recovered.passfile.exists()


def _operations_jobs(j: Journey) -> None:
    """Each operations job once, as `dagster job execute` in the environment `make run` gives
    Dagster (sr_platform.cli.dev_environment), with SUCCESS."""
    code = ("import json; from sr_platform.cli import dev_environment; e = dev_environment(); "
            "print(json.dumps({k: e[k] for k in ('SR_PLATFORM_DATABASE_URL', "
            "'SR_PLATFORM_DAGSTER_STORAGE_URL', 'SR_PLATFORM_LANDING_DIR', 'DAGSTER_HOME') "
            "if k in e}))")
    dagster_env = dict(j.env, **json.loads(j.run([sys.executable, "-c", code]).stdout),
                       **LENIENT_SLA)
    names = [job.name for job in operations_jobs]
    assert names == ["retention_job", "backup_job", "partition_maintenance_job", "health_job",
                     "sla_job"]
    logical_before, base_before = _backup_ids(j.backups), _backup_ids(j.backups / "base")
    for name in names:
        j.run(["dagster", "job", "execute", "-m", "sr_platform.definitions", "-j", name],
              env=dagster_env, watch=name == "backup_job", timing=name)
        statuses = j.query("SELECT status FROM runs WHERE pipeline_name = %s", (name,),
                           database=settings.DAGSTER_DATABASE)
        assert statuses == [("SUCCESS",)], (name, statuses)
    # backup_job took a logical backup and, on the local cluster, a physical one; rotation
    # (the newest of each day) then removed the journey's earlier ones of today
    logical, base = _backup_ids(j.backups), _backup_ids(j.backups / "base")
    assert len(logical) == 1 and not logical & logical_before, (logical_before, logical)
    if j.external:
        assert base == base_before == set()
    else:
        assert len(base) == 1 and not base & base_before, (base_before, base)


def _backup_ids(root: Path) -> set[str]:
    return {p.parent.name for p in root.glob("*/manifest.json")}


def _stop(j: Journey) -> None:
    if j.external:
        assert j.sr("db", "stop").stdout.strip() == \
            "SR_PLATFORM_DATABASE_URL is set: nothing local to stop"
        return
    cluster = _local_cluster(Path(j.env["SR_PLATFORM_HOME"]))
    runtime = cluster.runtime
    assert j.sr("db", "stop").stdout.strip() == "PostgreSQL stopped"
    assert "state:    down" in j.sr("db", "status", rc=3).stdout
    cluster.remove()  # what `make clean-db` does
    assert not cluster.data_dir.exists() and not cluster.passfile.exists()
    # nothing the journey started still runs
    left = []
    for entry in os.scandir("/proc"):
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                argv = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if str(runtime) in argv or str(j.tmp.parent) in argv:
            left.append(argv)
    assert left == [], left


@pytest.mark.skipif(settings.external_database_url() is not None,
                    reason="the environment `make run` gives Dagster on the local cluster")
def test_make_run_does_not_tell_dagster_the_local_cluster_is_another_server(server_url):
    """SR_PLATFORM_DATABASE_URL means another server: with the local cluster's URL in it,
    make run's backup_job took no physical base backup (found by the journey)."""
    env = dev_environment()
    assert settings.DATABASE_URL_ENV not in env
    storage = make_url(env["SR_PLATFORM_DAGSTER_STORAGE_URL"])
    assert (storage.username, storage.database) == ("sr_dagster", settings.DAGSTER_DATABASE)
