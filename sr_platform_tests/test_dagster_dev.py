"""`dagster dev` started directly: with no SR_PLATFORM_* variable and no dagster.yaml, the
resources fall back to the core settings (the project-local cluster, data/landing) instead of
failing every run and sensor tick with DagsterInvalidConfigError; and files dropped into the
landing zone of a running `dagster dev` become queryable (issue 16, section 4)."""

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from sr_platform.core import changes, db, landing, migrate, settings
from sr_platform.core.generate import write_event_files
from sr_platform.events.partitions import partition_key
from sr_platform.run_launcher import WARM_TAG

from .dagster_dev import (
    dagster_dev,
    graphql,
    launch_assets,
    run_messages,
    stripped_environment,
    wait_for_run,
    wait_for_tick,
)

LOCATION = "sr_platform.definitions"  # `-m MODULE` names the code location after the module


@pytest.mark.slow
def test_dagster_dev_without_any_sr_platform_variable(tmp_path):
    home = tmp_path / "dagster_home"  # no dagster.yaml: Dagster's defaults (SQLite here)
    home.mkdir()
    work = tmp_path / "cwd"
    work.mkdir()
    env = stripped_environment(DAGSTER_HOME=str(home))
    # bring the default local cluster up outside dagster dev's process group (which is killed
    # at the end); the run below still finds it through db.database_url()'s fallback
    url = subprocess.run(
        [sys.executable, "-c", "from sr_platform.core import db; print(db.database_url())"],
        env=env, cwd=work, check=True, capture_output=True, text=True).stdout.strip()
    assert make_url(url).database == settings.APP_DATABASE
    assert make_url(url).username == "sr_app_writer"  # the fallback is least-privilege too
    with dagster_dev(["-m", LOCATION], env=env, cwd=work) as dev:
        port = dev.port
        run_id = launch_assets(port, LOCATION, [["database_schema"]])
        status = wait_for_run(port, run_id)
        assert status == "SUCCESS", run_messages(port, run_id)[-20:]
        tick = wait_for_tick(port, LOCATION, "landing_zone_sensor")
        # the fallback landing zone is data/landing under the working directory: missing,
        # and the tick says so (not "no new files")
        assert tick == {"status": "SKIPPED", "error": None,
                        "skipReason": landing.missing_reason(work / "data" / "landing")}
    assert migrate.current(url) == migrate.head()


