"""What the ingest service's reports look like in Dagster: one materialization per partition
of each events asset, and the events checks. Shared by the landing run (ingest.py), the
partitioned assets (assets.py) and the sensor that reports loads made outside Dagster
(sensors.py), so a partition reads the same whichever face loaded it."""

from collections.abc import Iterator

import dagster as dg

from ..core import ingest
from .partitions import partition_key

EVENTS, LEVELS, FEATURES = (dg.AssetKey("new_resistance_events"),
                            dg.AssetKey("support_and_resistance_master"),
                            dg.AssetKey("event_features"))


def key_of(pair: tuple[str, str]) -> str:
    return str(partition_key(*pair))


def events_metadata(report: ingest.PairReport) -> dict:
    s = report.stats
    return {"rows_loaded": report.load.loaded,
            "rows_rejected": sum(report.load.rejected_by_file.values()),
            "partition_rows": s.events_rows, "partition_bytes": s.events_bytes,
            "files": len(report.load.files), "dagster/row_count": s.events_rows}


def levels_metadata(report: ingest.PairReport) -> dict:
    lv, s = report.levels, report.stats
    return {"levels": s.levels_rows, "active": lv["active"], "breached": lv["breached"],
            "changed": lv["changed"], "partition_bytes": s.levels_bytes,
            "dagster/row_count": s.levels_rows, "seconds": round(lv["seconds"], 3)}


def features_metadata(report: ingest.PairReport) -> dict:
    ft, s = report.features, report.stats
    return {"rows": ft["rows"], "written": ft["written"], "partition_bytes": s.features_bytes,
            "dagster/row_count": ft["rows"]}


def materializations(report: ingest.PairReport, extra: dict | None = None
                     ) -> Iterator[dg.AssetMaterialization]:
    """The pair's partition of each events asset (levels and features only when the report
    refreshed them)."""
    key, extra = key_of(report.pair), extra or {}
    yield dg.AssetMaterialization(EVENTS, partition=key,
                                  metadata=events_metadata(report) | extra)
    if report.levels is not None:
        yield dg.AssetMaterialization(LEVELS, partition=key,
                                      metadata=levels_metadata(report) | extra)
    if report.features is not None:
        yield dg.AssetMaterialization(FEATURES, partition=key,
                                      metadata=features_metadata(report) | extra)


def severity(outcome: ingest.CheckOutcome) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.WARN if outcome.warn_only else dg.AssetCheckSeverity.ERROR


def check_evaluations(outcomes: list[ingest.CheckOutcome]
                      ) -> Iterator[dg.AssetCheckEvaluation]:
    for o in outcomes:
        yield dg.AssetCheckEvaluation(asset_key=EVENTS, check_name=o.name, passed=o.passed,
                                      severity=severity(o), metadata=o.metadata)


def check_results(outcomes: list[ingest.CheckOutcome]) -> list[dg.AssetCheckResult]:
    return [dg.AssetCheckResult(check_name=o.name, passed=o.passed, severity=severity(o),
                                metadata=o.metadata) for o in outcomes]


OUTAGE_RETRIES, OUTAGE_RETRY_SECONDS = 3, 30


def outage_retry() -> dg.RetryRequested:
    """The database is unreachable or went away: nothing of the file being loaded was
    committed, and files loaded before are found present by the retry (loaded exactly once)."""
    return dg.RetryRequested(max_retries=OUTAGE_RETRIES, seconds_to_wait=OUTAGE_RETRY_SECONDS)
