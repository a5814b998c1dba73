"""Bulk loading of event files: one code path for `sr-platform load` and the Dagster assets.

Per file (or per (instrument, granularity) slice of a file, for Dagster partition runs), in
memory bounded by the chunk size whatever the file's size:
  1. scan (event_files.scan): hash the file as stored, refuse it whole if it is not an event
     file, and collect its (instrument, granularity) pairs from those two columns only;
  2. create missing partitions through ensure_partition(), in their own short transactions
     (partition DDL locks the parent, so it must never wait inside a load transaction);
  3. one transaction as sr_writer: take an advisory lock per pair in sorted order (concurrent
     loaders of the same pair queue, never deadlock); then per chunk of CHUNK_ROWS records
     (the next chunk is read and validated in a thread meanwhile): refuse ids seen earlier in
     the file (a temp table of (id, line), so that memory is the server's, on disk), skip the
     rows already stored, quarantine ids the registry holds under another key, COPY the new
     events and their level rows, quarantine the bad rows (idempotent on (file hash, line));
     finally write the load_log row and commit.
A crash, a kill or a lost connection at any point before the commit leaves nothing of the
file; rerunning loads it exactly once.
"""

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg
from psycopg import sql
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
           "leaf_name", "load_file", "load_paths"]

LEVEL_COLUMNS = ("original_event_id", "event_type", "instrument", "granularity",
                 "event_creation_date")
NULLABLE = {"volume_at_event"}
CHUNK_ROWS = 50_000  # records read, validated and written at a time (tests make it small)
COPY_CHUNK = 10_000  # rows per COPY buffer: its text is built whole, ~250 bytes a row
ANALYZE_MIN_ROWS = 1_000
LOAD_LOCK = 7_004_002  # advisory lock class for loads (first key); the pair hash is the second
ID_USED = "original_event_id unique"  # rule: the registry holds the id under another key


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


def _leaf_tuples(conn: psycopg.Connection, pairs: Iterable[Pair]) -> dict[Pair, float]:
    """The planner's row estimate of each existing events leaf of `pairs` (a catalog lookup;
    list_partitions() would also size every leaf)."""
    names = {leaf_name("new_resistance_events", p): p for p in pairs}
    found = conn.execute("SELECT relname::text, reltuples FROM pg_class WHERE relname = ANY(%s) "
                         "AND relnamespace = 'public'::regnamespace", (list(names),))
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


def _copy_text(frame: pd.DataFrame, columns: tuple[str, ...]) -> bytes:
    """COPY text format, built column-wise (a row-wise join costs ~50 us/row). Values are
    validated text without tabs, newlines or backslashes; '' is NULL."""
    cols = [frame[c].where(frame[c] != "", "\\N") if c in NULLABLE else frame[c]
            for c in columns]
    body = cols[0].str.cat(cols[1:], sep="\t")
    return ("\n".join(body.tolist()) + "\n").encode()


