"""The operations domain's definitions (assembled by sr_platform.definitions)."""

import dagster as dg

from .assets import (
    database_backup,
    database_health,
    partition_maintenance,
    retention_pruning,
    sla_benchmark,
)
from .jobs import backup_job, health_job, partition_maintenance_job, retention_job, sla_job
from .resources import BackupStore
from .schedules import schedules
from .sensors import run_failure_alert

defs = dg.Definitions(
    assets=[retention_pruning, database_backup, partition_maintenance, database_health,
            sla_benchmark],
    jobs=[retention_job, backup_job, partition_maintenance_job, health_job, sla_job],
    schedules=schedules,
    sensors=[run_failure_alert],
    resources={"backups": BackupStore()},
)
