"""Bulk loading of event files: one code path for `sr-platform load` and the Dagster assets.

Per file (or per (instrument, granularity) slice of a file, for Dagster partition runs), in
memory bounded by the chunk size whatever the file's size (a slice also keeps the set of its
good ids, LoadResult.ids), in ONE transaction as sr_writer:
  1. scan (event_files.scan): hash the file as stored, refuse it whole if it is not an event
     file, and collect its (instrument, granularity) pairs from those two columns only;
  2. take an advisory lock per pair in sorted order (concurrent loaders of the same pair
     queue, never deadlock; ensure_partition() takes the same lock), then decide which pairs
     are new: stage_partitions() (sql/0006) creates their three leaves as standalone tables,
     without indexes, triggers or foreign key, under their final names;
  3. per chunk of CHUNK_ROWS records (the next chunk is read and validated in a thread
     meanwhile): one query probes the id registry (and, from the second chunk on, the ids
     seen earlier in the file, a temp table) for the chunk's ids of existing pairs, sent as
     arrays; rows already stored are skipped, ids the registry holds under another key and
     ids repeated in the file are quarantined; the new events and their level rows (id =
     level_id(event id), sql/0007) are COPYed straight into each pair's leaf (no tuple
     routing; the registry's statement trigger registers an existing leaf's rows in one
     INSERT per COPY); bad rows are quarantined (idempotent on (file hash, line));
  4. attach_staged_partitions() writes the new leaves' level rows from their events (server
     side), builds their indexes, adds the levels foreign key (one validating query),
     registers their ids in one INSERT and attaches them (a CHECK matching the bound spares
     ATTACH its scan); the load_log row; commit. The new leaves' rows skipped step 3's
     checks: if the attach finds an id repeated or stored already, the file is rolled back
     and loaded again with every row checked (load_file).
A crash, a kill or a lost connection at any point before the commit leaves nothing of the
file (the staged tables included); rerunning loads it exactly once.
"""

import hashlib
import io
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import errors, sql
from psycopg.types.json import Jsonb

from . import db, event_files
from .event_files import EventFile, EventFileError, RawEvents, event_suffix
from .keys import Pair, leaf_name
from .validate import (
    COPY_COLUMNS,
    DUPLICATE_IN_FILE,
    Rejected,
    Validated,
    duplicate_reason,
    raw_record,
    validate,
)

__all__ = ["LoadResult", "Pair", "ensure_partitions", "file_pairs", "find_event_files",
           "leaf_name", "load_file", "load_paths", "one_connection"]

LEVEL_COLUMNS = ("original_event_id", "event_type", "instrument", "granularity",
                 "event_creation_date")
# level_id() of sql/0007: a level's id is the MD5 of this namespace and its event's id
LEVEL_ID_NAMESPACE = uuid.UUID("c331958d-e54e-5ac6-a655-153dfb3b3bb6")
NULLABLE = {"volume_at_event"}
CHUNK_ROWS = 50_000  # records read, validated and written at a time (tests make it small)
COPY_CHUNK = 50_000  # rows per COPY buffer (its CSV text is built whole, ~150 bytes a row)
ANALYZE_MIN_ROWS = 1_000
LOAD_LOCK = 7_004_002  # advisory lock class for loads (first key); the pair hash is the second
ID_USED = "original_event_id unique"  # rule: the registry holds the id under another key
EVENTS, LEVELS, FEATURES = ("new_resistance_events", "support_and_resistance_master",
                            "event_features")
_CSV = pacsv.WriteOptions(include_header=False, quoting_style="none")


@dataclass
class LoadResult:
    path: Path
    rows_read: int = 0
    loaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    error: str | None = None  # set when the file was not loaded at all (nothing of it stored)
    database_failed: bool = False  # ... because the database failed, not the file
    pairs: dict[Pair, int] = field(default_factory=dict)  # rows loaded per pair
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    ids: set[str] = field(default_factory=set)  # the slice's good ids (pair loads only)
    ignored_columns: list[str] = field(default_factory=list)  # in the file, not in the contract
    new_pairs: list[Pair] = field(default_factory=list)  # partitions this load created
    held: list[Pair] = field(default_factory=list)  # the well-formed pairs the file holds
    log_id: int | None = None  # its load_log row
    xid: str | None = None  # its transaction (the xmin of every row it wrote)
    # per rule broken: its first human reason and its first lines (for the load summary)
    rule_reasons: dict[str, str] = field(default_factory=dict)
    rule_lines: dict[str, list[int]] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0