def _copy(conn: psycopg.Connection, table: str, frame: pd.DataFrame, columns: tuple[str, ...],
          progress: Callable[[int], None] | None = None) -> None:
    with conn.cursor().copy(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
        for start in range(0, len(frame), COPY_CHUNK):
            chunk = frame.iloc[start:start + COPY_CHUNK]
            cp.write(_copy_text(chunk, columns))
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


class _FileLoad:
    """The database side of one file's load transaction, chunk by chunk."""

    def __init__(self, conn: psycopg.Connection, result: LoadResult, pair: Pair | None,
                 source: str, sha256: str, progress: Callable[[int], None] | None,
                 lap: "_Lap") -> None:
        self.conn, self.result, self.pair, self.lap = conn, result, pair, lap
        self.source, self.sha256, self.progress = source, sha256, progress
        self.registry = conn.execute(
            "SELECT to_regclass('public.event_id_registry') IS NOT NULL").fetchone()[0]
        self.pending: Counter = Counter()  # rows added per pair since its leaf's last ANALYZE
        # ids of the file's good rows so far (the in-file duplicate rule across chunks)
        conn.execute("CREATE TEMP TABLE load_seen (id uuid PRIMARY KEY, line int NOT NULL) "
                     "ON COMMIT DROP")
        conn.execute("CREATE TEMP TABLE load_chunk (id uuid, line int, instrument text, "
                     "granularity text, ts timestamptz) ON COMMIT DROP")

    def in_slice(self, r: Rejected) -> bool:
        return self.pair is None or (str(r.raw.get("instrument", "")).strip(),
                                     str(r.raw.get("granularity", "")).strip()) == self.pair

    def _known(self, good: pd.DataFrame) -> list[tuple]:
        """(line, first line in the file or None, same key?, stored instrument, granularity,
        timestamp) for each good row whose id was seen earlier in the file or is stored."""
        conn = self.conn
        stage = pd.DataFrame({"id": good["original_event_id"], "line": good["_line"].astype(str),
                              "instrument": good["instrument"],
                              "granularity": good["granularity"],
                              "ts": good["event_creation_date"]})
        _copy(conn, "load_chunk", stage, ("id", "line", "instrument", "granularity", "ts"))
        # Scalar subqueries, one index probe per chunk row: a join let the planner (no
        # statistics on temp tables) pick plans that scanned load_seen or the registry for
        # every chunk, or worse (measured: 3 s to 90 s a chunk a few million rows in).
        if self.registry:
            stored = sql.SQL(
                "(SELECT (r.instrument, r.granularity, r.event_creation_date) "
                "= (c.instrument, c.granularity, c.ts) FROM event_id_registry r "
                "WHERE r.original_event_id = c.id)")
        else:  # a database before 0005: a row stored under the same key, in its leaf
            stored = sql.SQL("CASE {} END").format(sql.SQL(" ").join(
                sql.SQL("WHEN (c.instrument, c.granularity) = ({}, {}) THEN (SELECT true "
                        "FROM {} e WHERE (e.instrument, e.granularity, e.event_creation_date, "
                        "e.original_event_id) = (c.instrument, c.granularity, c.ts, c.id))"
                        ).format(sql.Literal(p[0]), sql.Literal(p[1]),
                                 sql.Identifier(leaf_name("new_resistance_events", p)))
                for p in sorted(set(zip(good["instrument"], good["granularity"], strict=True)))
                if self.pair is None or p == self.pair) or sql.SQL("WHEN false THEN NULL"))
        known = conn.execute(sql.SQL(
            "SELECT line, first, same FROM (SELECT c.line, "
            "(SELECT s.line FROM load_seen s WHERE s.id = c.id) AS first, {} AS same "
            "FROM load_chunk c) k WHERE first IS NOT NULL OR same IS NOT NULL"
        ).format(stored)).fetchall()
        others = [line for line, first, same in known if first is None and same is False]
        owners = {}
        if others:  # rare: ids the registry holds under another key, named in the reason
            ids = good.set_index("_line").loc[others, "original_event_id"]
            by_id = {event_id: owner for event_id, *owner in conn.execute(
                "SELECT original_event_id::text, instrument, granularity, event_creation_date "
                "FROM event_id_registry WHERE original_event_id = ANY(%s::uuid[])",
                (list(ids),))}
            owners = {line: by_id[event_id] for line, event_id in ids.items()}
        known = [(line, first, same, *owners.get(line, (None, None, None)))
                 for line, first, same in known]
        conn.execute("INSERT INTO load_seen SELECT id, line FROM load_chunk "
                     "ON CONFLICT (id) DO NOTHING")
        conn.execute("TRUNCATE load_chunk")
        return known

    def chunk(self, raw: RawEvents, checked: Validated) -> None:
        result, good = self.result, checked.good
        rejected = list(checked.rejected)
        duplicate = pd.Series(False, index=good.index)
        if len(good):
            known = self._known(good)
            # already stored under the same key (a whole reload: every row), vectorised
            duplicate = good["_line"].isin([k[0] for k in known if k[1] is None and k[2]])
            by_line = pd.Series(good.index, index=good["_line"].to_numpy())
            raw_pos = pd.Series(range(len(raw.frame)), index=raw.frame["_line"].to_numpy())
            drop = []
            for line, first, same, instrument, granularity, ts in known:
                if first is None and same:
                    continue
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
        fresh = good[~duplicate]
        in_slice = [r for r in rejected if self.in_slice(r)]
        result.rows_read += len(good) + len(in_slice)
        result.duplicates += len(good) - len(fresh)
        result.rejected += len(in_slice)
        for r in in_slice:
            result.reasons.update(r.rules)
        if len(fresh):
            self.write(fresh)
        # quarantine every bad row of the file (also those of other slices: the insert is
        # idempotent, and rows with no valid pair belong to no slice)
        _quarantine(self.conn, self.source, self.sha256, sorted(rejected, key=lambda r: r.line))
        self.lap("quarantine")

    def write(self, fresh: pd.DataFrame) -> None:
        conn, result = self.conn, self.result
        counts = fresh.groupby(["instrument", "granularity"], sort=True).size()
        for p, n in counts.items():
            result.pairs[p] = result.pairs.get(p, 0) + int(n)
            self.pending[p] += int(n)
        _copy(conn, "new_resistance_events", fresh, COPY_COLUMNS, self.progress)
        self.lap("copy events")
        # before the levels' FK checks probe these leaves (see _stale_leaves)
        for p in _stale_leaves(conn, self.pending):
            conn.execute("SELECT analyze_partition(%s, %s)", p)
            del self.pending[p]
        self.lap("analyze")
        _copy(conn, "support_and_resistance_master", fresh, LEVEL_COLUMNS)
        self.lap("copy levels")
        result.loaded += len(fresh)


def _stale_leaves(conn: psycopg.Connection, adding: dict[Pair, int]) -> list[Pair]:
    """Pairs whose events leaf has grown by more than a fifth of what its statistics say.

    Measured here: 100k level rows took 525 s when the events leaf they reference had only
    the statistics of an empty table (the FK check planned a seq scan per row) and 1.4 s after
    ANALYZE, so a leaf is analyzed inside the load whenever the load changes it materially
    (below ANALYZE_MIN_ROWS rows a scan per check costs less than the ANALYZE)."""
    return [p for p, tuples in _leaf_tuples(conn, adding).items()
            if adding[p] > max(ANALYZE_MIN_ROWS, 0.2 * max(tuples, 0))]


def load_file(path: Path, url: str | None = None, pair: Pair | None = None,
              assume_tz: str | None = None,
              progress: Callable[[int], None] | None = None) -> LoadResult:
    """Load one file (or only `pair`'s rows of it) in one transaction. Raises EventFileError
    when the file is not an event file or cannot be read (the database is then untouched), and
    psycopg errors when the database fails (the transaction is then rolled back: nothing of the
    file is stored)."""
    url = url or db.database_url()
    started = time.perf_counter()
    result = LoadResult(Path(path))
    lap = _Lap(result.timings)
    f, scanned = event_files.scan(path)
    result.ignored_columns = scanned.ignored_columns
    pairs = sorted(scanned.pairs if pair is None else scanned.pairs & {pair})
    lap("scan")
    ensure_partitions(url, pairs)
    lap("partitions")
    source = str(Path(path).resolve())
    with db.connect(url, role=db.WRITER_ROLE) as conn:
        # load_seen's index (16 bytes an id plus overhead) in memory, not spilled to disk
        # (settable only before the session's first temp table; released when it ends)
        conn.execute("SET temp_buffers = '256MB'")
        begun = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        for p in pairs:
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                         (LOAD_LOCK, f"{p[0]}/{p[1]}"))
        load = _FileLoad(conn, result, pair, source, scanned.sha256, progress, lap)
        lap("lock")
        for raw, checked in _prefetched(_checked_chunks(f, assume_tz, CHUNK_ROWS)):
            lap("read+validate (waiting)")
            load.chunk(raw, checked)
        conn.execute(
            "INSERT INTO load_log (source, source_sha256, instrument, granularity, rows_read, "
            "rows_loaded, rows_duplicate, rows_rejected, started_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (source, scanned.sha256, pair[0] if pair else None, pair[1] if pair else None,
             result.rows_read, result.loaded, result.duplicates, result.rejected, begun))
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
               ) -> list[LoadResult]:
    """Load each file in its own transaction. A file that is not an event file, cannot be read,
    or whose load the database aborted is reported (LoadResult.error; nothing of it stored)
    and the others still load."""
    url = url or db.database_url()
    results: list[LoadResult] = []
    for path in find_event_files(paths):
        try:
            progress = progress_factory(path, 0) if progress_factory else None
        except OSError:  # the factory looks at the file; the load reports why it cannot
            progress = None
        try:
            results.append(load_file(path, url, assume_tz=assume_tz, progress=progress))
        except EventFileError as exc:
            results.append(LoadResult(Path(path), error=str(exc)))
        except psycopg.Error as exc:
            # a lost server or connection, or a concurrent load claiming the same id first
            results.append(LoadResult(Path(path), database_failed=True, error=(
                f"{path}: not loaded, a database error ended the load and the file's "
                f"transaction was rolled back (nothing of it stored; rerun to load it): "
                f"{exc.__class__.__name__}: {str(exc).strip()}")))
    return results
