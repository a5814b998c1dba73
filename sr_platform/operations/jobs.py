import dagster as dg

from .assets import (
    database_backup,
    database_health,
    partition_maintenance,
    retention_pruning,
    sla_benchmark,
)

retention_job = dg.define_asset_job(
    "retention_job", selection=[retention_pruning],
    description="Prune by the retention policy (config: as_of, dry_run, archive).")
backup_job = dg.define_asset_job(
    "backup_job", selection=[database_backup],
    description="Back up, prove the backup by restoring it, rotate.")
partition_maintenance_job = dg.define_asset_job(
    "partition_maintenance_job", selection=[partition_maintenance],
    description="Every pair's leaves in every table; ANALYZE stale leaves.")
health_job = dg.define_asset_job(
    "health_job", selection=[database_health],
    description="Database health figures and checks.")
sla_job = dg.define_asset_job(
    "sla_job", selection=[sla_benchmark],
    description="The story's performance targets, measured on the live database.")