def find_event_files(paths: Iterable[Path]) -> list[Path]:
    """Files named on the command line, and event files (by suffix: .csv, .csv.gz, .parquet,
    .pq) inside named folders; dot-files inside folders are skipped (files being written should
    be moved in when done)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            # symlinks too, dangling ones included: they are reported, not silently skipped
            out.extend(sorted(q for q in p.rglob("*") if (q.is_file() or q.is_symlink())
                              and event_suffix(q) and not q.name.startswith(".")))
        else:
            out.append(p)
    return out


def file_pairs(path: Path) -> set[Pair]:
    """The well-formed (instrument, granularity) pairs a file has rows for: a streaming pre-scan
    of two columns, not a validation (a pair whose rows are all bad still gets its run, which
    quarantines them). Raises EventFileError when the file is not an event file."""
    return event_files.scan(path)[1].pairs


def _leaf_tuples(conn: psycopg.Connection, pairs: Iterable[Pair],
                 table: str = EVENTS) -> dict[Pair, float]:
    """The planner's row estimate of each existing leaf of `table` for `pairs` (a catalog
    lookup; list_partitions() would also size every leaf)."""
    names = {leaf_name(table, p): p for p in pairs}
    found = conn.execute("SELECT relname::text, reltuples FROM pg_class WHERE relname = ANY(%s) "
                         "AND relnamespace = 'public'::regnamespace AND relispartition",
                         (list(names),))
    return {names[name]: tuples for name, tuples in found}


def ensure_partitions(url: str, pairs: Iterable[Pair]) -> int:
    """Create missing partitions (each ensure_partition call commits on its own)."""
    created = 0
    with db.connect(url, role=db.WRITER_ROLE, autocommit=True) as conn:
        pairs = set(pairs)
        missing = pairs - _leaf_tuples(conn, pairs).keys()
        for instrument, granularity in sorted(missing):
            created += conn.execute("SELECT ensure_partition(%s, %s)",
                                    (instrument, granularity)).fetchone()[0]
    return created


def level_ids(event_ids: pd.Series) -> list[str]:
    """level_id() (sql/0007) of each canonical event id, as 32 hex digits (uuid input)."""
    ns, md5 = LEVEL_ID_NAMESPACE.bytes, hashlib.md5
    raw = bytes.fromhex(event_ids.str.replace("-", "", regex=False).str.cat())
    return [md5(ns + raw[i:i + 16]).hexdigest() for i in range(0, len(raw), 16)]


def copy_csv(frame: pd.DataFrame, columns: tuple[str, ...]) -> bytes:
    """COPY ... (FORMAT csv) text, written by Arrow's C++ writer. Values are validated text
    without commas, quotes or newlines (quoting_style none refuses any that would need
    quoting rather than write them wrong); an empty unquoted field (a null, NaN or NaT) is
    NULL: of the events only the nullable volume can be."""
    table = pa.Table.from_pandas(frame[list(columns)], preserve_index=False)
    out = io.BytesIO()
    pacsv.write_csv(table, out, _CSV)
    return out.getvalue()


def _copy(conn: psycopg.Connection, table: str, frame: pd.DataFrame, columns: tuple[str, ...],
          progress: Callable[[int], None] | None = None, freeze: bool = False) -> None:
    """COPY `frame` into `table`; `freeze` for a table this transaction created (a staged
    leaf): its rows are written frozen, so no later vacuum has to visit them to freeze or
    set hint bits."""
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv{})").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", FREEZE" if freeze else ""))) as cp:
        for start in range(0, len(frame), COPY_CHUNK):
            chunk = frame.iloc[start:start + COPY_CHUNK]
            cp.write(copy_csv(chunk, columns))
            if progress:
                progress(len(chunk))


def _quarantine(conn: psycopg.Connection, source: str, sha: str,
                rejected: list[Rejected]) -> None:
    if not rejected:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO rejected_events (source, source_sha256, line_number, raw_record, "
            "reasons) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (source_sha256, line_number) DO NOTHING",
            [(source, sha, r.line, Jsonb(r.raw), r.reasons) for r in rejected])


def _utc_text(ts: datetime) -> str:
    ts = ts.astimezone(UTC)
    frac = f".{ts.microsecond:06d}" if ts.microsecond else ""
    return f"{ts:%Y-%m-%dT%H:%M:%S}{frac}Z"


def id_used_reason(instrument: str, granularity: str, ts: datetime) -> str:
    return f"original_event_id: already used by {instrument} {granularity} {_utc_text(ts)}"


def _prefetched(items: Iterator) -> Iterator:
    """`items`, with the next one computed in a thread while the caller works on the current
    one (at most two in memory)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(next, items, None)
        while (item := ahead.result()) is not None:
            ahead = pool.submit(next, items, None)
            yield item


