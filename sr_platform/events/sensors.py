"""landing_zone_sensor: new files in the landing zone -> partitions and one ingest run per tick."""

import hashlib
from pathlib import Path

import dagster as dg

from ..core import landing
from ..core.text import printable
from .jobs import ingest_landing_files_job
from .partitions import instruments, partition_key
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


@dg.sensor(job=ingest_landing_files_job, minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches the landing zone. For new files: adds the Dagster partitions "
                       "of any new instrument and requests ONE ingest_landing_files run for "
                       "the tick's files, which loads each file once and materializes every "
                       "(instrument, granularity) partition they hold. The run creates any "
                       "missing database partitions.")
def landing_zone_sensor(context: dg.SensorEvaluationContext, landing_zone: LandingZone):
    # no database work here: a tick reads only files, so it cannot fail (and skip files) while
    # PostgreSQL is down; the load itself creates missing partitions (loader.write)
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

