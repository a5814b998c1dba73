"""Every operations job on a UTC schedule, on by default."""

import dagster as dg

from .jobs import backup_job, health_job, partition_maintenance_job, retention_job, sla_job

RUNNING = dg.DefaultScheduleStatus.RUNNING

nightly_backup = dg.ScheduleDefinition(
    name="nightly_backup", job=backup_job, cron_schedule="0 1 * * *",
    execution_timezone="UTC", default_status=RUNNING)
nightly_retention = dg.ScheduleDefinition(
    name="nightly_retention", job=retention_job, cron_schedule="0 2 * * *",
    execution_timezone="UTC", default_status=RUNNING)
hourly_health = dg.ScheduleDefinition(
    name="hourly_health", job=health_job, cron_schedule="5 * * * *",
    execution_timezone="UTC", default_status=RUNNING)
weekly_sla = dg.ScheduleDefinition(
    name="weekly_sla", job=sla_job, cron_schedule="0 3 * * 0",
    execution_timezone="UTC", default_status=RUNNING)
daily_partition_maintenance = dg.ScheduleDefinition(
    name="daily_partition_maintenance", job=partition_maintenance_job,
    cron_schedule="30 0 * * *", execution_timezone="UTC", default_status=RUNNING)

schedules = [nightly_backup, nightly_retention, hourly_health, weekly_sla,
             daily_partition_maintenance]
