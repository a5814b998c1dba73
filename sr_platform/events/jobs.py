import dagster as dg

from .assets import event_features, new_resistance_events, support_and_resistance_master

load_events_job = dg.define_asset_job(
    "load_events",
    selection=[new_resistance_events, support_and_resistance_master, event_features],
    description="Load one (instrument, granularity) from the landing zone, then refresh its "
                "levels and features.",
    # the three steps run one after another anyway: one process per run, not one per step
    executor_def=dg.in_process_executor,
)