@pytest.mark.slow
def test_files_dropped_into_a_running_dagster_dev_become_queryable(server_url, make_db,
                                                                   tmp_path, monkeypatch):
    """Issue 16, section 4: files moved into the landing zone of a running `dagster dev` (the
    project's dagster.yaml: PostgreSQL storage, the run queue, the run launcher) are loaded by
    the landing sensor's one run: every row queryable by a reader, each partition's levels and
    features derived, and the run's materializations carry the real counts."""
    app = make_db(server_url)
    storage_name = f"srtest_dagster_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server_url, storage_name, owner=db.DAGSTER_ROLE)
    storage = db.sqlalchemy_url(db.role_url(db.with_database(server_url, storage_name),
                                            db.DAGSTER_ROLE), "psycopg2")
    home, landing_dir, staging = (tmp_path / "dagster_home", tmp_path / "landing",
                                  tmp_path / ".staging" / "batch")
    for d in (home, landing_dir, staging):
        d.mkdir(parents=True)
    shutil.copy(settings.PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    write_event_files(staging, years=0.1, instruments=3, seed=16, event_rate=0.5)
    frame = pd.concat(pd.read_csv(f) for f in sorted(staging.glob("*.csv")))
    expected = {(i, g): n for (i, g), n in frame.groupby(["instrument", "granularity"]).size(
        ).items()}
    keys = {str(partition_key(i, g)): n for (i, g), n in expected.items()}
    env = stripped_environment(
        DAGSTER_HOME=str(home), SR_PLATFORM_LANDING_DIR=str(landing_dir),
        SR_PLATFORM_DATABASE_URL=db.role_url(app, db.WRITER_ROLE),
        SR_PLATFORM_DAGSTER_STORAGE_URL=storage,
        SR_PLATFORM_BACKUP_DIR=str(tmp_path / "backups"),
        SR_PLATFORM_ALERT_LOG=str(tmp_path / "alerts.log"))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    try:
        with dagster_dev(["-m", LOCATION], env=env, cwd=tmp_path) as dev:
            # the sensor runs, and has seen an empty landing zone
            assert wait_for_tick(dev.port, LOCATION, "landing_zone_sensor") == {
                "status": "SKIPPED", "error": None,
                "skipReason": f"no new files in {landing_dir.resolve()}"}
            # a subscriber, as a dashboard would have, from the log's seq before the files land
            with db.connect(app, autocommit=True) as conn:
                since = changes.last_seq(conn)
            heard: list[changes.Change] = []

            def listen() -> None:
                for change in changes.subscribe(("events",), since=since, url=app):
                    heard.append(change)
                    if sum(c.rows for c in heard if c.op == "insert") >= len(frame):
                        return

            subscriber = threading.Thread(target=listen, daemon=True)
            subscriber.start()
            # written beside it, moved in at once (a directory: one tick sees all the files)
            staging.rename(landing_dir / staging.name)
            with db.connect(app, role=db.READER_ROLE, autocommit=True) as reader:
                deadline = time.monotonic() + 600  # a failure's bound, not a measure
                while reader.execute("SELECT count(*) FROM new_resistance_events"
                                     ).fetchone()[0] < len(frame):
                    assert time.monotonic() < deadline, "the files' rows never all arrived"
                    time.sleep(0.2)
                runs = graphql(dev.port, '{ runsOrError(filter: {pipelineName: '
                               '"ingest_landing_files"}) { ... on Runs { results { runId '
                               'status tags { key value } } } } }')["runsOrError"]["results"]
                (run,) = runs  # one run for the tick's files
                # forked from the warm process (sr_platform/run_launcher.py), not spawned
                assert {"key": WARM_TAG, "value": "true"} in run["tags"]
                status = wait_for_run(dev.port, run["runId"])
                assert status == "SUCCESS", run_messages(dev.port, run["runId"])[-20:]
                for table in ("new_resistance_events", "support_and_resistance_master",
                              "event_features"):
                    assert dict(((i, g), n) for i, g, n in reader.execute(
                        f"SELECT instrument, granularity, count(*) FROM {table} "
                        "GROUP BY 1, 2").fetchall()) == expected, table
                assert reader.execute("SELECT count(*), count(*) FILTER (WHERE origin = "
                                      "'dagster') FROM load_log").fetchone() == (3, 3)
                load_ids = {i for (i,) in reader.execute("SELECT id FROM load_log")}
            # the subscriber heard every row once, per pair, each change naming its load
            subscriber.join(timeout=120)
            assert not subscriber.is_alive(), heard
            heard_rows: dict = {}
            for c in heard:
                assert (c.channel, c.op, c.load_id in load_ids) == ("events", "insert", True), c
                heard_rows[(c.instrument, c.granularity)] = \
                    heard_rows.get((c.instrument, c.granularity), 0) + c.rows
            assert heard_rows == expected
            assert [c.seq for c in heard] == sorted({c.seq for c in heard})
        monkeypatch.setenv("SR_PLATFORM_DAGSTER_STORAGE_URL", storage)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for asset in ("new_resistance_events", "support_and_resistance_master",
                          "event_features"):
                assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(keys)
            records = instance.fetch_materializations(dg.AssetKey("new_resistance_events"),
                                                      limit=100).records
            assert {r.asset_materialization.partition: r.asset_materialization.metadata[
                "rows_loaded"].value for r in records} == keys
    finally:
        db.drop_database(server_url, storage_name)
