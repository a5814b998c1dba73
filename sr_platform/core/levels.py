"""S/R level outcomes derived from the events of one (instrument, granularity).

A new-resistance event at price P opens a level. Later events of the same pair decide it:
- breached at the first later event whose price level is above P (price closed through it);
- tested by each later event before the breach (at most TEST_WINDOW events on) whose price
  level lies within TEST_BAND_ATR x the level's ATR below P.
Status is 'breached' or 'active'. 'expired', which the schema's CHECK allows, is never
written: a level goes with its event when retention deletes it (ON DELETE CASCADE).
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from . import db, reading
from .copy_encoding import copy_csv
from .keys import Pair, leaf_name

TEST_BAND_ATR = 0.25
TEST_WINDOW = 200


def level_outcomes(events: pd.DataFrame) -> pd.DataFrame:
    """events: original_event_id, ts, price, atr sorted by ts. Returns one row per event with
    test_count, last_test_date, breach_date, status."""
    n = len(events)
    price = events["price"].to_numpy(dtype=float)
    atr = events["atr"].to_numpy(dtype=float)
    ts = events["ts"].to_numpy()
    # next strictly higher price: a monotonic stack, O(n)
    breach_idx = np.full(n, n, dtype=np.int64)
    stack: list[int] = []
    for i in range(n):
        while stack and price[i] > price[stack[-1]]:
            breach_idx[stack.pop()] = i
        stack.append(i)
    tests = np.zeros(n, dtype=np.int64)
    last_test = np.full(n, -1, dtype=np.int64)
    idx = np.arange(n)
    for k in range(1, min(TEST_WINDOW, n - 1) + 1):
        j = idx[:-k] + k
        hit = ((j < breach_idx[:-k]) & (price[j] <= price[:-k])
               & (price[j] >= price[:-k] - TEST_BAND_ATR * atr[:-k]))
        tests[:-k] += hit
        last_test[:-k] = np.where(hit, j, last_test[:-k])
    nat = np.datetime64("NaT")
    breached = breach_idx < n
    return pd.DataFrame({
        "original_event_id": events["original_event_id"].to_numpy(),
        "event_creation_date": ts,
        "test_count": tests,
        "last_test_date": np.where(last_test >= 0, ts[np.maximum(last_test, 0)], nat),
        "breach_date": np.where(breached, ts[np.minimum(breach_idx, n - 1)], nat),
        "status": np.where(breached, "breached", "active"),
    })


@contextmanager
def writer_session(url: str, conn: psycopg.Connection | None) -> Iterator[psycopg.Connection]:
    """`conn` (a caller's writer connection, reused across pairs: a connection costs more than
    a small pair's refresh) in a transaction of its own, or a new connection as sr_writer."""
    if conn is None:
        with db.connect(url, role=db.WRITER_ROLE) as new:
            yield new
    else:
        with conn.transaction():
            yield conn


def refresh_levels(url: str, pair: Pair, conn: psycopg.Connection | None = None
                   ) -> dict[str, float]:
    """Recompute the pair's level outcomes and write the ones that changed."""
    started = time.perf_counter()
    levels_leaf = sql.Identifier(leaf_name("support_and_resistance_master", pair))
    with writer_session(url, conn) as conn:
        # the read API's path (COPY parsed by pyarrow): floats and text, not Decimal and UUID
        # objects (the outcomes compare floats: the double nearest each decimal)
        events = reading.level_events(conn, reading.Query(instruments=(pair[0],),
                                                          granularities=(pair[1],)))
        if events.empty:
            return {"levels": 0, "changed": 0, "active": 0, "breached": 0, "seconds": 0.0}
        out = level_outcomes(events)
        conn.execute("CREATE TEMP TABLE level_outcomes (original_event_id uuid, "
                     "event_creation_date timestamptz, test_count int, last_test_date "
                     "timestamptz, breach_date timestamptz, status varchar(20)) ON COMMIT DROP")
        # NaT (no test, no breach) becomes an empty field: NULL
        timestamps = {c: pd.to_datetime(out[c], utc=True) for c in ("last_test_date",
                                                                    "breach_date")}
        with conn.cursor().copy("COPY level_outcomes FROM STDIN (FORMAT csv)") as cp:
            cp.write(copy_csv(out.assign(**timestamps), tuple(out.columns)))
        changed = conn.execute(sql.SQL(
            """UPDATE {} l SET test_count = o.test_count, last_test_date = o.last_test_date,
                      breach_date = o.breach_date, status = o.status
               FROM level_outcomes o
               WHERE l.event_creation_date = o.event_creation_date
                 AND l.original_event_id = o.original_event_id
                 AND (l.test_count, l.last_test_date, l.breach_date, l.status)
                     IS DISTINCT FROM (o.test_count, o.last_test_date, o.breach_date, o.status)
            """).format(levels_leaf)).rowcount
    breached = int((out["status"] == "breached").sum())
    return {"levels": len(out), "changed": changed, "active": len(out) - breached,
            "breached": breached, "seconds": time.perf_counter() - started}

