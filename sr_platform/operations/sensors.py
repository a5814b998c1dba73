"""run_failure_alert: every failed run becomes an alert (log line, and webhook if set)."""

import dagster as dg

from ..core.alerts import send_alert


@dg.run_failure_sensor(name="run_failure_alert", default_status=dg.DefaultSensorStatus.RUNNING,
                       monitor_all_code_locations=False,
                       description="Writes an alert line to SR_PLATFORM_ALERT_LOG (default "
                                   ".sr_platform/alerts.log) and POSTs JSON to "
                                   "SR_PLATFORM_ALERT_WEBHOOK when set.")
def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    error = context.failure_event.message or "run failed"
    send_alert(run.job_name, run.run_id, error)
