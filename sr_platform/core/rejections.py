"""What the validator hands back: the good rows (Validated) and each refused row with its
reasons (Rejected), its raw record made storable in rejected_events.raw_record (jsonb)."""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DUPLICATE_IN_FILE = "original_event_id unique in file"  # rule: an id repeated in the file
NUL_BYTE = "nul_byte"  # rule: a field holds a NUL byte (PostgreSQL text cannot)
NUL_ESCAPE = "\\x00"  # how rejected_events.raw_record spells a NUL: the four characters \x00


@dataclass
class Rejected:
    line: int
    raw: dict
    reasons: list[str]  # full messages, quoting the bad value
    rules: list[str]  # the short names of the rules broken, for summaries


@dataclass
class Validated:
    good: pd.DataFrame  # keys.EVENT_COLUMNS as text + `ts` (datetime64 UTC) + `_line`
    rejected: list[Rejected] = field(default_factory=list)


def json_value(v):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    if isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def raw_record(frame: pd.DataFrame, i: int) -> dict:
    return {k: json_value(v) for k, v in frame.iloc[i].items() if k != "_line"}


def duplicate_reason(first_line: int, event_id: str) -> str:
    return f"original_event_id: duplicate of line {first_line} ({event_id})"


def storable(value):
    """`value` (a raw record, or a field of one) with each NUL written as NUL_ESCAPE, so
    PostgreSQL's jsonb can hold it."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_ESCAPE)
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value

