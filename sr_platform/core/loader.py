"""Bulk loading of event files: one code path for `sr-platform load` and the Dagster assets.

Per file (or per (instrument, granularity) slice of a file, for Dagster partition runs), in
ONE transaction as sr_writer, reading CHUNK_ROWS records at a time whatever the file's size
(what stays in memory beyond a chunk: a slice keeps the set of its good ids, LoadResult.ids;
ids of earlier chunks are kept on the server, in a temp table):
  1. scan (event_files.scan_event_file): hash the file as stored, refuse it whole if it is
     not an event file, and collect its (instrument, granularity) pairs from those two
     columns only;
  2. take an advisory lock per pair in sorted order (concurrent loaders of the same pair
     queue, never deadlock; ensure_partition() takes the same lock), then decide which pairs
     are new: stage_partitions() (sql/0006, partition_ddl) creates their three leaves as
     standalone tables, without indexes, triggers or foreign key, under their final names;
  3. per chunk (the next chunk is read and validated in a thread meanwhile; file_transaction):
     one query probes the id registry (and, from the second chunk on, the ids seen earlier in
     the file, a temp table) for the chunk's ids of existing pairs, sent as arrays
     (duplicate_ids); rows already stored are skipped, ids the registry holds under another
     key and ids repeated in the file are quarantined; the new events and their level rows
     (id = level_id(event id), sql/0007: ids.level_ids) are COPYed straight into each pair's
     leaf (copy_encoding; no tuple routing; the registry's statement trigger registers an
     existing leaf's rows in one INSERT per COPY); bad rows are quarantined (idempotent on
     (file hash, line));
  4. attach_staged_partitions() writes the new leaves' level rows from their events (server
     side), builds their indexes, adds the levels foreign key (one validating query),
     registers their ids in one INSERT and attaches them (a CHECK matching the bound spares
     ATTACH its scan); the load_log row; commit. The new leaves' rows skipped step 3's
     checks: if the attach finds an id repeated or stored already, the file is rolled back
     and loaded again with every row checked (the recheck path: load_file).
A crash, a kill or a lost connection at any point before the commit leaves nothing of the
file (the staged tables included); rerunning loads it exactly once.

The names other modules import from here (LoadResult, the file discovery, the partition DDL,
the connection) are re-exported from where they live.
"""

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb

from . import db, event_files
from .duplicate_ids import ID_USED, id_used_reason
from .event_files import EventFile, EventFileError, RawEvents, scan_event_file
from .file_discovery import file_pairs, find_event_files
from .file_transaction import FileTransaction
from .ids import LEVEL_ID_NAMESPACE, level_ids
from .keys import EVENTS, FEATURES, LEVEL_COLUMNS, LEVELS, Pair, leaf_name
from .load_connection import LoadConnection, one_connection
from .load_result import LoadResult
from .load_timing import PhaseTimer, prefetched
from .partition_ddl import (
    attach_staged_partitions,
    ensure_partitions,
    leaf_estimates,
    stage_partitions,
)
from .validate import Validated, validate

__all__ = ["EVENTS", "FEATURES", "ID_USED", "LEVELS", "LEVEL_COLUMNS", "LEVEL_ID_NAMESPACE",
           "EventFileError", "LoadConnection", "LoadResult", "Pair", "ensure_partitions",
           "file_pairs", "find_event_files", "id_used_reason", "leaf_name", "level_ids",
           "load_file", "load_paths", "one_connection"]

LOAD_LOCK = 7_004_002  # advisory lock class for loads (first key); the pair hash is the second


def _validated_chunks(f: EventFile, assume_tz: str | None) -> Iterator[tuple[RawEvents,
                                                                           Validated]]:
    for raw in f.chunks(event_files.CHUNK_ROWS):
        yield raw, validate(raw, assume_tz=assume_tz)


class _Recheck(Exception):
    """A new partition's rows, loaded without the per-row id checks, hold an id that is stored
    already or repeated in the file."""


def load_file(path: Path, url: str | None = None, pair: Pair | None = None,
              assume_tz: str | None = None,
              progress: Callable[[int], None] | None = None,
              connection: LoadConnection | None = None, origin: str | None = None
              ) -> LoadResult:
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


