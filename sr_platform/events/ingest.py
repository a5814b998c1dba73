"""The ingest_landing_files job (its one op: ingest_files): one run per landing-sensor tick.

An adapter over the ingest service (core/ingest.py), the same unit of work `sr-platform load`
runs: each of the tick's files is loaded ONCE (whole, one transaction per file), then the
levels and features of every (instrument, granularity) the files hold are refreshed, and each
of those partitions is reported as materialized for new_resistance_events,
support_and_resistance_master and event_features, as a run of the partitioned assets would.
The refreshes and the reports start once every file is committed (Ingest(overlap=False)):
the rows are queryable first, and the levels and features follow (issue 16, section 4).

The events asset's checks are reported once per run, over all its partitions. The run holds a
pooled connection to Dagster's storage while it reports (_hold_storage_connections).

Backfills and single-partition runs still go through the partitioned assets (load_events job):
both paths use the same loader, deduplicate by original_event_id and are idempotent.
"""

import time
from pathlib import Path

import dagster as dg
import psycopg

from ..core import ingest, landing, load_summary
from ..resources import PostgresResource
from .partitions import instruments, pair_of_key
from .reporting import check_evaluations, key_of, materializations, outage_retry
from .resources import LandingZone


class IngestConfig(dg.Config):
    files: list[str] = []  # empty (a launch by hand): every event file in the landing zone
    # the partition keys each file holds (the sensor's pre-scan); a partition is refreshed as
    # soon as its last file is loaded. Without it, partitions are those the files loaded rows
    # for, refreshed after the last file.
    partitions_by_file: dict[str, list[str]] = {}


def _hold_storage_connections(instance: dg.DagsterInstance) -> None:
    """Dagster's PostgreSQL storage opens a new connection for every write by default: two per
    materialization, ~20 ms each here (SCRAM authentication), more than the write itself. This
    run reports three materializations per partition, hundreds per tick, so its process holds
    a pooled connection instead, as dagster-webserver's does (statement_timeout 0: none, the
    run worker's default). No-op for other storages (SQLite in tests)."""
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)


@dg.op(
    name="ingest_files",
    out={},
    description="Loads each file once (one transaction per file), then refreshes the levels "
                "and features of every (instrument, granularity) the files hold and reports "
                "each partition as materialized for new_resistance_events, "
                "support_and_resistance_master and event_features, with the events' checks.",
)
def ingest_files(context: dg.OpExecutionContext, config: IngestConfig,
                 postgres: PostgresResource, landing_zone: LandingZone):
    url = postgres.url()
    started = time.perf_counter()
    files = [Path(f) for f in config.files] or landing.event_files(landing_zone.directory())
    expected = {str(f): {pair_of_key(k) for k in config.partitions_by_file.get(str(f), [])}
                for f in files}
    _hold_storage_connections(context.instance)
    known = set(context.instance.get_dynamic_partitions(instruments.name))
    # every file committed before any refresh or materialization: the rows are queryable first,
    # and Dagster's bookkeeping (three events per partition) does not slow the loads
    run = ingest.Ingest(url, files, expected, origin="dagster", raise_on_outage=True,
                        overlap=False)
    reports: list[ingest.PairReport] = []
    try:
        for report in run.pairs():
            instrument = report.pair[0]
            if instrument not in known:  # rows of an instrument the sensor did not announce
                context.instance.add_dynamic_partitions(instruments.name, [instrument])
                known.add(instrument)
            reports.append(report)
            yield from materializations(report)
        catch_all = ingest.catch_all(url)
    except psycopg.OperationalError as exc:
        raise outage_retry() from exc
    reports.sort(key=lambda r: r.pair)
    yield from check_evaluations(ingest.events_checks(
        reports, run.results, catch_all, run.unassigned_rejected, key=key_of))
    for r in run.results:
        if r.error:
            context.log.warning(r.error)
        elif r.ignored_columns:
            context.log.warning(f"{r.path.name}: ignored columns {r.ignored_columns}")
    context.log.info(load_summary.ingest_summary(run.results, len(reports),
                                                  time.perf_counter() - started))
    failed = [r.error for r in run.results if r.database_failed]
    if failed:  # rolled back whole: the run fails, so it is seen (and rerun) rather than lost
        raise dg.Failure(f"{len(failed)} file(s) not loaded", metadata={
            "errors": dg.MetadataValue.md("\n".join(f"- {e}" for e in failed))})