def _checked_chunks(f: EventFile, assume_tz: str | None, rows: int
                    ) -> Iterator[tuple[RawEvents, Validated]]:
    for raw in f.chunks(rows):
        yield raw, validate(raw, assume_tz=assume_tz)


def _array(values: pd.Series, quote: bool = False) -> str:
    """A PostgreSQL array literal of validated values (no quotes, backslashes, braces or
    commas): one text parameter, parsed by the server, instead of a Python object per element
    (built by pandas' str.cat: ~15x faster than a join over the Series)."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return "{" + ",".join(map(str, values.to_numpy().tolist())) + "}"
    if quote:
        return '{"' + values.str.cat(sep='","') + '"}'
    return "{" + values.str.cat(sep=",") + "}"


@dataclass
class _Schema:
    """What the connected database offers (a database at 0004 or 0005 still loads)."""

    registry: bool
    staging: bool
    level_ids: bool  # 0007: level rows get level_id() of their event's id
    origin: bool  # 0008: load_log.origin

    @classmethod
    def of(cls, conn: psycopg.Connection) -> "_Schema":
        return cls(*conn.execute(
            "SELECT to_regclass('public.event_id_registry') IS NOT NULL, "
            "to_regprocedure('public.stage_partitions(text[], text[])') IS NOT NULL, "
            "to_regprocedure('public.level_id(uuid)') IS NOT NULL, "
            "EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'public.load_log'::regclass "
            "AND attname = 'origin' AND NOT attisdropped)").fetchone())


class _FileLoad:
    """The database side of one file's load transaction, chunk by chunk."""

    def __init__(self, conn: psycopg.Connection, schema: _Schema, result: LoadResult,
                 pair: Pair | None, pairs: list[Pair], staged: set[Pair],
                 tuples: dict[Pair, float], source: str, sha256: str,
                 progress: Callable[[int], None] | None, lap: "_Lap",
                 trusted: set[Pair] | None = None) -> None:
        self.conn, self.schema, self.result, self.pair, self.lap = conn, schema, result, pair, lap
        self.source, self.sha256, self.progress = source, sha256, progress
        self.pairs, self.staged = pairs, staged
        # staged pairs whose rows skip the per-chunk id checks (see load_file); a file of new
        # pairs only (a backfill) skips them without looking at its rows' keys
        self.trusted = {f"{i}/{g}" for i, g in trusted or ()}
        self.all_trusted = bool(trusted) and set(pairs) <= set(trusted)
        # existing leaves: the planner's row estimate, and rows added since (ANALYZE policy)
        self.tuples = tuples
        self.pending: Counter = Counter()
        self.seen_table = False  # load_seen exists (made when a second chunk comes)
        self.unseen: tuple[str, str] | None = None  # the previous chunk's (ids, lines) arrays

    def in_slice(self, r: Rejected) -> bool:
        return self.pair is None or (str(r.raw.get("instrument", "")).strip(),
                                     str(r.raw.get("granularity", "")).strip()) == self.pair

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

    def _known(self, good: pd.DataFrame) -> list[tuple]:
        """(line, first line in the file or None, same key?, stored instrument, granularity,
        timestamp) for each good row whose id was seen earlier in the file or is stored.

        Two steps, so that a steady load (no id known) sends only ids and lines: which ids are
        known (to the registry, or earlier in the file), then, for the registry's only, whether
        each is stored under the same key (a whole reload: every row)."""
        conn = self.conn
        self._remember_previous()
        ids, lines = _array(good["original_event_id"]), _array(good["_line"])
        self.unseen = (ids, lines)
        # Scalar subqueries, one index probe per chunk row: a join let the planner (no
        # statistics on temp tables) pick plans that scanned load_seen or the registry for
        # every chunk, or worse (measured: 3 s to 90 s a chunk a few million rows in).
        first = (sql.SQL("(SELECT s.line FROM load_seen s WHERE s.id = c.id)")
                 if self.seen_table else sql.SQL("NULL::int"))
        if self.schema.registry:
            # not EXISTS (...): PostgreSQL 18 turns that into a hashed subplan that reads the
            # whole registry for every chunk
            stored = sql.SQL("(SELECT true FROM event_id_registry r "
                             "WHERE r.original_event_id = c.id)")
        else:  # a database before 0005: a row stored under the same key, in its leaf
            stored = sql.SQL("false")
        hits = conn.execute(sql.SQL(
            "SELECT line, first, stored FROM (SELECT c.line, {} AS first, {} AS stored "
            "FROM unnest(%s::uuid[], %s::int[]) AS c(id, line)) k "
            "WHERE first IS NOT NULL OR stored IS NOT NULL").format(first, stored),
            (ids, lines)).fetchall()
        known = [(line, first, None) for line, first, stored in hits if first is not None]
        ask = good[good["_line"].isin([line for line, first, stored in hits if first is None])]
        if not self.schema.registry:
            ask = good[~good["_line"].isin([k[0] for k in known])]
        if len(ask):
            known += self._same_key(ask)
        others = [line for line, first, same in known if first is None and same is False]
        owners = {}
        if others:  # rare: ids the registry holds under another key, named in the reason
            ids_of = good.set_index("_line").loc[others, "original_event_id"]
            by_id = {event_id: owner for event_id, *owner in conn.execute(
                "SELECT original_event_id::text, instrument, granularity, event_creation_date "
                "FROM event_id_registry WHERE original_event_id = ANY(%s::uuid[])",
                (list(ids_of),))}
            owners = {line: by_id[event_id] for line, event_id in ids_of.items()}
        return [(line, first, same, *owners.get(line, (None, None, None)))
                for line, first, same in known]

    def _same_key(self, ask: pd.DataFrame) -> list[tuple]:
        """(line, None, stored under this very key?) for rows whose id is stored."""
        params = (_array(ask["original_event_id"]), _array(ask["_line"]),
                  _array(ask["instrument"]), _array(ask["granularity"]),
                  _array(ask["event_creation_date"], quote=True))
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
                for p in sorted(set(zip(ask["instrument"], ask["granularity"], strict=True)))
                if (self.pair is None or p == self.pair) and p not in self.staged
            ) or sql.SQL("WHEN false THEN NULL"))
        return [(line, None, same) for line, same in self.conn.execute(sql.SQL(
            "SELECT line, same FROM (SELECT c.line, {} AS same FROM unnest(%s::uuid[], "
            "%s::int[], %s::text[], %s::text[], %s::timestamptz[]) "
            "AS c(id, line, instrument, granularity, ts)) k WHERE same IS NOT NULL"
        ).format(same), params)]

    def chunk(self, raw: RawEvents, checked: Validated) -> None:
        result, good = self.result, checked.good
        rejected = list(checked.rejected)
        duplicate = pd.Series(False, index=good.index)
        check = good
        if self.all_trusted:
            check = good.iloc[:0]
        elif self.trusted and len(good):
            check = good[~(good["instrument"] + "/" + good["granularity"]).isin(self.trusted)]
        if len(check):
            known = self._known(check)
            # already stored under the same key (a whole reload: every row), vectorised
            duplicate = good["_line"].isin([k[0] for k in known if k[1] is None and k[2]])
            drop = []
            odd = [k for k in known if not (k[1] is None and k[2])]
            if odd:
                by_line = pd.Series(good.index, index=good["_line"].to_numpy())
                raw_pos = pd.Series(range(len(raw.frame)), index=raw.frame["_line"].to_numpy())
            for line, first, _same, instrument, granularity, ts in odd:
                i = by_line[line]
                event_id = good.at[i, "original_event_id"]
                if first is not None:
                    rejected.append(Rejected(line, raw_record(raw.frame, raw_pos[line]),
                                             [duplicate_reason(first, event_id)],
                                             [DUPLICATE_IN_FILE]))
                    drop.append(i)
                elif self.pair is None or (good.at[i, "instrument"],
                                           good.at[i, "granularity"]) == self.pair:
                    rejected.append(Rejected(line, raw_record(raw.frame, raw_pos[line]),
                                             [id_used_reason(instrument, granularity, ts)],
                                             [ID_USED]))
                    drop.append(i)
            if drop:
                good, duplicate = good.drop(index=drop), duplicate.drop(index=drop)
            self.lap("dedupe")
        if self.pair is not None:
            mine = (good["instrument"] == self.pair[0]) & (good["granularity"] == self.pair[1])
            good, duplicate = good[mine], duplicate[mine]
            result.ids.update(good["original_event_id"])
        fresh = good[~duplicate.to_numpy()]
        in_slice = [r for r in rejected if self.in_slice(r)]
        result.rows_read += len(good) + len(in_slice)
        result.duplicates += len(good) - len(fresh)
        result.rejected += len(in_slice)
        for r in sorted(in_slice, key=lambda r: r.line):
            result.reasons.update(r.rules)
            for rule, reason in zip(r.rules, r.reasons, strict=True):
                result.rule_reasons.setdefault(rule, reason)
                if len(lines := result.rule_lines.setdefault(rule, [])) < 5:
                    lines.append(r.line)
        if len(fresh):
            self.write(fresh)
        # quarantine every bad row of the file (also those of other slices: the insert is
        # idempotent, and rows with no valid pair belong to no slice)
        _quarantine(self.conn, self.source, self.sha256, sorted(rejected, key=lambda r: r.line))
        self.lap("quarantine")

    def write(self, fresh: pd.DataFrame) -> None:
        """COPY the rows into each pair's leaves: events, then (after ANALYZE where an
        existing events leaf grew materially, see _stale_leaves) their level rows."""
        conn, result = self.conn, self.result
        groups = fresh.groupby(["instrument", "granularity"], sort=True).indices
        parts = {}
        for p, idx in groups.items():
            part = fresh.take(idx)
            parts[p] = part
            result.pairs[p] = result.pairs.get(p, 0) + len(part)
            _copy(conn, leaf_name(EVENTS, p), part, COPY_COLUMNS, self.progress,
                  freeze=p in self.staged)
            if p not in self.staged:
                self.pending[p] += len(part)
        self.lap("copy events")
        for p in _stale_leaves(self.tuples, self.pending):
            conn.execute("SELECT analyze_partition(%s, %s)", p)
            self.tuples[p] = max(self.tuples[p], 0) + self.pending.pop(p)
        self.lap("analyze")
        for p, part in parts.items():
            if p not in self.staged:  # a staged leaf's levels are written at attach
                if self.schema.level_ids:
                    _copy(conn, leaf_name(LEVELS, p),
                          part.assign(id=level_ids(part["original_event_id"])),
                          ("id", *LEVEL_COLUMNS))
                else:
                    _copy(conn, leaf_name(LEVELS, p), part, LEVEL_COLUMNS)
        self.lap("copy levels")
        result.loaded += len(fresh)


