"""check_failure_alert in real Dagster: an asset check failing at ERROR becomes one alert line
(check, asset, partition, figures) when it starts failing, none while it stays failed, a
'resolved' line when it passes, and a new alert when it fails again (on PostgreSQL instance
storage, as the project runs); the alert log is private."""

import json
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from sr_platform.core import db
from sr_platform.core.alerts import send_alert
from sr_platform.core.settings import Alerts
from sr_platform.operations import sensors
from sr_platform.operations.assets import database_health
from sr_platform.operations.resources import AlertChannel, BackupStore, OperationsThresholds
from sr_platform.operations.sensors import check_failure_alert
from sr_platform.resources import PostgresResource


def _lines(log) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def pg_instance(server_url) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on PostgreSQL storage, as the project's dagster.yaml configures."""
    name = f"srtest_dagster_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server_url, name, owner=db.DAGSTER_ROLE)
    storage = db.role_url(db.with_database(server_url, name), db.DAGSTER_ROLE)
    try:
        with dg.instance_for_test(overrides={"storage": {"postgres": {
                "postgres_url": db.sqlalchemy_url(storage, "psycopg2")}}}) as instance:
            yield instance
    finally:
        db.drop_database(server_url, name)


def _instance(tmp_path):
    """A test instance whose event log is one database with storage ids across runs, as the
    project's PostgreSQL storage (Dagster's default SQLite one is sharded per run)."""
    return dg.instance_for_test(overrides={"event_log_storage": {
        "module": "dagster._core.storage.event_log",
        "class": "ConsolidatedSqliteEventLogStorage",
        "config": {"base_dir": str(tmp_path / "event_log")}}})


def _tick(instance: dg.DagsterInstance, cursor: str | None, alerts: AlertChannel) -> str | None:
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alerts": alerts})
    return check_failure_alert.evaluate_tick(ctx).cursor


