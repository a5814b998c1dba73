"""The duplicate-id SQL of a load: which of a chunk's ids were seen earlier in the file or are
stored already (the id registry, sql/0005), and whether a stored one is stored under the same
key (a reloaded row: skipped) or another (a reused id: quarantined)."""

from datetime import UTC, datetime
from typing import NamedTuple

import pandas as pd
import psycopg
from psycopg import sql

from .keys import EVENTS, Pair, leaf_name
from .load_connection import SchemaFeatures

ID_USED = "original_event_id unique"  # rule: the registry holds the id under another key


class KnownId(NamedTuple):
    """A chunk row whose id is known: seen earlier in the file (`first_line`), or stored
    (`same_key`: under this row's key or not; the stored key when not)."""

    line: int
    first_line: int | None
    same_key: bool | None
    instrument: str | None = None
    granularity: str | None = None
    ts: datetime | None = None

    @property
    def stored_same(self) -> bool:
        """Stored already under this very key: a reloaded row, skipped."""
        return self.first_line is None and bool(self.same_key)


def _utc_text(ts: datetime) -> str:
    ts = ts.astimezone(UTC)
    frac = f".{ts.microsecond:06d}" if ts.microsecond else ""
    return f"{ts:%Y-%m-%dT%H:%M:%S}{frac}Z"


def id_used_reason(instrument: str, granularity: str, ts: datetime) -> str:
    return f"original_event_id: already used by {instrument} {granularity} {_utc_text(ts)}"


