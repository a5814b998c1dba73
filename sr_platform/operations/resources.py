"""Resources of the operations domain."""

import dataclasses
from pathlib import Path

import dagster as dg

from ..core import health, retention, settings, sla


class BackupStore(dg.ConfigurableResource):
    """Where backups and retention archives go (SR_PLATFORM_BACKUP_DIR, default backups/),
    and Dagster's storage URL, whose database backups include (SR_PLATFORM_DAGSTER_STORAGE_URL;
    unset: found on the local cluster). Unset fields take the settings' defaults when used."""

    path: str | None = None
    dagster_storage_url: str | None = None

    def directory(self) -> Path:
        return Path(self.path).resolve() if self.path else settings.backup_dir()

    def dagster_url(self) -> str | None:
        return self.dagster_storage_url or settings.Database.from_env().dagster_storage_url


class AlertChannel(dg.ConfigurableResource):
    """Where the alert sensors write (SR_PLATFORM_ALERT_LOG, default .sr_platform/alerts.log)
    and POST (SR_PLATFORM_ALERT_WEBHOOK). Unset fields take the settings' defaults when used."""

    log: str | None = None
    webhook: str | None = None

    def target(self) -> settings.Alerts:
        default = settings.Alerts.from_env()
        return settings.Alerts(Path(self.log) if self.log else default.log,
                               self.webhook or default.webhook)


class HealthThresholds(dg.Config):
    """health.Thresholds as config: each (warn, error) pair a two-element list."""

    backup_age_hours: list[float]
    retention_lag_days: list[float]
    dead_tuple_ratio: list[float]
    free_disk_pct: list[float]
    min_rows_for_dead_ratio: int
    wal_archive_gb: float
    wal_archive_free_pct: list[float]


class RetentionPolicy(dg.Config):
    """retention.Policy as config."""

    events_years: int
    features_years: int
    rejected_days: int
    load_log_days: int
    change_log_days: int


class SlaTargets(dg.Config):
    """sla.Targets as config."""

    insert_p99_ms: float
    bulk_rows_per_s: float
    latest_p95_ms: float
    range_p95_ms: float


def _as_config(values: object) -> dict:
    """A frozen settings dataclass as config values (tuples become lists)."""
    return {f.name: list(v) if isinstance(v := getattr(values, f.name), tuple) else v
            for f in dataclasses.fields(values)}


def _as_settings(cls: type, config: dg.Config) -> object:
    """Config values back into the frozen settings dataclass `cls` (lists become tuples)."""
    return cls(**{f.name: tuple(v) if isinstance(v := getattr(config, f.name), list) else v
                  for f in dataclasses.fields(cls)})


class OperationsThresholds(dg.ConfigurableResource):
    """The health checks' thresholds, the SLA checks' targets and the retention policy, as
    resource config (the UI shows them on the resource). The code location reads them once,
    when it loads (from_env: SR_PLATFORM_HEALTH_*, SR_PLATFORM_SLA_* and
    SR_PLATFORM_RETENTION_* over the defaults), and the assets hand them to core."""

    health: HealthThresholds
    sla: SlaTargets
    retention: RetentionPolicy

    @classmethod
    def from_env(cls) -> "OperationsThresholds":
        return cls.from_settings(settings.from_env())

    @classmethod
    def from_settings(cls, s: settings.Settings) -> "OperationsThresholds":
        return cls(health=HealthThresholds(**_as_config(s.health)),
                   sla=SlaTargets(**_as_config(s.sla)),
                   retention=RetentionPolicy(**_as_config(s.retention)))

    def retention_policy(self) -> retention.Policy:
        return _as_settings(retention.Policy, self.retention)

    def health_thresholds(self) -> health.Thresholds:
        return _as_settings(health.Thresholds, self.health)

    def sla_targets(self) -> sla.Targets:
        return _as_settings(sla.Targets, self.sla)
