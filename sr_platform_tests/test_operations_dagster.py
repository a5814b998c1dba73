"""The operations domain in real Dagster against a real PostgreSQL: retention, backup proven by
restore, partition maintenance, health figures and checks, SLA checks, schedules, and the
run-failure alert reaching a local HTTP server."""

import json
import re
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import psycopg
import pytest

from sr_platform.core import db, health, loader, settings, sla
from sr_platform.core.generate import write_event_files
from sr_platform.definitions import defs
from sr_platform.operations.assets import (
    HEALTH_CHECKS,
    SLA_CHECKS,
    database_backup,
    database_health,
    partition_maintenance,
    retention_pruning,
    sla_benchmark,
)
from sr_platform.operations.resources import AlertChannel, BackupStore, OperationsThresholds
from sr_platform.operations.sensors import run_failure_alert
from sr_platform.resources import PostgresResource


@pytest.fixture
def loaded(server_url, make_db, tmp_path):
    url = make_db(server_url)
    files = write_event_files(tmp_path / "landing", years=0.1, instruments=2, seed=9,
                              event_rate=0.5, end=datetime(2026, 1, 1, tzinfo=UTC))
    loader.load_paths(files, url)
    return url


@pytest.fixture
def resources(loaded, tmp_path):
    return {"postgres": PostgresResource(database_url=loaded),
            "backups": BackupStore(path=str(tmp_path / "backups")),
            "thresholds": OperationsThresholds.from_env()}


def _read_thresholds(resources: dict) -> dict:
    """The resources with the thresholds read from the environment again, as a code
    location reads them when it loads."""
    return resources | {"thresholds": OperationsThresholds.from_env()}


def _check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_retention_job_dry_run_then_prune(loaded, resources):
    with psycopg.connect(db.libpq_url(loaded)) as conn:
        total = conn.execute("SELECT count(*) FROM new_resistance_events").fetchone()[0]
        older = conn.execute("SELECT count(*) FROM new_resistance_events "
                             "WHERE event_creation_date < '2025-12-15T00:00:00Z'").fetchone()[0]
    assert 0 < older < total
    as_of = "2027-12-15T00:00:00Z"  # events before 2025-12-15 are older than 2 years
    for dry_run, left in ((True, total), (False, total - older)):
        result = dg.materialize([retention_pruning], resources=resources, run_config={
            "ops": {"retention_pruning": {"config": {"as_of": as_of, "dry_run": dry_run}}}})
        assert result.success
        meta = result.asset_materializations_for_node("retention_pruning")[0].metadata
        assert meta["rows_pruned_new_resistance_events"].value == older
        assert meta["rows_pruned_support_and_resistance_master"].value == older
        assert meta["dry_run"].value is dry_run
        with psycopg.connect(db.libpq_url(loaded)) as conn:
            assert conn.execute("SELECT count(*) FROM new_resistance_events").fetchone()[0] \
                == left


def test_backup_asset_is_proven_by_a_restore(resources, tmp_path):
    result = dg.materialize([database_backup], resources=resources)
    assert result.success
    checks = _check_evaluations(result)
    assert checks["backup_restores"].passed
    meta = result.asset_materializations_for_node("database_backup")[0].metadata
    manifest = json.loads((tmp_path / "backups" / meta["backup_id"].value / "manifest.json")
                          .read_text())
    assert manifest["row_counts"]["new_resistance_events"] > 0
    assert (tmp_path / "backups" / "base" / meta["base_backup_id"].value / "base.tar.gz").exists()


def test_health_asset_reports_numbers_and_check_evaluations(resources, monkeypatch):
    result = dg.materialize([database_health], resources=resources)
    assert result.success
    meta = result.asset_materializations_for_node("database_health")[0].metadata
    for key in ("database_bytes", "new_resistance_events_rows", "cache_hit_ratio",
                "connections", "longest_query_seconds", "max_dead_tuple_ratio",
                "wal_archive_failures", "catch_all_rows"):
        assert isinstance(meta[key].value, int | float), key
    assert meta["catch_all_rows"].value == 0
    # sizes also readable beside the numbers that plot
    assert re.fullmatch(r"\d+\.\d\d (kB|MB|GB)", meta["database_size"].value)
    assert meta["database_size"].value == health.readable_bytes(meta["database_bytes"].value)
    checks = _check_evaluations(result)
    assert set(checks) == set(HEALTH_CHECKS)
    # no backup in this (fresh) backup directory: the backup check fails with ERROR
    assert not checks["backup_is_recent"].passed
    assert checks["backup_is_recent"].severity == dg.AssetCheckSeverity.ERROR
    assert checks["no_rows_in_catch_all_partitions"].passed
    assert checks["wal_archiving_works"].passed
    assert "wal_archive_space" in checks  # the local WAL archive's size and free space
    if settings.external_database_url() is None:
        assert isinstance(meta["wal_archive_bytes"].value, int)
        # the check reads the same measurement the asset reports
        assert checks["wal_archive_space"].metadata["wal_archive_bytes"].value == \
            meta["wal_archive_bytes"].value
    # thresholds come from the environment, read into the thresholds resource: free disk
    # below 101 % (always) warns, below 0 % (never) errs; the WAL archive's filesystem below
    # 101 % free (always) is an error
    monkeypatch.setenv("SR_PLATFORM_HEALTH_FREE_DISK_PCT_WARN", "101")
    monkeypatch.setenv("SR_PLATFORM_HEALTH_FREE_DISK_PCT_ERROR", "0")
    monkeypatch.setenv("SR_PLATFORM_HEALTH_WAL_ARCHIVE_FREE_PCT_ERROR", "101")
    result = dg.materialize([database_health], resources=_read_thresholds(resources))
    free = _check_evaluations(result)["free_disk"]
    assert (free.passed, free.severity) == (False, dg.AssetCheckSeverity.WARN)
    if settings.external_database_url() is None:  # no filesystem is 101 % free: ERROR
        space = _check_evaluations(result)["wal_archive_space"]
        assert (space.passed, space.severity) == (False, dg.AssetCheckSeverity.ERROR)