def sql_array(values: pd.Series, quote: bool = False) -> str:
    """A PostgreSQL array literal of validated values (no quotes, backslashes, braces or
    commas): one text parameter, parsed by the server, instead of a Python object per element
    (built by pandas' str.cat: ~15x faster than a join over the Series)."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return "{" + ",".join(map(str, values.to_numpy().tolist())) + "}"
    if quote:
        return '{"' + values.str.cat(sep='","') + '"}'
    return "{" + values.str.cat(sep=",") + "}"


class IdProbe:
    """Looks a file's chunks' ids up, in the file's load transaction. Ids of earlier chunks are
    kept in a temp table (load_seen) from the second chunk on."""

    def __init__(self, conn: psycopg.Connection, schema: SchemaFeatures, pair: Pair | None,
                 staged: set[Pair]) -> None:
        self.conn, self.schema, self.pair, self.staged = conn, schema, pair, staged
        self.seen_table = False  # load_seen exists (made when a second chunk comes)
        self.unseen: tuple[str, str] | None = None  # the previous chunk's (ids, lines) arrays

    def _remember_previous(self) -> None:
        """Ids of earlier chunks' good rows, for the in-file duplicate rule across chunks (a
        temp table: memory on the server, spilled to disk beyond temp_buffers). A file of one
        chunk never makes it."""
        if self.unseen is None:
            return
        if not self.seen_table:
            self.conn.execute("CREATE TEMP TABLE load_seen (id uuid PRIMARY KEY, "
                              "line int NOT NULL) ON COMMIT DROP")
            self.seen_table = True
        self.conn.execute("INSERT INTO load_seen SELECT * FROM unnest(%s::uuid[], %s::int[]) "
                          "ON CONFLICT (id) DO NOTHING", self.unseen)
        self.unseen = None

    def known(self, good: pd.DataFrame) -> list[KnownId]:
        """Each good row whose id was seen earlier in the file or is stored.

        Two steps, so that a steady load (no id known) sends only ids and lines: which ids are
        known (to the registry, or earlier in the file), then, for the registry's only, whether
        each is stored under the same key (a whole reload: every row)."""
        self._remember_previous()
        ids, lines = sql_array(good["original_event_id"]), sql_array(good["_line"])
        self.unseen = (ids, lines)
        hits = self._seen_or_stored(ids, lines)
        known = [KnownId(line, first, None) for line, first, _ in hits if first is not None]
        to_compare = good[good["_line"].isin([line for line, first, _ in hits if first is None])]
        if not self.schema.registry:
            to_compare = good[~good["_line"].isin([k.line for k in known])]
        if len(to_compare):
            known += self._same_key(to_compare)
        return self._with_owners(good, known)

    def _seen_or_stored(self, ids: str, lines: str) -> list[tuple]:
        """(line, first line in the file or None, stored or None) of the rows whose id is
        known.

        Scalar subqueries, one index probe per chunk row: a join let the planner (no
        statistics on temp tables) pick plans that scanned load_seen or the registry for
        every chunk, or worse (measured: 3 s to 90 s a chunk a few million rows in)."""
        first = (sql.SQL("(SELECT s.line FROM load_seen s WHERE s.id = c.id)")
                 if self.seen_table else sql.SQL("NULL::int"))
        if self.schema.registry:
            # not EXISTS (...): PostgreSQL 18 turns that into a hashed subplan that reads the
            # whole registry for every chunk
            stored = sql.SQL("(SELECT true FROM event_id_registry r "
                             "WHERE r.original_event_id = c.id)")
        else:  # a database before 0005: a row stored under the same key, in its leaf
            stored = sql.SQL("false")
        return self.conn.execute(sql.SQL(
            "SELECT line, first, stored FROM (SELECT c.line, {} AS first, {} AS stored "
            "FROM unnest(%s::uuid[], %s::int[]) AS c(id, line)) k "
            "WHERE first IS NOT NULL OR stored IS NOT NULL").format(first, stored),
            (ids, lines)).fetchall()

    def _with_owners(self, good: pd.DataFrame, known: list[KnownId]) -> list[KnownId]:
        """`known`, with the stored key of each id the registry holds under another key
        (rare; named in the row's reason)."""
        others = [k.line for k in known if k.first_line is None and k.same_key is False]
        if not others:
            return known
        ids_of = good.set_index("_line").loc[others, "original_event_id"]
        by_id = {event_id: owner for event_id, *owner in self.conn.execute(
            "SELECT original_event_id::text, instrument, granularity, event_creation_date "
            "FROM event_id_registry WHERE original_event_id = ANY(%s::uuid[])",
            (list(ids_of),))}
        owners = {line: by_id[event_id] for line, event_id in ids_of.items()}
        return [k._replace(**dict(zip(("instrument", "granularity", "ts"), owners[k.line],
                                      strict=True))) if k.line in owners else k
                for k in known]

    def _same_key(self, rows: pd.DataFrame) -> list[KnownId]:
        """For rows whose id is stored: stored under this very key?"""
        params = (sql_array(rows["original_event_id"]), sql_array(rows["_line"]),
                  sql_array(rows["instrument"]), sql_array(rows["granularity"]),
                  sql_array(rows["event_creation_date"], quote=True))
        if self.schema.registry:
            same = sql.SQL(
                "(SELECT (r.instrument, r.granularity, r.event_creation_date) "
                "= (c.instrument, c.granularity, c.ts) FROM event_id_registry r "
                "WHERE r.original_event_id = c.id)")
        else:  # a database before 0005: a row stored under the same key, in its leaf
            same = sql.SQL("CASE {} END").format(sql.SQL(" ").join(
                sql.SQL("WHEN (c.instrument, c.granularity) = ({}, {}) THEN (SELECT true "
                        "FROM {} e WHERE (e.instrument, e.granularity, e.event_creation_date, "
                        "e.original_event_id) = (c.instrument, c.granularity, c.ts, c.id))"
                        ).format(sql.Literal(p[0]), sql.Literal(p[1]),
                                 sql.Identifier(leaf_name(EVENTS, p)))
                for p in sorted(set(zip(rows["instrument"], rows["granularity"], strict=True)))
                if (self.pair is None or p == self.pair) and p not in self.staged
            ) or sql.SQL("WHEN false THEN NULL"))
        return [KnownId(line, None, same) for line, same in self.conn.execute(sql.SQL(
            "SELECT line, same FROM (SELECT c.line, {} AS same FROM unnest(%s::uuid[], "
            "%s::int[], %s::text[], %s::text[], %s::timestamptz[]) "
            "AS c(id, line, instrument, granularity, ts)) k WHERE same IS NOT NULL"
        ).format(same), params)]
