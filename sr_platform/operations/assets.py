"""Operations: retention, backups proven by restore, partition maintenance, health and SLA
figures, each an asset in the `operations` group so its history plots in the UI."""

from datetime import datetime

import dagster as dg

from ..core import backup_cycle, health, maintenance, retention, sla
from ..resources import PostgresResource
from .resources import BackupStore, OperationsThresholds

GROUP = "operations"


def _md_table(rows: list[dict], limit: int = 50) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("(none)")
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows[:limit]:
        lines.append("| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |")
    if len(rows) > limit:
        lines.append(f"\n{len(rows) - limit} more rows")
    return dg.MetadataValue.md("\n".join(lines))


def _number(v) -> dg.MetadataValue:
    if v is None:
        return dg.MetadataValue.text("n/a")
    return dg.MetadataValue.int(v) if isinstance(v, int) else dg.MetadataValue.float(float(v))


def _figures(values: dict) -> dict:
    """Numbers as numbers (so they plot), text as text, and beside each `<x>_bytes` figure a
    readable `<x>_size` ('1.23 GB')."""
    meta: dict = {}
    for k, v in values.items():
        meta[k] = v if isinstance(v, str) else _number(v)
        if k.endswith("_bytes"):
            meta[k.removesuffix("_bytes") + "_size"] = dg.MetadataValue.text(
                health.readable_bytes(v))
    return meta


class RetentionConfig(dg.Config):
    as_of: str | None = None  # ISO 8601 with offset; default: now
    dry_run: bool = False
    archive: bool = False  # write pruned rows to Parquet under the backup directory


@dg.asset(group_name=GROUP, deps=["database_schema"], kinds={"postgres"},
          description="Applies the retention policy: events (and their levels, by cascade) "
                      "older than 2 years, features older than 5 years, quarantine older than "
                      "1 year, load log older than 2 years; batched per leaf.")
def retention_pruning(context: dg.AssetExecutionContext, config: RetentionConfig,
                      postgres: PostgresResource, backups: BackupStore,
                      thresholds: OperationsThresholds) -> dg.MaterializeResult:
    as_of = datetime.fromisoformat(config.as_of.replace("Z", "+00:00")) if config.as_of \
        else None
    r = retention.prune(postgres.url(), as_of=as_of, dry_run=config.dry_run,
                        archive_dir=backups.directory() / "archive" if config.archive else None,
                        policy=thresholds.retention_policy())
    context.log.info(f"retention as of {r.as_of.isoformat()}: {r.rows}")
    meta: dict = {f"rows_pruned_{t}": v for t, v in r.rows.items()}
    meta |= {f"oldest_{t}": dg.MetadataValue.text(v.isoformat() if v else "-")
             for t, v in r.oldest.items()}
    meta |= {"seconds": round(r.seconds, 3), "dry_run": r.dry_run,
             "as_of": r.as_of.isoformat(),
             "cutoffs": dg.MetadataValue.json({t: c.isoformat() for t, c in r.cutoffs.items()}),
             "partitions": _md_table([{"table": lp.table, "partition": lp.partition,
                                       "rows": lp.rows, "seconds": round(lp.seconds, 3)}
                                      for lp in r.leaves]),
             "archived": dg.MetadataValue.json([str(p) for p in r.archived])}
    return dg.MaterializeResult(metadata=meta)


@dg.asset(group_name=GROUP, deps=["database_schema"], kinds={"postgres"},
          check_specs=[dg.AssetCheckSpec("backup_restores", asset="database_backup",
                                         blocking=True,
                                         description="The new backup restored into a scratch "
                                                     "database has the manifest's row counts "
                                                     "and revision.")],
          description="A logical backup (pg_dump, one snapshot, with manifest) and, on the "
                      "local cluster, a physical base backup for point-in-time recovery; "
                      "rotation (7 daily, 4 weekly) and WAL cleanup.")
def database_backup(context: dg.AssetExecutionContext, postgres: PostgresResource,
                    backups: BackupStore):
    c = backup_cycle.run(postgres.url(), root=backups.directory(),
                         dagster_url=backups.dagster_url())
    b, outcome = c.logical, c.verification
    meta: dict = {"backup_id": b.id, "path": dg.MetadataValue.path(str(b.path)),
                  "logical_bytes": b.bytes, "logical_seconds": round(b.seconds, 3),
                  "row_counts": dg.MetadataValue.json(b.row_counts),
                  "logical_backups_removed": len(c.rotated_logical),
                  "leftovers_removed": dg.MetadataValue.json(c.cleaned),
                  "restore_seconds": outcome["restore_seconds"]}
    if c.base is not None:  # physical backups: the local cluster
        meta |= {"base_backup_id": c.base.id, "base_backup_bytes": c.base.bytes,
                 "base_backup_seconds": round(c.base.seconds, 3),
                 "base_backups_removed": len(c.rotated_base)}
    yield dg.MaterializeResult(metadata=meta)
    yield dg.AssetCheckResult(check_name="backup_restores", passed=outcome["ok"],
                              severity=dg.AssetCheckSeverity.ERROR,
                              metadata={"mismatched_tables": dg.MetadataValue.json(
                                  outcome["mismatched_tables"]),
                                  "restore_seconds": outcome["restore_seconds"]})


