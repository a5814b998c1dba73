"""Alerts, each a line in SR_PLATFORM_ALERT_LOG (default .sr_platform/alerts.log) and a JSON
POST to SR_PLATFORM_ALERT_WEBHOOK when set:
- run_failure_alert: every failed run, except one failed only by blocking checks at ERROR
  (check_failure_alert pages those, so a failed SLA target is one alert, not two);
- check_failure_alert: every asset check of any asset (health, SLA, events, backup) that fails
  at ERROR severity, once when it starts failing (not on every run while it stays failed).
  Its first pass over an instance's history pages only what is still failing at its end."""

import json
from datetime import UTC, datetime

import dagster as dg

from ..core.alerts import send_alert, write_line
from ..core.settings import Alerts
from .resources import AlertChannel


@dg.run_failure_sensor(name="run_failure_alert", default_status=dg.DefaultSensorStatus.RUNNING,
                       monitor_all_code_locations=False,
                       description="Writes an alert line to SR_PLATFORM_ALERT_LOG (default "
                                   ".sr_platform/alerts.log) and POSTs JSON to "
                                   "SR_PLATFORM_ALERT_WEBHOOK when set.")
def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertChannel) -> None:
    run = context.dagster_run
    steps = context.get_step_failure_events()
    if steps and all(_blocking_check_failure(e) for e in steps):
        return  # check_failure_alert pages it, with the check, partition and figures: once
    error = context.failure_event.message or "run failed"
    send_alert(run.job_name, run.run_id, error, alerts.target())


def _blocking_check_failure(event: dg.DagsterEvent) -> bool:
    error = event.step_failure_data.error
    return error is not None and error.cls_name == "DagsterAssetCheckFailedError"


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


class _Evaluation:
    """One ASSET_CHECK_EVALUATION record, as the alert needs it."""

    def __init__(self, record: dg.EventLogRecord, instance: dg.DagsterInstance,
                 runs: dict[str, str | None]):
        self.entry = record.event_log_entry
        ev = self.entry.dagster_event.asset_check_evaluation_data
        asset = ev.asset_key.to_user_string()
        partition = _partition(record, instance, runs)
        self.key = (asset, ev.check_name, partition)
        self.error = not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
        self.passed = ev.passed
        self.details = _details(ev, asset, partition)
        self.when = datetime.fromtimestamp(self.entry.timestamp, UTC)
        self.where = f"check {ev.check_name} on {asset}{f' [{partition}]' if partition else ''}"

    def alert(self, to: Alerts) -> None:
        send_alert(self.entry.job_name or "", self.entry.run_id,
                   f"{self.where} failed (ERROR): "
                   f"{self.details['description'] or 'no description'}",
                   to, when=self.when, details=self.details)

    def resolved(self, to: Alerts) -> None:
        write_line({"job": self.entry.job_name, "run_id": self.entry.run_id, "resolved": True,
                    "error": f"{self.where} {'passed' if self.passed else 'is at WARN'}",
                    "time": self.when.isoformat(), **self.details}, to.log)


def _key_order(key: tuple) -> tuple:
    return tuple(x or "" for x in key)


@dg.sensor(name="check_failure_alert", default_status=dg.DefaultSensorStatus.RUNNING,
           minimum_interval_seconds=30,
           description="Every asset check that fails at ERROR severity (health, SLA, events, "
                       "backup) becomes one alert (SR_PLATFORM_ALERT_LOG, and "
                       "SR_PLATFORM_ALERT_WEBHOOK when set) when it starts failing: the "
                       "previous evaluation of that check and partition passed, failed at "
                       "WARN, or there was none. While it stays failed it alerts no more; "
                       "its recovery is logged as a 'resolved' line. Its first pass over "
                       "the instance's history pages only what still fails at its end.")
def check_failure_alert(context: dg.SensorEvaluationContext,
                        alerts: AlertChannel) -> dg.SkipReason:
    storage = context.instance.event_log_storage
    if storage.is_run_sharded:  # its event ids are per run: no cursor across runs
        return dg.SkipReason("this Dagster instance's event log is run-sharded (Dagster's "
                             "default SQLite); check alerts need the project's instance "
                             "(dagster.yaml: PostgreSQL storage)")
    # cursor: the last evaluation read (storage id); the (asset, check, partition) keys whose
    # latest evaluation failed at ERROR (already alerted); and, until the sensor's first pass
    # over the instance's history is done, the evaluation each failing key started failing
    # with: history is not paged, only what is still failing once it is read
    state = json.loads(context.cursor) if context.cursor else \
        {"after": None, "failing": [], "catch_up": []}
    failing = {tuple(k) for k in state["failing"]}
    catch_up = {tuple(k[:-1]): k[-1] for k in state["catch_up"]} \
        if state["catch_up"] is not None else None
    records = storage.get_event_records(
        dg.EventRecordsFilter(dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                              after_cursor=state["after"]), limit=BATCH, ascending=True)
    runs: dict[str, str | None] = {}
    to = alerts.target()
    alerted = resolved = 0
    for record in records:
        ev = _Evaluation(record, context.instance, runs)
        if ev.error and ev.key not in failing:
            failing.add(ev.key)
            if catch_up is None:
                ev.alert(to)
                alerted += 1
            else:
                catch_up[ev.key] = record.storage_id
        elif not ev.error and ev.key in failing:
            failing.discard(ev.key)
            if catch_up is None:
                ev.resolved(to)
                resolved += 1
            else:
                catch_up.pop(ev.key)
    if catch_up is not None and len(records) < BATCH:  # history read: page what still fails
        if catch_up:
            for record in storage.get_event_records(dg.EventRecordsFilter(
                    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                    storage_ids=sorted(catch_up.values())), ascending=True):
                _Evaluation(record, context.instance, runs).alert(to)
                alerted += 1
        catch_up = None
    context.update_cursor(json.dumps({
        "after": records[-1].storage_id if records else state["after"],
        "failing": sorted(failing, key=_key_order),
        "catch_up": None if catch_up is None else
        [[*k, sid] for k, sid in sorted(catch_up.items(), key=lambda i: _key_order(i[0]))]}))
    return dg.SkipReason(f"{len(records)} check evaluations read: {alerted} alerts, "
                         f"{resolved} resolved; {len(failing)} checks failing at ERROR")