def _lock_pairs(conn: psycopg.Connection, pairs: list[Pair]):
    """Take the pairs' load locks in sorted order; returns the transaction's start time."""
    return conn.execute(
        "SELECT clock_timestamp(), (SELECT count(pg_advisory_xact_lock(%s, hashtext(k))) "
        "FROM (SELECT DISTINCT unnest(%s::text[]) AS k ORDER BY 1) s)",
        (LOAD_LOCK, [f"{i}/{g}" for i, g in pairs])).fetchone()[0]


def _log_load(conn: psycopg.Connection, connection: LoadConnection, result: LoadResult,
              source: str, sha256: str, pair: Pair | None, begun, origin: str | None) -> None:
    """The file's load_log row (origin and per-pair rows from 0008 on); sets its id and the
    transaction's id on `result`."""
    extra = (origin, Jsonb({f"{i}/{g}": n for (i, g), n in sorted(result.pairs.items())
                            if n})) if connection.schema.origin else ()
    result.log_id, result.xid = conn.execute(
        "INSERT INTO load_log (source, source_sha256, instrument, granularity, rows_read, "
        "rows_loaded, rows_duplicate, rows_rejected, started_at"
        + (", origin, pairs" if extra else "") + ") "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s" + (", %s, %s" if extra else "")
        + ") RETURNING id, xmin::text",
        (source, sha256, pair[0] if pair else None, pair[1] if pair else None,
         result.rows_read, result.loaded, result.duplicates, result.rejected, begun,
         *extra)).fetchone()


def _load_file(path: Path, url: str, pair: Pair | None, assume_tz: str | None,
               progress: Callable[[int], None] | None, connection: LoadConnection,
               trust_staged: bool, origin: str | None = None) -> LoadResult:
    started = time.perf_counter()
    result = LoadResult(Path(path))
    timer = PhaseTimer(result.timings)
    f, scanned = scan_event_file(path)
    result.ignored_columns = scanned.ignored_columns
    pairs = sorted(scanned.pairs if pair is None else scanned.pairs & {pair})
    result.held = pairs
    timer("scan")
    conn = connection.get()
    if not connection.schema.staging:  # before 0006: partitions first, in their own commits
        ensure_partitions(url, pairs)
        timer("partitions")
    source = str(Path(path).resolve())
    try:
        begun = _lock_pairs(conn, pairs)
        timer("lock")
        staged: set[Pair] = set()
        if connection.schema.staging and pairs:
            staged = stage_partitions(conn, pairs)
            timer("stage")
        tuples = leaf_estimates(conn, [p for p in pairs if p not in staged])
        load = FileTransaction(conn, connection.schema, result, pair, pairs, staged, tuples,
                               source, scanned.sha256, progress, timer,
                               # a slice's rows are checked: the other slices' rows, which its
                               # rows may repeat, are not written, so the attach could not see
                               # them
                               staged if trust_staged and pair is None else None)
        for raw, checked in prefetched(_validated_chunks(f, assume_tz)):
            timer("read+validate (waiting)")
            load.chunk(raw, checked)
        if staged:
            _attach(conn, sorted(staged), recheck=bool(load.trusted))
            result.new_pairs = sorted(staged)
            timer("index+attach")
        _log_load(conn, connection, result, source, scanned.sha256, pair, begun, origin)
        conn.commit()
    except BaseException:
        # the rollback (or, on a lost connection, the server's) leaves nothing of the file
        try:
            conn.rollback()
        except psycopg.Error:
            connection.close()
        raise
    timer("commit")
    result.seconds = time.perf_counter() - started
    return result


def _attach(conn: psycopg.Connection, pairs: list[Pair], recheck: bool) -> None:
    """Attach the staged leaves; an id they repeat or share with a stored event makes the load
    start over with every row checked (when their rows skipped the checks)."""
    try:
        attach_staged_partitions(conn, pairs)
    except errors.UniqueViolation:
        if recheck:
            raise _Recheck() from None
        raise


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
