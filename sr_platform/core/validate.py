"""Vectorised validation of raw event frames: every rule the database enforces, in its terms.

Rows that break a rule are returned with every reason; good rows come back normalised to the
exact text the loader COPYs (UTC timestamps, ids, derived day/hour).

Two paths give the same answer: rows whose every value has a plain, common shape are checked
and normalised with pyarrow/numpy kernels (validate_fast); every other row, and every row the
fast path finds breaking a rule, goes through the exact pandas path (validate_exact), which
words the reasons and lists the rules. Then, over both, an id repeated within a file is
refused, and so are the records the reader found malformed.

The names other modules import from here (the rules' constants, the result types, the id
derivation) are re-exported from where they live.
"""

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from .arrow_text import arrow_text
from .event_files import RawEvents
from .ids import EVENT_ID_NAMESPACE, derive_event_id
from .keys import EVENT_COLUMNS
from .rejections import (
    DUPLICATE_IN_FILE,
    NUL_BYTE,
    NUL_ESCAPE,
    Rejected,
    Validated,
    duplicate_reason,
    raw_record,
    storable,
)
from .validate_exact import NUMERIC, exact_validate
from .validate_fast import fast_validate

COPY_COLUMNS = EVENT_COLUMNS  # the COPY column order

__all__ = ["COPY_COLUMNS", "DUPLICATE_IN_FILE", "EVENT_ID_NAMESPACE", "NUL_BYTE", "NUL_ESCAPE",
           "NUMERIC", "Rejected", "Validated", "derive_event_id", "duplicate_reason",
           "raw_record", "storable", "validate"]


def _in_file_duplicates(good: pd.DataFrame, f: pd.DataFrame
                        ) -> tuple[pd.DataFrame, list[Rejected]]:
    """An id may appear once per frame; later copies are refused, naming the first. (The
    loader extends this across a file's chunks.)"""
    dup = good["original_event_id"].duplicated(keep="first")
    rejected: list[Rejected] = []
    if dup.any():
        first_line = good.drop_duplicates("original_event_id").set_index(
            "original_event_id")["_line"]
        for idx in np.flatnonzero(dup.to_numpy()):
            row = good.iloc[idx]
            pos = f.index.get_loc(good.index[idx])
            event_id = row["original_event_id"]
            rejected.append(Rejected(int(row["_line"]), raw_record(f, pos),
                                     [duplicate_reason(int(first_line[event_id]), event_id)],
                                     [DUPLICATE_IN_FILE]))
        good = good[~dup]
    return good, rejected



def validate(raw: RawEvents, assume_tz: str | None = None) -> Validated:
    """Every rule on every row: the fast path for the rows it can decide, the exact path for
    the others; then the in-file duplicates over both, and the malformed records."""
    f = raw.frame
    fast = fast_validate(f)
    if fast is None:
        good, rejected = exact_validate(f, assume_tz)
    else:
        rows, fast_good = fast
        rest = np.ones(len(f), dtype=bool)
        rest[rows] = False
        if not rest.any():
            good, rejected = fast_good, []
        else:
            good, rejected = exact_validate(f.iloc[np.flatnonzero(rest)], assume_tz)
            if fast_good is not None:
                position = np.concatenate([rows, np.flatnonzero(rest)[
                    f.index[rest].get_indexer(good.index) if len(good) else []]])
                good = pd.concat([fast_good, good]).iloc[np.argsort(position, kind="stable")]
    ids = arrow_text(good["original_event_id"])
    if ids is None or pc.count_distinct(ids).as_py() < len(ids):
        good, duplicates = _in_file_duplicates(good, f)
        rejected += duplicates
    for line, rec, reason in raw.malformed:
        rejected.append(Rejected(line, storable(rec), [f"csv: {reason}"], ["csv field count"]))
    rejected.sort(key=lambda r: r.line)
    return Validated(good.reset_index(drop=True), rejected)
