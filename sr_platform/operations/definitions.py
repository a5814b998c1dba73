"""The operations domain's parts, assembled by sr_platform.definitions (one Definitions
object per code location: Dagster refuses a second at module scope)."""

from .assets import (
    database_backup,
    database_health,
    partition_maintenance,
    retention_pruning,
    sla_benchmark,
)
from .jobs import backup_job, health_job, partition_maintenance_job, retention_job, sla_job
from .resources import BackupStore, OperationsThresholds
from .schedules import schedules
from .sensors import check_failure_alert, run_failure_alert

assets = [retention_pruning, database_backup, partition_maintenance, database_health,
          sla_benchmark]
jobs = [retention_job, backup_job, partition_maintenance_job, health_job, sla_job]
sensors = [run_failure_alert, check_failure_alert]
# the thresholds and targets are read from the environment once, when the code location loads
resources = {"backups": BackupStore(), "thresholds": OperationsThresholds.from_env()}
__all__ = ["assets", "jobs", "resources", "schedules", "sensors"]
