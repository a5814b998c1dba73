"""Landing files -> events -> levels -> features, partitioned by (instrument, granularity)."""

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import dagster as dg
import psycopg

from ..core import ingest, landing, loader
from ..core.features import refresh_features
from ..core.ingest import CHECK_COUNTS, CHECK_REJECTED, EVENTS_CHECKS
from ..core.levels import refresh_levels
from ..resources import PostgresResource
from .partitions import event_partitions, pair_of_context
from .reporting import (
    check_results,
    events_metadata,
    features_metadata,
    key_of,
    levels_metadata,
    outage_retry,
)
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


class LoadConfig(dg.Config):
    # empty (backfills, the UI): every file in the landing zone; else only these files (the
    # landing sensor's runs load whole files instead: events/ingest.py)
    files: list[str] = []


def _stats(postgres: PostgresResource, pair: tuple[str, str],
           xids: Iterable[str] = ()) -> ingest.PairStats:
    with postgres.connect("reader", autocommit=True) as conn:
        return ingest.pair_stats(conn, pair, xids)


@dg.asset(
    partitions_def=event_partitions,
    deps=["database_schema", landing_files],
    group_name="events",
    kinds={"postgres"},
    freshness_policy=EVENTS_FRESHNESS,
    description="new_resistance_events for one (instrument, granularity): the partition's rows "
                "of the landing files, validated and loaded exactly once; bad rows go to "
                "rejected_events.",
    # the checks of the load itself; those of the database's state are standalone (checks.py)
    check_specs=[dg.AssetCheckSpec(name, asset="new_resistance_events",
                                   description=EVENTS_CHECKS[name])
                 for name in (CHECK_COUNTS, CHECK_REJECTED)],
)
def new_resistance_events(context: dg.AssetExecutionContext, config: LoadConfig,
                          postgres: PostgresResource, landing_zone: LandingZone):
    pair = pair_of_context(context)
    url = postgres.url()
    files = [Path(f) for f in config.files] or landing.event_files(landing_zone.directory())
    part = ingest.PairLoad(pair)
    results: list[loader.LoadResult] = []
    with loader.one_connection(url) as connection:
        for path in files:
            try:
                r = loader.load_file(path, url, pair=pair, connection=connection,
                                     origin="dagster")
            except psycopg.OperationalError as exc:
                # the database is unreachable or went away: nothing of the file was
                # committed, and the same run succeeds once it is back
                raise outage_retry() from exc
            except loader.EventFileError as exc:
                context.log.warning(str(exc))
                continue
            if r.ignored_columns:
                context.log.warning(f"{path.name}: ignored columns {r.ignored_columns}")
            if r.rows_read == 0:
                continue
            results.append(r)
            part.files.append(path.name)
            part.loaded += r.loaded
            part.xids.append(r.xid)
            if r.rejected:
                part.rejected_by_file[path.name] = r.rejected
    report = ingest.PairReport(part, _stats(postgres, pair, part.xids))
    read = sum(r.rows_read for r in results)
    seconds = sum(r.seconds for r in results)
    return dg.MaterializeResult(
        metadata=events_metadata(report) | {
            "rows_read": read, "rows_duplicate": sum(r.duplicates for r in results),
            "rows_per_second": round(read / seconds if seconds else 0),
            "files": len(files)},
        check_results=check_results([
            ingest.counts_check([report], results, key=key_of),
            ingest.rejected_check([report], results, key=key_of)]))


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
    pair = pair_of_context(context)
    url = postgres.url()
    levels = refresh_levels(url, pair)
    report = ingest.PairReport(ingest.PairLoad(pair), _stats(postgres, pair), levels=levels)
    return dg.MaterializeResult(metadata=levels_metadata(report))


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
    pair = pair_of_context(context)
    url = postgres.url()
    features = refresh_features(url, pair)
    report = ingest.PairReport(ingest.PairLoad(pair), _stats(postgres, pair), features=features)
    return dg.MaterializeResult(metadata=features_metadata(report))

