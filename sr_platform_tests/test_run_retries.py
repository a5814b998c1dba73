"""Run retries in a real `dagster dev` over the project's dagster.yaml: a load run whose worker
is killed in the middle of its transaction (alone, or with everything else as in a machine
restart) is marked failed and retried by the daemon, and the partition ends up loaded exactly
once without anyone starting a backfill."""

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import yaml

from sr_platform.core import db, loader, settings
from sr_platform.core.generate import write_event_files
from sr_platform.run_launcher import process_started_at

from .dagster_dev import dagster_dev, graphql, run_messages, wait_for_run
from .helpers import count_rows

LOCATION = "sr_platform"  # workspace.yaml's location name
PAIR = ("EUR_USD", "H1")


def test_instance_config_retries_and_retention():
    conf = yaml.safe_load((settings.PROJECT_ROOT / "dagster.yaml").read_text())
    assert conf["run_retries"] == {"enabled": True, "max_retries": 2,
                                   "retry_on_asset_or_op_failure": False}
    assert conf["run_launcher"] == {"module": "sr_platform.run_launcher",
                                    "class": "LocalRunLauncher"}
    assert conf["run_monitoring"] == {"enabled": True, "start_timeout_seconds": 300,
                                      "cancel_timeout_seconds": 300,
                                      "poll_interval_seconds": 60}
    assert conf["retention"] == {"schedule": {"purge_after_days": 90},
                                 "sensor": {"purge_after_days": {"skipped": 7, "failure": 90,
                                                                 "success": 90}}}


def _runs(port: int) -> list[dict]:
    data = graphql(port, """{ runsOrError { ... on Runs { results {
        runId status tags { key value } } } } }""")
    return [{"id": r["runId"], "status": r["status"],
             "tags": {t["key"]: t["value"] for t in r["tags"]}}
            for r in data["runsOrError"]["results"]]