def test_sla_checks_fail_when_a_target_is_impossible(resources, loaded, monkeypatch, tmp_path):
    # targets no machine misses, however busy (the story's are measured by bench/, not here)
    for name, value in (("INSERT_P99_MS", "60000"), ("BULK_ROWS_PER_S", "1"),
                        ("LATEST_P95_MS", "60000"), ("RANGE_P95_MS", "60000")):
        monkeypatch.setenv(f"SR_PLATFORM_SLA_{name}", value)
    result = dg.materialize([sla_benchmark], resources=_read_thresholds(resources))
    assert result.success
    assert all(c.passed for c in _check_evaluations(result).values())
    assert set(_check_evaluations(result)) == set(SLA_CHECKS)
    with dg.instance_for_test() as instance:  # the writes and the probe's leaves rolled back
        assert _sla_probe_traces(loaded, instance) == {"tables": [], "partitions": 0,
                                                       "registry": 0, "dagster": []}
    monkeypatch.setenv("SR_PLATFORM_SLA_INSERT_P99_MS", "0.000001")
    with dg.instance_for_test() as instance:
        result = dg.materialize([sla_benchmark], resources=_read_thresholds(resources),
                                raise_on_error=False, instance=instance)
        checks = _check_evaluations(result)
        assert not checks["single_insert_under_target"].passed
        assert checks["single_insert_under_target"].severity == dg.AssetCheckSeverity.ERROR
        assert not result.success  # blocking: the run fails
        # one alert, not two: check_failure_alert pages the check; the run's alert stays quiet
        run_failure_alert(_failure_context(instance, result.run_id,
                                           AlertChannel(log=str(tmp_path / "alerts.log"))))
        assert not (tmp_path / "alerts.log").exists()


