"""landing_zone_sensor: new files in the landing zone -> partitions and load runs."""

import hashlib
from pathlib import Path

import dagster as dg

from ..core import landing, loader
from .jobs import load_events_job
from .partitions import instruments, partition_key
from .resources import LandingZone


@dg.sensor(job=load_events_job, minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches the landing zone. For new files: adds the Dagster partitions "
                       "of any new instrument and requests one load run per (instrument, "
                       "granularity) with new data. The runs create any missing database "
                       "partitions.")
def landing_zone_sensor(context: dg.SensorEvaluationContext, landing_zone: LandingZone):
    # no database work here: a tick reads only files, so it cannot fail (and skip files) while
    # PostgreSQL is down; the load itself creates missing partitions (loader.write)
    scan = landing.scan(landing_zone.directory(), context.cursor)
    for why in scan.refused.values():
        context.log.warning(f"skipped: {why}")
    if not scan.new_files:
        return dg.SkipReason(f"no new files in {landing_zone.directory()}")
    files_by_pair: dict[loader.Pair, list[str]] = {}
    for path, pairs in scan.pairs_by_file.items():
        for pair in pairs:
            files_by_pair.setdefault(pair, []).append(path)
    known = set(context.instance.get_dynamic_partitions(instruments.name))
    new_instruments = sorted({i for i, _ in files_by_pair} - known)
    runs = []
    for (instrument, granularity), files in sorted(files_by_pair.items()):
        files = sorted(files)
        digest = hashlib.sha256("\n".join(
            f"{f}:{scan.new_files[f]}" for f in files).encode()).hexdigest()[:16]
        runs.append(dg.RunRequest(
            partition_key=partition_key(instrument, granularity),
            # the same files never make a second run, even if this tick is retried
            run_key=f"{instrument}|{granularity}|{digest}",
            run_config={"ops": {"new_resistance_events": {"config": {"files": files}}}},
            tags={"sr_platform/files": ",".join(Path(f).name for f in files)[:200]},
        ))
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[instruments.build_add_request(new_instruments)]
        if new_instruments else [],
        cursor=scan.cursor,
    )
