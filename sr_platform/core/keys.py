"""The names every layer shares: the partition key of an event (instrument, granularity), its
allowed values, and the naming of leaf partitions. Below the loader, the validator, the table
definitions and the Dagster faces, so none of them imports another just for these."""

Pair = tuple[str, str]  # (instrument, granularity)

# the values the tables' CHECKs and check_partition_key() (sql/0003) accept
GRANULARITIES = ("W", "D", "H4", "H1")
INSTRUMENT_RE = r"^[A-Z0-9][A-Z0-9_]{0,9}$"

# partitioned by granularity, then instrument; ensure_partition() makes a leaf of each per pair
PARTITIONED_TABLES = ("new_resistance_events", "support_and_resistance_master", "event_features")


def leaf_name(table: str, pair: Pair) -> str:
    """Leaf partition of `table` for a validated pair (ensure_partition's naming)."""
    return f"{table}_{pair[1].lower()}_{pair[0].lower()}"
