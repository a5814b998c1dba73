"""The operations domain's parts, assembled by sr_platform.definitions (one Definitions
object per code location: Dagster refuses a second at module scope)."""

from ..core import settings
from .assets import (
    database_backup,
    database_health,
    partition_maintenance,
    retention_pruning,
    sla_benchmark,
)
from .jobs import backup_job, health_job, partition_maintenance_job, retention_job, sla_job
from .resources import AlertChannel, BackupStore, OperationsThresholds
from .schedules import schedules
from .sensors import check_failure_alert, run_failure_alert

assets = [retention_pruning, database_backup, partition_maintenance, database_health,
          sla_benchmark]
jobs = [retention_job, backup_job, partition_maintenance_job, health_job, sla_job]
sensors = [run_failure_alert, check_failure_alert]


def resources(s: settings.Settings, env_or_default) -> dict:
    """The operations resources from the settings read when the code location loads: the
    thresholds, targets and retention policy as config the UI shows; paths and URLs as
    EnvVars when their variables are set (`env_or_default`), so the UI never shows a URL."""
    return {"backups": BackupStore(path=env_or_default(settings.BACKUP_DIR_ENV),
                                   dagster_storage_url=env_or_default(
                                       settings.DAGSTER_STORAGE_URL_ENV)),
            "alerts": AlertChannel(log=env_or_default(settings.ALERT_LOG_ENV),
                                   webhook=env_or_default(settings.ALERT_WEBHOOK_ENV)),
            "thresholds": OperationsThresholds.from_settings(s)}


__all__ = ["assets", "jobs", "resources", "schedules", "sensors"]