def _stale_leaves(tuples: dict[Pair, float], adding: dict[Pair, int]) -> list[Pair]:
    """Existing pairs whose events leaf the planner believes (nearly) empty and that this
    load has added more than ANALYZE_MIN_ROWS rows to (`tuples`: the estimates, kept up to
    date by the caller).

    Measured here: 100k level rows took 525 s when the events leaf they reference had only
    the statistics of an empty table (the FK check, planned once per session, scanned the
    leaf for every row) and 1.4 s after ANALYZE. A leaf believed to hold ANALYZE_MIN_ROWS rows
    or more already gets the index probe (the key is unique), however much it grows, so only
    near-empty leaves are analyzed (before 0006 every 20% of growth was: 5.4 s of a 200k-row
    steady load). Staged leaves need none: their foreign key is validated by one query, and
    building their indexes sets their row estimate."""
    return [p for p, n in adding.items() if p in tuples
            and tuples[p] < ANALYZE_MIN_ROWS < n]


class _Connection:
    """A load connection as sr_writer, reused across the files of one load_paths() call
    (a connection per file cost more than the load of a small file)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: psycopg.Connection | None = None
        self._cm = None
        self.schema: _Schema | None = None

    def get(self) -> psycopg.Connection:
        if self.conn is not None and (self.conn.closed or self.conn.broken):
            self.close()
        if self.conn is None:
            self._cm = db.connect(self.url, role=db.WRITER_ROLE)
            self.conn = self._cm.__enter__()
            # load_seen's index (16 bytes an id plus overhead) in memory, not spilled to disk
            # (settable only before the session's first temp table; released when it ends)
            self.conn.execute("SET temp_buffers = '256MB'")
            self.schema = _Schema.of(self.conn)
            self.conn.commit()
        return self.conn

    def close(self) -> None:
        if self._cm is not None:
            cm, self._cm, self.conn = self._cm, None, None
            try:
                cm.__exit__(None, None, None)
            except psycopg.Error:
                pass


@contextmanager
def one_connection(url: str) -> Iterator[_Connection]:
    """A writer connection for the loads of several files (load_file's `connection`)."""
    c = _Connection(url)
    try:
        yield c
    finally:
        c.close()


class _Recheck(Exception):
    """A new partition's rows, loaded without the per-row id checks, hold an id that is stored
    already or repeated in the file."""


def load_file(path: Path, url: str | None = None, pair: Pair | None = None,
              assume_tz: str | None = None,
              progress: Callable[[int], None] | None = None,
              connection: _Connection | None = None, origin: str | None = None) -> LoadResult:
    """Load one file (or only `pair`'s rows of it) in one transaction. Raises EventFileError
    when the file is not an event file or cannot be read (the database is then untouched), and
    psycopg errors when the database fails (the transaction is then rolled back: nothing of the
    file is stored).

    Rows of new partitions (staged leaves) of a whole file are first loaded without the
    per-chunk id checks: every id they hold twice or share with a stored event makes the
    attach fail (the leaf's primary key, the registry's), and only then is the file loaded
    again with every row checked, which quarantines those rows by rule. A first load of fresh
    ids (backfills, new instruments) skips the checks' cost: a third of a new partition's
    load."""
    url = url or db.database_url()
    if connection is None:
        with one_connection(url) as c:
            return load_file(path, url, pair, assume_tz, progress, c, origin)
    reported = [0]

    def counted(n: int) -> None:
        reported[0] += n
        progress(n)
    try:
        return _load_file(path, url, pair, assume_tz, counted if progress else None,
                          connection, trust_staged=True, origin=origin)
    except _Recheck:
        pass
    skip = [reported[0]]  # the progress already shown is not shown twice

    def resumed(n: int) -> None:
        shown = min(n, skip[0])
        skip[0] -= shown
        if n > shown:
            progress(n - shown)
    return _load_file(path, url, pair, assume_tz, resumed if progress else None, connection,
                      trust_staged=False, origin=origin)


def _load_file(path: Path, url: str, pair: Pair | None, assume_tz: str | None,
               progress: Callable[[int], None] | None, connection: _Connection,
               trust_staged: bool, origin: str | None = None) -> LoadResult:
    started = time.perf_counter()
    result = LoadResult(Path(path))
    lap = _Lap(result.timings)
    f, scanned = event_files.scan(path)
    result.ignored_columns = scanned.ignored_columns
    pairs = sorted(scanned.pairs if pair is None else scanned.pairs & {pair})
    result.held = pairs
    lap("scan")
    conn = connection.get()
    schema = connection.schema
    if not schema.staging:  # a database before 0006: partitions first, in their own commits
        ensure_partitions(url, pairs)
        lap("partitions")
    source = str(Path(path).resolve())
    try:
        begun = conn.execute(
            "SELECT clock_timestamp(), (SELECT count(pg_advisory_xact_lock(%s, hashtext(k))) "
            "FROM (SELECT DISTINCT unnest(%s::text[]) AS k ORDER BY 1) s)",
            (LOAD_LOCK, [f"{i}/{g}" for i, g in pairs])).fetchone()[0]
        lap("lock")
        staged: set[Pair] = set()
        if schema.staging and pairs:
            # decided under the pairs' locks: no other load or ensure_partition() can make
            # these leaves until this transaction ends
            made = conn.execute("SELECT stage_partitions(%s, %s)",
                                ([p[0] for p in pairs], [p[1] for p in pairs])).fetchone()[0]
            staged = {tuple(x.split("/")) for x in made}
            missing = [p for p in pairs if p not in staged and
                       not all(_leaf_tuples(conn, [p], t) for t in (EVENTS, LEVELS, FEATURES))]
            for p in missing:  # a pair with some leaves only (made outside these functions)
                conn.execute("SELECT ensure_partition(%s, %s)", p)
            lap("stage")
        tuples = _leaf_tuples(conn, [p for p in pairs if p not in staged])
        load = _FileLoad(conn, schema, result, pair, pairs, staged, tuples, source,
                         scanned.sha256, progress, lap,
                         # a slice's rows are checked: the other slices' rows, which its rows
                         # may repeat, are not written, so the attach could not see them
                         staged if trust_staged and pair is None else None)
        for raw, checked in _prefetched(_checked_chunks(f, assume_tz, CHUNK_ROWS)):
            lap("read+validate (waiting)")
            load.chunk(raw, checked)
        if staged:
            new = sorted(staged)
            try:
                conn.execute("SELECT attach_staged_partitions(%s, %s)",
                             ([p[0] for p in new], [p[1] for p in new]))
            except errors.UniqueViolation:
                if load.trusted:
                    raise _Recheck() from None
                raise
            result.new_pairs = new
            lap("index+attach")
        extra = (origin, Jsonb({f"{i}/{g}": n for (i, g), n in sorted(result.pairs.items())
                                if n})) if schema.origin else ()
        result.log_id, result.xid = conn.execute(
            "INSERT INTO load_log (source, source_sha256, instrument, granularity, rows_read, "
            "rows_loaded, rows_duplicate, rows_rejected, started_at"
            + (", origin, pairs" if extra else "") + ") "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s" + (", %s, %s" if extra else "")
            + ") RETURNING id, xmin::text",
            (source, scanned.sha256, pair[0] if pair else None, pair[1] if pair else None,
             result.rows_read, result.loaded, result.duplicates, result.rejected, begun,
             *extra)).fetchone()
        conn.commit()
    except BaseException:
        # the rollback (or, on a lost connection, the server's) leaves nothing of the file
        try:
            conn.rollback()
        except psycopg.Error:
            connection.close()
        raise
    lap("commit")
    result.seconds = time.perf_counter() - started
    return result


class _Lap:
    """Records the seconds since the previous lap under a phase name."""

    def __init__(self, into: dict[str, float]) -> None:
        self.into, self.last = into, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.into[name] = self.into.get(name, 0.0) + now - self.last
        self.last = now


def load_paths(paths: Iterable[Path], url: str | None = None, assume_tz: str | None = None,
               progress_factory: Callable[[Path, int], Callable[[int], None]] | None = None,
               origin: str | None = None) -> list[LoadResult]:
    """Load each file in its own transaction (on one connection). A file that is not an event
    file, cannot be read, or whose load the database aborted is reported (LoadResult.error;
    nothing of it stored) and the others still load."""
    url = url or db.database_url()
    results: list[LoadResult] = []
    with one_connection(url) as connection:
        for path in find_event_files(paths):
            try:
                progress = progress_factory(path, 0) if progress_factory else None
            except OSError:  # the factory looks at the file; the load reports why it cannot
                progress = None
            try:
                results.append(load_file(path, url, assume_tz=assume_tz, progress=progress,
                                         connection=connection, origin=origin))
            except EventFileError as exc:
                results.append(LoadResult(Path(path), error=str(exc)))
            except psycopg.Error as exc:
                # a lost server or connection, or a concurrent load claiming the same id first
                results.append(LoadResult(Path(path), database_failed=True, error=(
                    f"{path}: not loaded, a database error ended the load and the file's "
                    f"transaction was rolled back (nothing of it stored; rerun to load it): "
                    f"{exc.__class__.__name__}: {str(exc).strip()}")))
    return results
