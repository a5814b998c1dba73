import dagster as dg

from .assets import event_features, new_resistance_events, support_and_resistance_master
from .ingest import ingest_files

load_events_job = dg.define_asset_job(
    "load_events",
    selection=[new_resistance_events, support_and_resistance_master, event_features],
    description="Load one (instrument, granularity) from the landing zone, then refresh its "
                "levels and features (backfills and single-partition runs).",
    # the three steps run one after another anyway: one process per run, not one per step
    executor_def=dg.in_process_executor,
)


@dg.job(
    name="ingest_landing_files",
    description="The landing sensor's run, one per tick: loads each of the tick's files once, "
                "then refreshes and reports as materialized every (instrument, granularity) "
                "partition of new_resistance_events, support_and_resistance_master and "
                "event_features the files hold. Launched by hand with no files, it ingests "
                "every file in the landing zone.",
    executor_def=dg.in_process_executor,
)
def ingest_landing_files_job():
    ingest_files()
