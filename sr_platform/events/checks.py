"""Checks on the database's state, standalone (not part of a load): each reads the tables as
they are, whichever face loaded them. They run after the events asset in its partition runs
(the load_events job selects them with it), and on their own from the UI.

The checks of a load itself (counts, rejected rows) stay with the asset that loads; the
landing run reports all four over its partitions at once (events/ingest.py)."""

import dagster as dg

from ..core import ingest
from ..resources import PostgresResource
from .assets import new_resistance_events
from .partitions import pair_of_key
from .reporting import check_results, key_of


@dg.asset_check(asset=new_resistance_events, name=ingest.CHECK_CATCH_ALL,
                description=ingest.EVENTS_CHECKS[ingest.CHECK_CATCH_ALL])
def no_rows_in_catch_all_partitions(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Database-wide, whatever partition the run is for."""
    return check_results([ingest.catch_all_check(ingest.catch_all(postgres.url()))])[0]


@dg.asset_check(asset=new_resistance_events, name=ingest.CHECK_REBOUND,
                description=ingest.EVENTS_CHECKS[ingest.CHECK_REBOUND])
def rebound_in_atr_matches_rebound_over_atr(context: dg.AssetCheckExecutionContext,
                                            postgres: PostgresResource
                                            ) -> dg.AssetCheckResult:
    """The run's partition, in a partition run; every partition when run on its own."""
    run = context.op_execution_context
    pairs = [pair_of_key(run.partition_key)] if run.has_partition_key else None
    return check_results([ingest.rebound_check(ingest.stored_reports(postgres.url(), pairs),
                                               key=key_of)])[0]


EVENTS_STATE_CHECKS = [no_rows_in_catch_all_partitions, rebound_in_atr_matches_rebound_over_atr]
