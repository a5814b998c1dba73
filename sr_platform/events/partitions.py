"""Dagster partitions mirror the database's: one per (instrument, granularity)."""

import dagster as dg

from ..core.keys import GRANULARITIES

instruments = dg.DynamicPartitionsDefinition(name="instruments")
event_partitions = dg.MultiPartitionsDefinition({
    "instrument": instruments,
    "granularity": dg.StaticPartitionsDefinition(list(GRANULARITIES)),
})


def partition_key(instrument: str, granularity: str) -> dg.MultiPartitionKey:
    # dimensions are ordered by name, so build keys by name, never by position
    return dg.MultiPartitionKey({"instrument": instrument, "granularity": granularity})


def pair_of_context(context: dg.AssetExecutionContext) -> tuple[str, str]:
    """The (instrument, granularity) of the partition an asset runs for."""
    keys = context.partition_key.keys_by_dimension
    return keys["instrument"], keys["granularity"]


def pair_of_key(key: str) -> tuple[str, str]:
    """The (instrument, granularity) of a partition key given as text."""
    keys = event_partitions.get_partition_key_from_str(key).keys_by_dimension
    return keys["instrument"], keys["granularity"]
