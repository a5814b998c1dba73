"""A range read of events or features split into parallel COPY streams, all on one snapshot.

The server formats every value it sends (0.9-1.2 us of one core per event row here, most of
a read's time), and one COPY runs on one core. So a read of many rows goes out as up to
STREAMS COPYs on as many connections, each over a share of the leaves or of the time range,
parsed by pyarrow in as many threads (it releases the GIL). They all read one snapshot,
exported by the first connection (pg_export_snapshot, as pg_dump -j does): the frame is what
a single query would have returned, even while a load commits.

Each branch of a stream reads one leaf directly, with its pair as a small number instead of
the instrument and granularity text: no per-row instrument filter and two text columns fewer
to format and parse (about 20 % less server CPU). The numbers are put back as the two text
columns after the rows are ordered.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from .keys import GRANULARITIES, Pair, leaf_name
from .partition_ddl import leaf_estimates

# streams of one read: one per core and one more (a stream waits on the server part of
# its time), at most 4
STREAMS = min(4, (os.cpu_count() or 2) + 1)
# below this many rows in the selected leaves (pg_class.reltuples) one stream is faster
SPLIT_MIN_ROWS = 20_000
PAIR = "__pair"  # the pair number column of a stream
# the streams are the parallelism: a stream's own parallel plan (chosen once leaves grow:
# at 5 years a month's stream launched 2 workers) put 9 processes on 2 cores and doubled
# the month's read (50 ms against 23)
NO_WORKERS = "SET LOCAL max_parallel_workers_per_gather = 0"


@dataclass(frozen=True)
class Leaf:
    pair: Pair
    name: str  # the leaf table's name, from the catalogue
    rows: float  # pg_class.reltuples (-1: never analysed)


def leaves(conn: psycopg.Connection, table: str) -> list[Leaf]:
    """Every instrument leaf of `table`, in pair order (the catalogue, not a scan; the
    bounds are matched here: a regexp per row in SQL tripled the query's 0.7 ms)."""
    rows = conn.execute(
        """SELECT pg_get_expr(leaf.relpartbound, leaf.oid),
                  pg_get_expr(mid.relpartbound, mid.oid), leaf.relname, leaf.reltuples
           FROM pg_inherits i1
           JOIN pg_class mid ON mid.oid = i1.inhrelid
           JOIN pg_inherits i2 ON i2.inhparent = mid.oid
           JOIN pg_class leaf ON leaf.oid = i2.inhrelid
           WHERE i1.inhparent = to_regclass(%s)""", (f"public.{table}",)).fetchall()
    out = []
    for leaf_bound, mid_bound, name, n in rows:
        i, g = _BOUND.match(leaf_bound or ""), _BOUND.match(mid_bound or "")
        if i and g:  # not the NULL guards
            out.append(Leaf((i[1], g[1]), name, float(n)))
    return sorted(out, key=lambda leaf: leaf.pair)


_BOUND = re.compile(r"FOR VALUES IN \('(.*)'\)$")


def chosen_leaves(conn: psycopg.Connection, table: str, instruments: Sequence[str] | None,
                  granularities: Sequence[str] | None) -> list[Leaf]:
    """The leaves a read of these instruments and granularities (None: all) covers. Named
    instruments are looked up by their leaves' names (ensure_partition's naming, an index
    lookup: 0.2 ms, where the whole catalogue with its bounds takes 2-3 ms)."""
    if instruments is None:
        return [leaf for leaf in leaves(conn, table)
                if granularities is None or leaf.pair[1] in granularities]
    pairs = [(i, g) for i in instruments for g in (granularities or GRANULARITIES)]
    rows = leaf_estimates(conn, pairs, table)
    return [Leaf(p, leaf_name(table, p), rows[p]) for p in sorted(rows)]


def plan(chosen: list[Leaf], start: datetime | None, end: datetime | None, streams: int
         ) -> list[list[tuple[int, Leaf, datetime | None, datetime | None]]]:
    """Streams of (pair number, leaf, start, end) branches. Many leaves: split by leaf,
    largest first onto the least loaded stream. Few leaves (or one leaf holding most rows)
    and a bounded range: split by time, every leaf in every stream over its own share of the
    range (equal shares; the data's time density is what evens them out)."""
    numbered = list(enumerate(chosen))
    size = [max(leaf.rows, 1.0) for leaf in chosen]
    by_leaf: list[list[tuple[int, Leaf, datetime | None, datetime | None]]] = [
        [] for _ in range(streams)]
    load = [0.0] * streams
    for k, leaf in sorted(numbered, key=lambda kl: -size[kl[0]]):
        i = load.index(min(load))
        by_leaf[i].append((k, leaf, start, end))
        load[i] += size[k]
    balanced = max(load) <= 1.25 * sum(load) / streams
    if balanced or start is None or end is None:
        return [sorted(s, key=lambda b: b[0]) for s in by_leaf if s]
    edges = [start + (end - start) * i / streams for i in range(streams)] + [end]
    return [[(k, leaf, edges[i], edges[i + 1]) for k, leaf in numbered]
            for i in range(streams) if edges[i] < edges[i + 1]]


def stream_sql(branches, select: sql.Composable, alias: str,
               where: Callable[[datetime | None, datetime | None], list[sql.Composable]]
               ) -> sql.Composable:
    """One stream's SELECT: a UNION ALL of its branches, each `SELECT k, <select> FROM leaf`
    under the read's terms over the branch's time range."""
    parts = []
    for k, leaf, lo, hi in branches:
        terms = where(lo, hi)
        parts.append(sql.SQL("SELECT {}::int2, {} FROM {} {}{}").format(
            sql.Literal(k), select, sql.Identifier(leaf.name), sql.SQL(alias),
            sql.SQL(" WHERE ") + sql.SQL(" AND ").join(terms) if terms else sql.SQL("")))
    return sql.SQL(" UNION ALL ").join(parts)


def run_streams(conn: psycopg.Connection, streams: int,
                read_one: Callable[[int, str], pa.Table]) -> list[pa.Table]:
    """read_one(i, snapshot) for each stream i, each in its own thread, on the snapshot of
    a transaction `conn` opens for them (`read_one` may use `conn` for one stream; the others
    join the snapshot on connections of their own, see snapshot_sql)."""
    cur = conn.execute(f"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; {NO_WORKERS}; "
                       "SELECT pg_export_snapshot()")  # one round trip, three results
    cur.nextset()
    cur.nextset()
    snapshot = cur.fetchone()[0]
    try:
        with ThreadPoolExecutor(streams) as pool:
            futures = [pool.submit(read_one, i, snapshot) for i in range(streams)]
            tables = [f.result() for f in futures]  # the first error is raised
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("COMMIT" if conn.info.transaction_status
                         == psycopg.pq.TransactionStatus.INTRANS else "ROLLBACK")
    return tables


def snapshot_sql(snapshot: str, copy: str) -> str:
    """`copy` (a COPY ... TO STDOUT) in a transaction that sees exactly `snapshot`, as one
    query string: no round trip of its own (psycopg's copy_out and psql both take it)."""
    literal = "'" + snapshot.replace("'", "''") + "'"
    return (f"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; "
            f"SET TRANSACTION SNAPSHOT {literal}; {NO_WORKERS}; {copy}; COMMIT")


def assemble(parts: list[pa.Table], pairs: Sequence[Pair], names: Sequence[str],
             fallback_sort: Callable[[pa.Table], pa.Table]) -> pa.Table:
    """The streams' rows (taken out of `parts`) as one table of `names`, ordered by
    (event_creation_date, instrument, granularity, original_event_id). Rows of one pair at
    one time (the id decides) take `fallback_sort`. Each column is freed once reordered,
    one column at a time: about one frame in memory, not two."""
    table = pa.concat_tables(parts)
    parts.clear()
    code = table.column(PAIR).to_numpy()
    perm = _order(table.column("event_creation_date"), code, len(pairs))
    if perm is False:
        return fallback_sort(_with_pairs(table, pairs)).select(list(names))
    table = table.drop_columns([PAIR])
    if perm is not None:
        code = code[perm]
        indices = pa.array(perm)
        for name in table.column_names:
            col = _reorder(table.column(name), perm, indices)
            table = table.set_column(table.column_names.index(name), name, col)
            del col
    table = table.append_column("instrument", _decode([p[0] for p in pairs], code))
    table = table.append_column("granularity", _decode([p[1] for p in pairs], code))
    return table.select(list(names))


def _order(times: pa.ChunkedArray, code: np.ndarray, pairs: int) -> np.ndarray | None | bool:
    """The permutation to (time, pair number) order: None if already in it, False if two
    rows share both (the id must decide). The pair numbers follow (instrument, granularity)
    order, so one stable sort of time * pairs + number does it (timsort merges the leaves'
    time-ordered runs: 0.18 s for 4.6M rows, against 0.37 s for two passes)."""
    if len(code) < 2:
        return None
    ts = times.cast(pa.int64()).to_numpy()
    lo, hi = int(ts.min()), int(ts.max())
    if hi - lo + 1 >= (1 << 62) // max(pairs, 1):  # the key would overflow: two keys
        perm = np.lexsort((code, ts))
        ts, c = ts[perm], code[perm]
        return False if ((ts[1:] == ts[:-1]) & (c[1:] == c[:-1])).any() else perm
    key = ts - lo
    del ts
    key *= pairs
    key += code
    perm = None
    if (key[1:] < key[:-1]).any():
        perm = np.argsort(key, kind="stable")
        key = key[perm]
    return False if (key[1:] == key[:-1]).any() else perm


def _with_pairs(table: pa.Table, pairs: Sequence[Pair]) -> pa.Table:
    """`table` with instrument and granularity text from its PAIR column."""
    code = table.column(PAIR).to_numpy()
    table = table.append_column("instrument", _decode([p[0] for p in pairs], code))
    return table.append_column("granularity", _decode([p[1] for p in pairs], code))


def _reorder(col: pa.ChunkedArray, perm: np.ndarray, indices: pa.Array) -> pa.Array:
    """`col` in `perm`'s order. Arrow's take is the tool, but slow (~60 ns a row on 4.6M
    rows) for strings and for a column with nulls; two common cases go faster: a string
    column of one value (event_type: nothing moves) and a numeric column with nulls
    (volume: numpy, 0.08 s against 0.13 s)."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    del col
    if len(arr) == 0:
        return arr
    if pa.types.is_string(arr.type) and arr.null_count == 0:
        if pc.all(pc.equal(arr, arr[0])).as_py():
            return arr
    elif arr.null_count and (pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type)):
        values = arr.fill_null(0).to_numpy()[perm]
        return pa.array(values, arr.type, mask=arr.is_null().to_numpy(zero_copy_only=False)[perm])
    return arr.take(indices)


def _decode(values: Sequence[str], code: np.ndarray) -> pa.Array:
    """The string column whose row i is values[code[i]] (the instrument or granularity of
    the pair numbers): a take from a small array stays in cache (45 ms for 4.6M rows)."""
    return pa.array(values, pa.string()).take(pa.array(np.asarray(code, np.int32)))


def shares(q: Any, start: datetime | None, end: datetime | None) -> Any:
    """The read `q` narrowed to [start, end) and to no instrument/granularity terms (a
    branch reads one leaf)."""
    return replace(q, instruments=None, granularities=None, start=start, end=end)