def _sla_probe_traces(url: str, instance: dg.DagsterInstance) -> dict:
    with psycopg.connect(db.libpq_url(url)) as conn:
        return {
            "tables": [r[0] for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relname ILIKE '%sla_probe%' ORDER BY 1")],
            "partitions": conn.execute("SELECT count(*) FROM list_partitions() WHERE "
                                       "instrument = 'SLA_PROBE'").fetchone()[0],
            "registry": conn.execute("SELECT count(*) FROM event_id_registry WHERE "
                                     "instrument = 'SLA_PROBE'").fetchone()[0],
            "dagster": [p for p in instance.get_dynamic_partitions("instruments")
                        if "SLA" in p]}


def test_sla_with_no_events_warns_not_measured_and_leaves_no_probe(server_url, make_db,
                                                                     tmp_path, monkeypatch):
    url = make_db(server_url)  # migrated, no events
    resources = {"postgres": PostgresResource(database_url=url),
                 "backups": BackupStore(path=str(tmp_path / "backups"))}
    for name, value in (("INSERT_P99_MS", "60000"), ("BULK_ROWS_PER_S", "1")):
        monkeypatch.setenv(f"SR_PLATFORM_SLA_{name}", value)
    none = {"tables": [], "partitions": 0, "registry": 0, "dagster": []}
    with dg.instance_for_test() as instance:
        # what an older version left: a committed probe pair and its Dagster partition
        with psycopg.connect(db.libpq_url(url), autocommit=True) as conn:
            conn.execute("SELECT ensure_partition('SLA_PROBE', 'H1')")
        instance.add_dynamic_partitions("instruments", ["SLA_PROBE"])
        assert _sla_probe_traces(url, instance)["tables"]
        result = dg.materialize([sla_benchmark], resources=_read_thresholds(resources),
                                instance=instance)
        assert result.success  # WARN blocks nothing
        checks = _check_evaluations(result)
        for name in ("latest_by_instrument_under_target", "range_query_under_target"):
            assert (checks[name].passed, checks[name].severity, checks[name].description) == (
                False, dg.AssetCheckSeverity.WARN, "not measured: no events in any pair yet")
        for name in ("single_insert_under_target", "bulk_load_meets_target"):
            assert checks[name].passed
        assert _sla_probe_traces(url, instance) == none
        # partition maintenance after the SLA job finds no probe to register
        dg.materialize([partition_maintenance], resources=resources, instance=instance)
        assert _sla_probe_traces(url, instance) == none


def test_every_check_has_a_description():
    graph = defs.resolve_asset_graph()
    keys = sorted(graph.asset_check_keys, key=str)
    assert len(keys) == 16
    missing = [str(k) for k in keys if not (graph.get_check_spec(k).description or "").strip()]
    assert missing == []


def test_partition_maintenance_registers_pairs_and_is_idempotent(resources):
    with dg.instance_for_test() as instance:
        first = dg.materialize([partition_maintenance], resources=resources, instance=instance)
        meta = first.asset_materializations_for_node("partition_maintenance")[0].metadata
        assert meta["leaves_created"].value == 0
        assert meta["pairs"].value == 8
        assert sorted(instance.get_dynamic_partitions("instruments")) == ["EUR_USD", "GBP_USD"]
        again = dg.materialize([partition_maintenance], resources=resources, instance=instance)
        meta2 = again.asset_materializations_for_node("partition_maintenance")[0].metadata
        assert (meta2["leaves_created"].value, meta2["dagster_partitions_added"].value) == (0, 0)


def test_schedules_are_on_and_request_their_jobs():
    expected = {"nightly_backup": ("0 1 * * *", "backup_job"),
                "nightly_retention": ("0 2 * * *", "retention_job"),
                "hourly_health": ("5 * * * *", "health_job"),
                "weekly_sla": ("0 3 * * 0", "sla_job"),
                "daily_partition_maintenance": ("30 0 * * *", "partition_maintenance_job")}
    for name, (cron, job) in expected.items():
        schedule = defs.get_schedule_def(name)
        assert (schedule.cron_schedule, schedule.job_name) == (cron, job)
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        assert schedule.execution_timezone == "UTC"
        ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 1, tzinfo=UTC))
        requests = list(schedule.evaluate_tick(ctx).run_requests)
        assert len(requests) == 1


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def _failure_context(instance: dg.DagsterInstance, run_id: str,
                     alerts: AlertChannel) -> dg.RunFailureSensorContext:
    failure = next(e for e in instance.all_logs(run_id)
                   if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE")
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert", dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id), dagster_event=failure.dagster_event,
        resources={"alerts": alerts}).for_run_failure()


def test_run_failure_alert_reaches_a_webhook_and_the_log(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    alerts = AlertChannel(log=str(tmp_path / "alerts.log"),
                          webhook=f"http://127.0.0.1:{server.server_port}/alert")

    @dg.op
    def boom():
        raise RuntimeError("disk on fire")

    @dg.job
    def failing():
        boom()

    try:
        with dg.instance_for_test() as instance:
            result = failing.execute_in_process(instance=instance, raise_on_error=False)
            assert not result.success
            run_failure_alert(_failure_context(instance, result.run_id, alerts))
    finally:
        server.shutdown()
    assert len(_Hook.received) == 1
    sent = _Hook.received[0]
    assert (sent["job"], sent["run_id"]) == ("failing", result.run_id)
    assert "boom" in sent["error"]
    line = json.loads((tmp_path / "alerts.log").read_text().splitlines()[0])
    assert (line["job"], line["run_id"], line["webhook"]) == ("failing", result.run_id, 204)


def test_the_code_location_loads_as_dagster_loads_it(tmp_path):
    """One Definitions object at module scope, every resource and job resolvable: what
    `dagster dev` needs before any UI page works."""
    import os
    import subprocess

    out = subprocess.run(["dagster", "definitions", "validate", "-m", "sr_platform.definitions"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env=dict(os.environ, DAGSTER_HOME=str(tmp_path)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Validation successful for code location" in out.stdout + out.stderr


def test_thresholds_resource_reads_the_environment_once(monkeypatch):
    """SR_PLATFORM_HEALTH_* / SR_PLATFORM_SLA_* are read when the resource is built (the code
    location's load), not when a run uses it; its config holds every field of the core
    settings it stands for."""
    monkeypatch.setenv("SR_PLATFORM_HEALTH_FREE_DISK_PCT_WARN", "30")
    monkeypatch.setenv("SR_PLATFORM_SLA_RANGE_P95_MS", "250")
    built = OperationsThresholds.from_env()
    monkeypatch.setenv("SR_PLATFORM_HEALTH_FREE_DISK_PCT_WARN", "40")
    assert built.health_thresholds() == health.Thresholds(free_disk_pct=(30.0, 10.0))
    assert built.sla_targets() == sla.Targets(range_p95_ms=250.0)
    assert built.health.free_disk_pct == [30.0, 10.0]  # as the UI shows it
    assert OperationsThresholds.from_env().health_thresholds().free_disk_pct == (40.0, 10.0)
