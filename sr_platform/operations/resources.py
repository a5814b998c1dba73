"""Resources of the operations domain."""

import dataclasses
from pathlib import Path

import dagster as dg

from ..core import backup, health, sla


class BackupStore(dg.ConfigurableResource):
    """Where backups and retention archives go (SR_PLATFORM_BACKUP_DIR, default backups/)."""

    path: str | None = None

    def directory(self) -> Path:
        return Path(self.path).resolve() if self.path else backup.backup_dir()


class HealthThresholds(dg.Config):
    """health.Thresholds as config: each (warn, error) pair a two-element list."""

    backup_age_hours: list[float]
    retention_lag_days: list[float]
    dead_tuple_ratio: list[float]
    free_disk_pct: list[float]
    min_rows_for_dead_ratio: int
    wal_archive_gb: float
    wal_archive_free_pct: list[float]


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
    """The health checks' thresholds and the SLA checks' targets, as resource config (the UI
    shows them on the resource). The code location reads them once, when it loads
    (from_env: SR_PLATFORM_HEALTH_* and SR_PLATFORM_SLA_* over the defaults), and the assets
    hand them to core."""

    health: HealthThresholds
    sla: SlaTargets

    @classmethod
    def from_env(cls) -> "OperationsThresholds":
        return cls(health=HealthThresholds(**_as_config(health.Thresholds.from_env())),
                   sla=SlaTargets(**_as_config(sla.Targets.from_env())))

    def health_thresholds(self) -> health.Thresholds:
        return _as_settings(health.Thresholds, self.health)

    def sla_targets(self) -> sla.Targets:
        return _as_settings(sla.Targets, self.sla)
