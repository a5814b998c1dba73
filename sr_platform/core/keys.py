"""The names every layer shares: the partition key of an event (instrument, granularity), its
allowed values, the partitioned tables, an event's columns and the naming of leaf partitions.
Below the loader, the validator, the table definitions and the Dagster faces, so none of them
imports another just for these."""

Pair = tuple[str, str]  # (instrument, granularity)

# the values the tables' CHECKs and check_partition_key() (sql/0003) accept
GRANULARITIES = ("W", "D", "H4", "H1")
INSTRUMENT_RE = r"^[A-Z0-9][A-Z0-9_]{0,9}$"

# the three tables partitioned by granularity, then instrument; ensure_partition() makes a
# leaf of each per pair
EVENTS, LEVELS, FEATURES = ("new_resistance_events", "support_and_resistance_master",
                            "event_features")
PARTITIONED_TABLES = (EVENTS, LEVELS, FEATURES)

# the columns of an event, in the order the loader COPYs them (and event files are written)
EVENT_COLUMNS = (
    "original_event_id", "event_type", "event_creation_date", "granularity", "instrument",
    "event_price_level", "atr_at_event", "volume_at_event", "new_resistance_negative_rebound",
    "new_resistance_negative_rebound_in_atr", "day_of_week", "hour_of_day",
)
# the columns of a level row the loader writes (the outcome columns are the refresh's)
LEVEL_COLUMNS = ("original_event_id", "event_type", "instrument", "granularity",
                 "event_creation_date")


def leaf_name(table: str, pair: Pair) -> str:
    """Leaf partition of `table` for a validated pair (ensure_partition's naming)."""
    return f"{table}_{pair[1].lower()}_{pair[0].lower()}"
