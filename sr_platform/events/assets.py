"""Landing files -> events -> levels -> features, partitioned by (instrument, granularity)."""

from datetime import timedelta
from pathlib import Path

import dagster as dg
import psycopg
from psycopg import sql

from ..core import db, landing, loader
from ..core.catalog import catch_all_rows
from ..core.features import refresh_features
from ..core.levels import refresh_levels
from ..resources import PostgresResource
from .partitions import event_partitions, pair_of
from .resources import LandingZone

landing_files = dg.AssetSpec(
    "landing_files", group_name="events", kinds={"file"},
    description="Event files (CSV/Parquet) in SR_PLATFORM_LANDING_DIR, watched by "
                "landing_zone_sensor. External: Dagster does not produce them.")


# FX trades from Sunday 17:00 to Friday 17:00 New York time (~22:00 UTC; New York time follows
# the DST switch that UTC does not). Each trading day's deadline is 18:00 New York, Monday to
# Friday: by then the asset must have been materialized within the 24 hours before (a trading
# day plus the hour after its close for the last files to land). No deadline falls on Saturday
# or Sunday, so the weekend's lack of events never reads as stale; Monday's window opens on
# Sunday at 18:00, just after the market reopens. The OSS freshness daemon (on by default in
# the dagster-daemon) evaluates it; the UI shows the state on the asset.
EVENTS_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron="0 18 * * 1-5", lower_bound_delta=timedelta(hours=24),
    timezone="America/New_York")


OUTAGE_RETRIES, OUTAGE_RETRY_SECONDS = 3, 30

# the events asset's checks (also reported by the ingest_landing_files run, events/ingest.py)
CHECK_COUNTS = "loaded_equals_source_minus_rejected"
CHECK_CATCH_ALL = "no_rows_in_catch_all_partitions"
CHECK_REBOUND = "rebound_in_atr_matches_rebound_over_atr"
CHECK_REJECTED = "source_files_had_no_rejected_rows"
# a row whose stored rebound in ATR is not its rebound over its ATR; stored values are rounded
# to 6 dp: allow for the rounding of all three
REBOUND_MISMATCH = sql.SQL(
    "abs(new_resistance_negative_rebound_in_atr - new_resistance_negative_rebound / "
    "atr_at_event) > 0.000001 + 0.000001 * (1 + abs(new_resistance_negative_rebound / "
    "atr_at_event)) / atr_at_event")


class LoadConfig(dg.Config):
    # empty (backfills, the UI): every file in the landing zone; else only these files (the
    # landing sensor's runs load whole files instead: events/ingest.py)
    files: list[str] = []


def _leaf_stats(url: str, table: str, pair: tuple[str, str]) -> tuple[int, int]:
    """(rows, bytes on disk) of the pair's leaf of `table`."""
    leaf = loader.leaf_name(table, pair)
    with db.connect(url, role=db.READER_ROLE) as conn:
        return conn.execute(sql.SQL("SELECT count(*), pg_total_relation_size(%s::regclass) "
                                    "FROM {}").format(sql.Identifier(leaf)), (leaf,)).fetchone()


