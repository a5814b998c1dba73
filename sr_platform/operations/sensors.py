"""Alerts, each a line in SR_PLATFORM_ALERT_LOG (default .sr_platform/alerts.log) and a JSON
POST to SR_PLATFORM_ALERT_WEBHOOK when set:
- run_failure_alert: every failed run;
- check_failure_alert: every asset check of any asset (health, SLA, events, backup) that fails
  at ERROR severity, once when it starts failing (not on every run while it stays failed)."""

import json
from datetime import UTC, datetime

import dagster as dg

from ..core.alerts import send_alert, write_line


@dg.run_failure_sensor(name="run_failure_alert", default_status=dg.DefaultSensorStatus.RUNNING,
                       monitor_all_code_locations=False,
                       description="Writes an alert line to SR_PLATFORM_ALERT_LOG (default "
                                   ".sr_platform/alerts.log) and POSTs JSON to "
                                   "SR_PLATFORM_ALERT_WEBHOOK when set.")
def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    error = context.failure_event.message or "run failed"
    send_alert(run.job_name, run.run_id, error)


BATCH = 1000  # evaluations read per tick; the next tick goes on from the cursor


def _figure(value: dg.MetadataValue):
    """A metadata value as JSON can carry it (numbers stay numbers)."""
    v = value.value
    return v if isinstance(v, int | float | str | bool | None | list | dict) else str(v)


def _partition(record: dg.EventLogRecord, instance: dg.DagsterInstance,
               runs: dict[str, str | None]) -> str | None:
    """The evaluation's partition, else its run's (a partitioned run's unpartitioned check)."""
    evaluation = record.event_log_entry.dagster_event.asset_check_evaluation_data
    if evaluation.partition is not None:
        return evaluation.partition
    run_id = record.event_log_entry.run_id
    if run_id not in runs:
        run = instance.get_run_by_id(run_id)
        runs[run_id] = run.tags.get("dagster/partition") if run else None
    return runs[run_id]


def _details(evaluation, asset: str, partition: str | None) -> dict:
    return {"check": evaluation.check_name, "asset": asset, "partition": partition,
            "severity": evaluation.severity.value, "description": evaluation.description,
            "metadata": {k: _figure(v) for k, v in evaluation.metadata.items()}}


@dg.sensor(name="check_failure_alert", default_status=dg.DefaultSensorStatus.RUNNING,
           minimum_interval_seconds=30,
           description="Every asset check that fails at ERROR severity (health, SLA, events, "
                       "backup) becomes one alert (SR_PLATFORM_ALERT_LOG, and "
                       "SR_PLATFORM_ALERT_WEBHOOK when set) when it starts failing: the "
                       "previous evaluation of that check and partition passed, failed at "
                       "WARN, or there was none. While it stays failed it alerts no more; "
                       "its recovery is logged as a 'resolved' line.")
def check_failure_alert(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    storage = context.instance.event_log_storage
    if storage.is_run_sharded:  # its event ids are per run: no cursor across runs
        return dg.SkipReason("this Dagster instance's event log is run-sharded (Dagster's "
                             "default SQLite); check alerts need the project's instance "
                             "(dagster.yaml: PostgreSQL storage)")
    # cursor: the last evaluation read (storage id) and the (asset, check, partition) keys
    # whose latest evaluation failed at ERROR, i.e. those already alerted
    state = json.loads(context.cursor) if context.cursor else {"after": None, "failing": []}
    failing = {tuple(k) for k in state["failing"]}
    records = storage.get_event_records(
        dg.EventRecordsFilter(dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                              after_cursor=state["after"]), limit=BATCH, ascending=True)
    runs: dict[str, str | None] = {}
    alerted = resolved = 0
    for record in records:
        entry = record.event_log_entry
        evaluation = entry.dagster_event.asset_check_evaluation_data
        asset = evaluation.asset_key.to_user_string()
        partition = _partition(record, context.instance, runs)
        key = (asset, evaluation.check_name, partition)
        error = not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        details = _details(evaluation, asset, partition)
        when = datetime.fromtimestamp(entry.timestamp, UTC)
        where = f"{asset}{f' [{partition}]' if partition else ''}"
        if error and key not in failing:
            failing.add(key)
            alerted += 1
            send_alert(entry.job_name or "", entry.run_id,
                       f"check {evaluation.check_name} on {where} failed (ERROR): "
                       f"{evaluation.description or 'no description'}", when=when,
                       details=details)
        elif not error and key in failing:
            failing.discard(key)
            resolved += 1
            write_line({"job": entry.job_name, "run_id": entry.run_id, "resolved": True,
                        "error": f"check {evaluation.check_name} on {where} "
                                 f"{'passed' if evaluation.passed else 'is at WARN'}",
                        "time": when.isoformat(), **details})
    after = records[-1].storage_id if records else state["after"]
    context.update_cursor(json.dumps({"after": after, "failing": sorted(
        failing, key=lambda k: tuple(x or "" for x in k))}))
    return dg.SkipReason(f"{len(records)} check evaluations read: {alerted} alerts, "
                         f"{resolved} resolved; {len(failing)} checks failing at ERROR")