@dg.asset(group_name=GROUP, deps=["database_schema"], kinds={"postgres"},
          description="Every known (instrument, granularity) has its leaf in every table; "
                      "stale leaves are analyzed; leaves, rows and bytes reported.")
def partition_maintenance(context: dg.AssetExecutionContext,
                          postgres: PostgresResource) -> dg.MaterializeResult:
    from ..events.partitions import instruments

    known = set(context.instance.get_dynamic_partitions(instruments.name))
    r = maintenance.run(postgres.url())
    in_db = sorted({i for _, _, _, i, *_ in r.leaves} - known)
    if in_db:  # pairs loaded outside Dagster get their Dagster partitions too
        context.instance.add_dynamic_partitions(instruments.name, in_db)
    return dg.MaterializeResult(metadata={
        "pairs": r.pairs, "leaves": len(r.leaves), "leaves_created": r.leaves_created,
        "leaves_analyzed": len(r.analyzed), "rows_estimate": r.rows, "bytes": r.bytes,
        "dagster_partitions_added": len(in_db),
        "analyzed": dg.MetadataValue.json(r.analyzed[:200])})


HEALTH_CHECKS = health.CHECK_NAMES  # every check health.collect() reports


@dg.asset(group_name=GROUP, deps=["database_schema"], kinds={"postgres"},
          check_specs=[dg.AssetCheckSpec(c, asset="database_health",
                                         description=health.CHECK_DESCRIPTIONS[c])
                       for c in HEALTH_CHECKS],
          description="Sizes, rows, dead tuples, vacuum, cache hits, connections, long "
                      "queries, backup age, oldest rows, WAL archiving, top statements; "
                      "checked against the WARN and ERROR thresholds of the `thresholds` "
                      "resource.")
def database_health(context: dg.AssetExecutionContext, postgres: PostgresResource,
                    backups: BackupStore, thresholds: OperationsThresholds):
    h = health.collect(postgres.url(), backup_root=backups.directory(),
                       thresholds=thresholds.health_thresholds(),
                       policy=thresholds.retention_policy())
    meta: dict = _figures(h.metrics)
    meta |= {f"oldest_{t}": dg.MetadataValue.text(v.isoformat() if v else "-")
             for t, v in h.oldest.items()}
    meta["top_statements"] = _md_table(h.top_statements)
    meta["partitions"] = _md_table([{k: v for k, v in p.items() if k != "writes"}
                                    | {"size": health.readable_bytes(p["bytes"])}
                                    for p in h.partitions], limit=120)
    if h.notes:
        meta["notes"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in h.notes))
    yield dg.MaterializeResult(metadata=meta)
    for c in h.checks:
        yield dg.AssetCheckResult(
            check_name=c.name, passed=c.level == "ok",
            severity=dg.AssetCheckSeverity.ERROR if c.level == "error"
            else dg.AssetCheckSeverity.WARN,
            description=c.summary, metadata=_figures(c.metadata))


SLA_CHECKS = tuple(sla.CHECKS)


@dg.asset(group_name=GROUP, deps=["database_schema"], kinds={"postgres"},
          check_specs=[dg.AssetCheckSpec(c, asset="sla_benchmark", blocking=True,
                                         description=sla.CHECK_DESCRIPTIONS[c]
                                         + sla.SEVERITY_NOTE)
                       for c in SLA_CHECKS],
          description="The story's targets measured against the live database (writes in a "
                      "rolled-back transaction): single insert < 10 ms, bulk >= 1,000 rows/s, "
                      "latest events by instrument < 100 ms, a 10,000-row range < 500 ms.")
def sla_benchmark(context: dg.AssetExecutionContext, postgres: PostgresResource,
                  thresholds: OperationsThresholds):
    from ..events.partitions import instruments

    targets = thresholds.sla_targets()
    measured = sla.measure(postgres.url())
    probe = sla.SLA_PAIR[0]  # an older version's probe registered a Dagster partition
    if probe in context.instance.get_dynamic_partitions(instruments.name):
        context.instance.delete_dynamic_partition(instruments.name, probe)
    meta: dict = {}
    for name, values in measured.items():
        for k, v in values.items():
            meta[f"{name}_{k}"] = v if isinstance(v, str) else _number(v)
    yield dg.MaterializeResult(metadata=meta)
    verdicts = sla.verdicts(measured, targets)
    for check in SLA_CHECKS:
        met, text = verdicts[check]
        # not measured is no pass, but no missed target either: WARN, which blocks nothing
        yield dg.AssetCheckResult(check_name=check, passed=bool(met),
                                  severity=dg.AssetCheckSeverity.WARN if met is None
                                  else dg.AssetCheckSeverity.ERROR, description=text)
