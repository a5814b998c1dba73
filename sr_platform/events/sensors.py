"""landing_zone_sensor: new files in the landing zone -> partitions and one ingest run per tick."""

import hashlib
from pathlib import Path

import dagster as dg

from ..core import db, ingest, landing
from ..core.text import printable
from ..resources import PostgresResource
from .jobs import ingest_landing_files_job
from .partitions import instruments, partition_key
from .reporting import EVENTS, FEATURES, LEVELS, key_of
from .resources import LandingZone

FILES_TAG = "sr_platform/files"  # the run's file names (the first ones, if they are many)
FILE_COUNT_TAG = "sr_platform/file_count"
PARTITION_COUNT_TAG = "sr_platform/partition_count"
TAG_CHARS = 200


def files_tag(names: list[str]) -> str:
    """The names, comma-separated, within TAG_CHARS: '..., +N more' when they do not fit (the
    run's config lists every file)."""
    text = ",".join(names)
    if len(text) <= TAG_CHARS:
        return text
    shown: list[str] = []
    for name in names:
        more = f",+{len(names) - len(shown) - 1} more"
        if len(",".join([*shown, name])) + len(more) > TAG_CHARS:
            break
        shown.append(name)
    return ",".join([*shown, f"+{len(names) - len(shown)} more"])


def ingest_request(new_files: dict[str, str], pairs_by_file: dict[str, set]) -> dg.RunRequest:
    """The run that loads `pairs_by_file`'s files once each. Its run key is a digest of the
    files and their signatures (size and mtime, from `new_files`): the same files never make
    a second run, even when a tick is retried; a rewritten file makes a new one."""
    files = sorted(pairs_by_file)
    digest = hashlib.sha256("\n".join(f"{f}:{new_files[f]}" for f in files).encode()
                            ).hexdigest()[:16]
    partitions = {f: sorted(str(partition_key(i, g)) for i, g in pairs_by_file[f])
                  for f in files}
    n_partitions = len({k for keys in partitions.values() for k in keys})
    return dg.RunRequest(
        run_key=f"ingest|{digest}",
        run_config={"ops": {"ingest_files": {"config": {
            "files": files, "partitions_by_file": partitions}}}},
        tags={FILES_TAG: files_tag([Path(f).name for f in files]),
              FILE_COUNT_TAG: str(len(files)), PARTITION_COUNT_TAG: str(n_partitions)},
    )


# Dagster's sensor daemon evaluates sensors in a loop that starts an iteration every 5 s
# (dagster/_daemon/sensor.py, MIN_INTERVAL_LOOP_TIME), so any interval under 5 s means "every
# iteration": files wait 2.5 s on average for a tick, not 15 (at 30 s). A tick is cheap: it
# stats the landing zone's files and reads only the new ones' two key columns (core/landing.py).
LANDING_INTERVAL_SECONDS = 1


@dg.sensor(job=ingest_landing_files_job, minimum_interval_seconds=LANDING_INTERVAL_SECONDS,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches the landing zone. For new files: adds the Dagster partitions "
                       "of any new instrument and requests ONE ingest_landing_files run for "
                       "the tick's files, which loads each file once and materializes every "
                       "(instrument, granularity) partition they hold. The run creates any "
                       "missing database partitions.")
def landing_zone_sensor(context: dg.SensorEvaluationContext, landing_zone: LandingZone):
    # no database work here: a tick reads only files, so it cannot fail (and skip files) while
    # PostgreSQL is down; the load itself creates missing partitions (stage_partitions)
    scan = landing.scan(landing_zone.directory(), context.cursor)
    if scan.missing:  # not "no new files": an operator must fix the path
        return dg.SkipReason(scan.missing)
    for why in scan.refused.values():
        context.log.warning(f"skipped: {why}")
    if not scan.new_files:
        # the cursor still moves: its memory of recent files ages out (landing.scan)
        return dg.SensorResult(skip_reason=f"no new files in "
                               f"{printable(landing_zone.directory())}", cursor=scan.cursor)
    # files with at least one well-formed pair (a file of only a header holds nothing to load)
    loadable = {f: pairs for f, pairs in scan.pairs_by_file.items() if pairs}
    known = set(context.instance.get_dynamic_partitions(instruments.name))
    new_instruments = sorted({i for pairs in loadable.values() for i, _ in pairs} - known)
    return dg.SensorResult(
        run_requests=[ingest_request(scan.new_files, loadable)] if loadable else [],
        dynamic_partitions_requests=[instruments.build_add_request(new_instruments)]
        if new_instruments else [],
        cursor=scan.cursor,
    )



@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Reports loads made outside Dagster (`sr-platform load`, the library) "
                       "as runless materializations of the partitions they touched, read "
                       "from load_log: the UI never shows a partition older than the "
                       "database's. A CLI load refreshed the pair's levels and features "
                       "(the ingest service), so those are reported too; a library load did "
                       "not, so only the events partition is, and the derived ones show as "
                       "behind their upstream.")
def outside_loads_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    after = int(context.cursor or 0)
    url = postgres.url()
    with db.connect(url, role=db.READER_ROLE, autocommit=True) as conn:
        loads, last = ingest.loads_outside(conn, after)
        if not loads:
            return dg.SensorResult(cursor=str(last)) if last != after else \
                dg.SkipReason(f"no loads outside Dagster after load_log id {after}")
        events = _outside_materializations(conn, loads)
    new = sorted({i for ld in loads for i, _ in ld.pairs} -
                 set(context.instance.get_dynamic_partitions(instruments.name)))
    if new:  # before the materializations that name them
        context.instance.add_dynamic_partitions(instruments.name, new)
    return dg.SensorResult(asset_events=events, cursor=str(last))


def _outside_materializations(conn, loads: list[ingest.OutsideLoad]
                              ) -> list[dg.AssetMaterialization]:
    by_pair: dict[tuple[str, str], list[ingest.OutsideLoad]] = {}
    for load in loads:
        for pair, n in load.pairs.items():
            if n:
                by_pair.setdefault(pair, []).append(load)
    out: list[dg.AssetMaterialization] = []
    for pair, pair_loads in sorted(by_pair.items()):
        stats = ingest.pair_stats(conn, pair)
        key = key_of(pair)
        origin = {"origin": ", ".join(sorted({ld.origin or "library" for ld in pair_loads})),
                  "load_log_ids": dg.MetadataValue.json([ld.id for ld in pair_loads])}
        out.append(dg.AssetMaterialization(EVENTS, partition=key, metadata={
            "rows_loaded": sum(ld.pairs[pair] for ld in pair_loads),
            "partition_rows": stats.events_rows, "partition_bytes": stats.events_bytes,
            "files": len({ld.source for ld in pair_loads}),
            "dagster/row_count": stats.events_rows} | origin))
        if all(ld.origin == "cli" for ld in pair_loads):  # the ingest service derived them
            status = ingest.level_counts(conn, pair)
            out.append(dg.AssetMaterialization(LEVELS, partition=key, metadata={
                "levels": stats.levels_rows, "active": status.get("active", 0),
                "breached": status.get("breached", 0), "partition_bytes": stats.levels_bytes,
                "dagster/row_count": stats.levels_rows} | origin))
            out.append(dg.AssetMaterialization(FEATURES, partition=key, metadata={
                "rows": stats.features_rows, "partition_bytes": stats.features_bytes,
                "dagster/row_count": stats.features_rows} | origin))
    return out