def test_the_alert_log_is_0600_in_a_0700_directory(tmp_path):
    log = tmp_path / "alerts" / "deeper" / "alerts.log"
    old = os.umask(0o022)  # the usual umask would give 0755 / 0644
    try:
        send_alert("job", "run", "boom", Alerts(log))
    finally:
        os.umask(old)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    for d in (log.parent, log.parent.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert _lines(log)[0]["error"] == "boom"


@pytest.fixture
def health_resources(server_url, make_db, tmp_path, monkeypatch):
    # only the checks this test drives can reach ERROR, whatever this machine's disks
    monkeypatch.setenv("SR_PLATFORM_HEALTH_FREE_DISK_PCT_ERROR", "-1")
    monkeypatch.setenv("SR_PLATFORM_HEALTH_WAL_ARCHIVE_FREE_PCT_ERROR", "-1")
    return {"postgres": PostgresResource(database_url=make_db(server_url)),
            "backups": BackupStore(path=str(tmp_path / "backups"))}


def _dead_ratio_fails(monkeypatch, fails: bool) -> None:
    """The worst dead-tuple ratio (0.0 here) is over an ERROR threshold of -1, under 2."""
    for level in ("WARN", "ERROR"):
        monkeypatch.setenv(f"SR_PLATFORM_HEALTH_DEAD_TUPLE_RATIO_{level}",
                           "-1" if fails else "2")


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook() -> Iterator[tuple[list[dict], str]]:
    """What a webhook receives, and its URL."""
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    yield _Hook.received, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_an_error_health_check_pages_once_per_failure(health_resources, hook, pg_instance,
                                                      tmp_path, monkeypatch):
    log = tmp_path / "alerts.log"
    hook, webhook = hook
    alerts = AlertChannel(log=str(log), webhook=webhook)
    instance = pg_instance

    def run(dead_ratio_fails: bool) -> str:
        _dead_ratio_fails(monkeypatch, dead_ratio_fails)
        # the thresholds as a code location reads them when it loads: from the environment
        result = dg.materialize([database_health], instance=instance, resources=health_resources
                                | {"thresholds": OperationsThresholds.from_env()})
        assert result.success  # health checks never fail their run: only this sensor pages
        return result.run_id

    first = run(True)
    cursor = _tick(instance, None, alerts)
    lines = _lines(log)
    # the empty backup directory: backup_is_recent fails at ERROR too
    assert sorted(x["check"] for x in lines) == ["backup_is_recent", "dead_tuple_ratio"]
    (dead,) = [x for x in lines if x["check"] == "dead_tuple_ratio"]
    assert (dead["asset"], dead["partition"], dead["severity"], dead["run_id"],
            dead["job"]) == ("database_health", None, "ERROR", first, "__ephemeral_asset_job__")
    assert dead["metadata"] == {"max_dead_tuple_ratio": 0.0, "warn_ratio": -1.0,
                                "error_ratio": -1.0}
    assert dead["description"] == "worst leaf has 0.0% dead rows"
    assert dead["error"] == ("check dead_tuple_ratio on database_health failed (ERROR): "
                             "worst leaf has 0.0% dead rows")
    # the webhook got the same two alerts; the log notes its answer
    assert sorted(x["check"] for x in hook) == ["backup_is_recent", "dead_tuple_ratio"]
    assert {x["webhook"] for x in lines} == {204}
    assert _tick(instance, cursor, alerts) == cursor  # nothing new: nothing sent

    run(True)  # still failing: no second alert
    cursor = _tick(instance, cursor, alerts)
    assert len(_lines(log)) == 2

    run(False)  # passes: one 'resolved' line, no alert
    cursor = _tick(instance, cursor, alerts)
    (resolved,) = _lines(log)[2:]
    assert (resolved["check"], resolved["resolved"], resolved["error"]) == (
        "dead_tuple_ratio", True, "check dead_tuple_ratio on database_health passed")

    again = run(True)  # fails again: a second alert
    _tick(instance, cursor, alerts)
    (alert,) = _lines(log)[3:]
    assert (alert["check"], alert["run_id"], alert["metadata"]["max_dead_tuple_ratio"]) \
        == ("dead_tuple_ratio", again, 0.0)
    assert "resolved" not in alert
    assert len(hook) == 3  # the resolved line is logged, not posted


def test_history_before_the_first_tick_pages_only_what_still_fails(tmp_path, monkeypatch):
    """A partitioned check's alerts name the partition; the sensor's first pass over history
    (several ticks here) pages what still fails at its end, from its first failing evaluation,
    not what failed and recovered before."""
    monkeypatch.setattr(sensors, "BATCH", 2)
    passes: dict[str, bool] = {}

    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["EUR_USD", "GBP_USD"]),
              check_specs=[dg.AssetCheckSpec("rows", asset="prices")])
    def prices(context: dg.AssetExecutionContext):
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(check_name="rows", passed=passes[context.partition_key],
                                  metadata={"rows": 0}, description="no rows")

    def run(instance: dg.DagsterInstance, key: str, passed: bool) -> str:
        passes[key] = passed
        return dg.materialize([prices], partition_key=key, instance=instance,
                              raise_on_error=False).run_id

    log = tmp_path / "alerts.log"
    alerts = AlertChannel(log=str(log))
    with _instance(tmp_path) as instance:
        run(instance, "GBP_USD", False)
        run(instance, "GBP_USD", True)  # failed and recovered before the sensor ran
        eur = run(instance, "EUR_USD", False)
        run(instance, "EUR_USD", False)
        run(instance, "GBP_USD", True)
        cursor = _tick(instance, None, alerts)  # evaluations 1-2
        cursor = _tick(instance, cursor, alerts)  # 3-4
        assert _lines(log) == []
        cursor = _tick(instance, cursor, alerts)  # 5: history read
        (line,) = _lines(log)
        assert (line["check"], line["asset"], line["partition"], line["metadata"],
                line["run_id"]) == ("rows", "prices", "EUR_USD", {"rows": 0}, eur)
        assert json.loads(cursor)["catch_up"] is None
        gbp = run(instance, "GBP_USD", False)  # from now on, every transition pages
        _tick(instance, cursor, alerts)
    (line,) = _lines(log)[1:]
    assert (line["partition"], line["run_id"]) == ("GBP_USD", gbp)


def test_a_run_sharded_event_log_is_skipped_not_an_error():
    with dg.instance_for_test() as instance:  # Dagster's default: SQLite sharded per run
        ctx = dg.build_sensor_context(instance=instance,
                                      resources={"alerts": AlertChannel(log="/nonexistent")})
        data = check_failure_alert.evaluate_tick(ctx)
    assert data.skip_message.startswith("this Dagster instance's event log is run-sharded")
    assert data.cursor is None