def _wait(what: str, fn, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while not (value := fn()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return value


def _one_pair_file(directory: Path) -> int:
    """One event file holding only PAIR's rows; returns their number."""
    write_event_files(directory / "gen", years=0.25, instruments=1, seed=5, event_rate=0.5)
    (src,) = (directory / "gen").glob("*.csv")
    frame = pd.read_csv(src)
    frame = frame[(frame["instrument"] == PAIR[0]) & (frame["granularity"] == PAIR[1])]
    landing = directory / "landing"
    landing.mkdir()
    frame.to_csv(landing / "events_EUR_USD_H1.csv", index=False)
    shutil.rmtree(directory / "gen")
    return len(frame)


@dataclass
class BlockedLoad:
    """Everything for one load run that blocks mid-transaction until `release()`."""

    app: str
    rows: int
    env: dict[str, str]
    cwd: Path
    blocker: psycopg.Connection

    def release(self) -> None:
        self.blocker.rollback()


@pytest.fixture
def blocked_load(server_url, make_db, tmp_path) -> Iterator[BlockedLoad]:
    app = make_db(server_url)
    storage = make_db(server_url, migrated=False)
    rows = _one_pair_file(tmp_path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    conf = yaml.safe_load((settings.PROJECT_ROOT / "dagster.yaml").read_text())
    conf["run_monitoring"]["poll_interval_seconds"] = 2  # the project's, polled faster
    (home / "dagster.yaml").write_text(yaml.safe_dump(conf))
    env = dict(os.environ, DAGSTER_HOME=str(home),
               SR_PLATFORM_DATABASE_URL=app, SR_PLATFORM_LANDING_DIR=str(tmp_path / "landing"),
               SR_PLATFORM_DAGSTER_STORAGE_URL=db.sqlalchemy_url(storage, "psycopg2"))
    # the partition exists, so the load's first statement on it is inside its transaction
    loader.ensure_partitions(app, [PAIR])
    blocker = psycopg.connect(db.libpq_url(app))
    blocker.execute("LOCK TABLE new_resistance_events IN ACCESS EXCLUSIVE MODE")
    try:
        yield BlockedLoad(app, rows, env, tmp_path, blocker)
    finally:
        blocker.close()


def _first_run_blocked_mid_load(port: int, app: str) -> tuple[dict, int]:
    """The landing sensor's run, once it waits on the lock mid-load; and its worker's pid."""
    (first,) = _wait("the sensor's run", lambda: _runs(port))
    pid = _wait("the run worker's pid", lambda: next(
        (int(m.group(1)) for msg in run_messages(port, first["id"])
         if (m := re.search(r"Started process for run \(pid: (\d+)\)", msg))), None))
    with psycopg.connect(db.libpq_url(app), autocommit=True) as probe:
        _wait("the load to wait on the lock", lambda: probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'").fetchone()[0] == 1)
    return first, pid


def _retried_once(port: int, first: dict) -> dict:
    """Waits for the first run's automatic retry to succeed; asserts these two are all."""
    assert wait_for_run(port, first["id"]) == "FAILURE"
    retry = _wait("the automatic retry", lambda: next(
        (r for r in _runs(port) if r["tags"].get("dagster/parent_run_id") == first["id"]),
        None))
    assert wait_for_run(port, retry["id"]) == "SUCCESS", run_messages(port, retry["id"])[-20:]
    assert sorted((r["id"], r["status"]) for r in _runs(port)) == sorted(
        [(first["id"], "FAILURE"), (retry["id"], "SUCCESS")])
    assert retry["tags"]["dagster/retry_number"] == "1"
    # the same tick's run again: the same file
    assert retry["tags"]["sr_platform/files"] == first["tags"]["sr_platform/files"] \
        == "events_EUR_USD_H1.csv"
    return retry


def _loaded_exactly_once(app: str, n: int) -> None:
    for table in ("new_resistance_events", "support_and_resistance_master", "event_features"):
        assert count_rows(app, table) == n, table
    # one committed load (of the whole file: the sensor's run): the killed one left nothing
    with psycopg.connect(db.libpq_url(app)) as conn:
        assert conn.execute("SELECT instrument, granularity, rows_read, rows_loaded, "
                            "rows_duplicate FROM load_log").fetchall() == [(None, None, n, n, 0)]


WORKSPACE = ["-w", str(settings.PROJECT_ROOT / "workspace.yaml")]


@pytest.mark.slow
def test_a_killed_run_worker_is_retried_and_loads_exactly_once(blocked_load):
    b = blocked_load
    with dagster_dev(WORKSPACE, env=b.env, cwd=b.cwd) as dev:
        first, pid = _first_run_blocked_mid_load(dev.port, b.app)
        os.kill(pid, signal.SIGKILL)  # the run worker dies in the middle of the load
        b.release()  # the dead load's transaction now rolls back
        _retried_once(dev.port, first)
    _loaded_exactly_once(b.app, b.rows)


@pytest.mark.slow
def test_a_run_cut_off_by_a_machine_restart_is_retried_and_loads_exactly_once(blocked_load):
    b = blocked_load
    with dagster_dev(WORKSPACE, env=b.env, cwd=b.cwd) as dev:
        first, pid = _first_run_blocked_mid_load(dev.port, b.app)
        dev.crash()  # webserver, daemon, code server and run worker: all gone at once
        _wait("the run worker to die", lambda: process_started_at(pid) is None)
    b.release()
    # nobody was left to mark the run failed; the restarted daemon's run monitoring does
    storage = db.libpq_url(b.env["SR_PLATFORM_DAGSTER_STORAGE_URL"])
    with psycopg.connect(storage) as conn:
        assert conn.execute("SELECT status FROM runs WHERE run_id = %s",
                            (first["id"],)).fetchone() == ("STARTED",)
    with dagster_dev(WORKSPACE, env=b.env, cwd=b.cwd) as dev:
        retry = _retried_once(dev.port, first)
        assert any("run worker process" in m and "is gone" in m
                   for m in run_messages(dev.port, first["id"])), \
            run_messages(dev.port, first["id"])[-10:]
        assert retry["tags"]["dagster/root_run_id"] == first["id"]
    _loaded_exactly_once(b.app, b.rows)