@dg.asset(
    partitions_def=event_partitions,
    deps=["database_schema", landing_files],
    group_name="events",
    kinds={"postgres"},
    freshness_policy=EVENTS_FRESHNESS,
    description="new_resistance_events for one (instrument, granularity): the partition's rows "
                "of the landing files, validated and loaded exactly once; bad rows go to "
                "rejected_events.",
    check_specs=[
        dg.AssetCheckSpec(name, asset="new_resistance_events", description=text)
        for name, text in (
            (CHECK_COUNTS, "Every distinct valid event id of the partition's source rows is in "
                           "the table (ERROR otherwise)."),
            (CHECK_CATCH_ALL, "No row in a NULL-guard partition, no DEFAULT partition (ERROR "
                              "otherwise)."),
            (CHECK_REBOUND, "Each loaded row's rebound in ATR equals its rebound over its ATR, "
                            "within the 6-decimal rounding (ERROR otherwise)."),
            (CHECK_REJECTED, "The partition's source files had no rejected rows (WARN "
                             "otherwise: see table rejected_events)."),
        )
    ],
)
def new_resistance_events(context: dg.AssetExecutionContext, config: LoadConfig,
                          postgres: PostgresResource, landing_zone: LandingZone):
    pair = pair_of(context)
    url = postgres.url()
    files = [Path(f) for f in config.files] or landing.event_files(landing_zone.directory())
    read = loaded = dupes = rejected = 0
    seconds = 0.0
    rejected_files: dict[str, int] = {}
    ids: set[str] = set()
    for path in files:
        try:
            r = loader.load_file(path, url, pair=pair)
        except psycopg.OperationalError as exc:
            # the database is unreachable or went away: nothing of the file was committed,
            # and the same run succeeds once it is back (a raised error is otherwise final)
            raise dg.RetryRequested(max_retries=OUTAGE_RETRIES,
                                    seconds_to_wait=OUTAGE_RETRY_SECONDS) from exc
        except loader.EventFileError as exc:
            context.log.warning(str(exc))
            continue
        if r.ignored_columns:
            context.log.warning(f"{path.name}: ignored columns {r.ignored_columns}")
        if r.rows_read == 0:
            continue
        read, loaded, dupes, rejected = (read + r.rows_read, loaded + r.loaded,
                                         dupes + r.duplicates, rejected + r.rejected)
        ids |= r.ids
        seconds += r.seconds
        if r.rejected:
            rejected_files[path.name] = r.rejected
    rows, size = _leaf_stats(url, "new_resistance_events", pair)
    with db.connect(url, role=db.READER_ROLE) as conn:
        catch_all = catch_all_rows(conn)
        leaf = sql.Identifier(loader.leaf_name("new_resistance_events", pair))
        # independent of the loader's own counts: are the source's good rows in the table?
        present = conn.execute(sql.SQL(
            "SELECT count(*) FROM {} WHERE original_event_id = ANY(%s::uuid[])").format(leaf),
            (list(ids),)).fetchone()[0]
        mismatched = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
            leaf, REBOUND_MISMATCH)).fetchone()[0]
    return dg.MaterializeResult(
        metadata={
            "rows_read": read, "rows_loaded": loaded, "rows_duplicate": dupes,
            "rows_rejected": rejected, "rows_per_second": round(read / seconds if seconds else 0),
            "partition_rows": rows, "partition_bytes": size, "files": len(files),
            "dagster/row_count": rows,
        },
        check_results=[
            # like with like: the distinct good ids of the sources against those in the
            # table. The same event in two files (a re-sent or copied file) is one row, so
            # the row counts of the files (read - rejected) may exceed it without any loss.
            dg.AssetCheckResult(check_name=CHECK_COUNTS,
                                passed=present == len(ids),
                                metadata={"source_rows": read, "rejected": rejected,
                                          "source_distinct_good_ids": len(ids),
                                          "in_table": present}),
            dg.AssetCheckResult(check_name=CHECK_CATCH_ALL,
                                passed=catch_all == (0, 0),
                                metadata={"default_partitions": catch_all[0],
                                          "rows_in_null_guards": catch_all[1]}),
            dg.AssetCheckResult(check_name=CHECK_REBOUND,
                                passed=mismatched == 0, metadata={"mismatched_rows": mismatched}),
            dg.AssetCheckResult(check_name=CHECK_REJECTED,
                                passed=not rejected_files,
                                severity=dg.AssetCheckSeverity.WARN,
                                metadata={"rejected_rows_by_file": rejected_files,
                                          "see": "table rejected_events"}),
        ],
    )


@dg.asset(
    partitions_def=event_partitions,
    deps=[new_resistance_events],
    group_name="events",
    kinds={"postgres"},
    description="support_and_resistance_master for one (instrument, granularity): one level "
                "per event (written with the event), its tests and breach recomputed from the "
                "pair's later events.",
)
def support_and_resistance_master(context: dg.AssetExecutionContext,
                                  postgres: PostgresResource) -> dg.MaterializeResult:
    pair = pair_of(context)
    url = postgres.url()
    stats = refresh_levels(url, pair)
    rows, size = _leaf_stats(url, "support_and_resistance_master", pair)
    return dg.MaterializeResult(metadata={
        "levels": rows, "active": stats["active"], "breached": stats["breached"],
        "changed": stats["changed"], "partition_bytes": size, "dagster/row_count": rows,
        "seconds": round(stats["seconds"], 3)})


@dg.asset(
    partitions_def=event_partitions,
    deps=[support_and_resistance_master],
    group_name="events",
    kinds={"postgres"},
    description="event_features for one (instrument, granularity): the event's measures and "
                "its level's outcome, self-contained (kept 5 years; events are kept 2).",
)
def event_features(context: dg.AssetExecutionContext,
                   postgres: PostgresResource) -> dg.MaterializeResult:
    pair = pair_of(context)
    url = postgres.url()
    stats = refresh_features(url, pair)
    _, size = _leaf_stats(url, "event_features", pair)
    return dg.MaterializeResult(metadata={
        "rows": stats["rows"], "written": stats["written"], "partition_bytes": size,
        "dagster/row_count": stats["rows"]})

