"""Bulk loading of event files: one code path for `sr-platform load` and the Dagster assets.

Per file (or per (instrument, granularity) slice of a file, for Dagster partition runs):
  1. read and validate in pandas (validate.py); bad rows are set aside with every reason;
  2. create missing partitions through ensure_partition(), in their own short transactions
     (partition DDL locks the parent, so it must never wait inside a load transaction);
  3. one transaction as sr_writer: take an advisory lock per (instrument, granularity) in
     sorted order (concurrent loaders of the same pair queue, never deadlock), skip the rows
     already in the table, COPY the new events and their level rows, quarantine the bad rows
     (idempotent on (file hash, line)), write the load_log row, commit.
A crash or kill at any point before the commit leaves nothing of the file; rerunning loads it
exactly once.
"""

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from . import db
from .event_files import SUFFIXES, EventFileError, read_event_file
from .validate import COPY_COLUMNS, Rejected, validate

Pair = tuple[str, str]  # (instrument, granularity)
LEVEL_COLUMNS = ("original_event_id", "event_type", "instrument", "granularity",
                 "event_creation_date")
COPY_CHUNK = 50_000
LOAD_LOCK = 7_004_002  # advisory lock class for loads (first key); the pair hash is the second


@dataclass
class LoadResult:
    path: Path
    rows_read: int = 0
    loaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    error: str | None = None  # set when the file is not an event file (nothing loaded)
    pairs: dict[Pair, int] = field(default_factory=dict)  # rows loaded per pair

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0


def find_event_files(paths: Iterable[Path]) -> list[Path]:
    """Files named on the command line, and event files (by suffix) inside named folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in SUFFIXES))
        else:
            out.append(p)
    return out


def file_pairs(path: Path) -> set[Pair]:
    """The valid (instrument, granularity) pairs a file has rows for (a cheap pre-scan)."""
    raw = read_event_file(path)
    good = validate(raw).good
    return set(zip(good["instrument"], good["granularity"], strict=True))


def _existing_partitions(conn: psycopg.Connection) -> set[Pair]:
    return {(r[0], r[1]) for r in conn.execute(
        "SELECT instrument, granularity FROM list_partitions() "
        "WHERE table_name = 'new_resistance_events'")}


def ensure_partitions(url: str, pairs: Iterable[Pair]) -> int:
    """Create missing partitions (each ensure_partition call commits on its own)."""
    created = 0
    with db.connect(url, role=db.WRITER_ROLE, autocommit=True) as conn:
        missing = set(pairs) - _existing_partitions(conn)
        for instrument, granularity in sorted(missing):
            created += conn.execute("SELECT ensure_partition(%s, %s)",
                                    (instrument, granularity)).fetchone()[0]
    return created


def _existing_ids(conn: psycopg.Connection, pair: Pair, lo, hi) -> set[str]:
    rows = conn.execute(
        "SELECT original_event_id::text FROM new_resistance_events "
        "WHERE instrument = %s AND granularity = %s "
        "AND event_creation_date BETWEEN %s AND %s", (*pair, lo, hi))
    return {r[0] for r in rows}


def _copy_text(frame: pd.DataFrame, columns: tuple[str, ...]) -> bytes:
    """COPY text format; values are validated (no tabs, newlines or backslashes)."""
    body = frame[list(columns)].replace("", "\\N").astype(str)
    return ("\n".join(body.agg("\t".join, axis=1)) + "\n").encode()


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


def load_file(path: Path, url: str | None = None, pair: Pair | None = None,
              assume_tz: str | None = None,
              progress: Callable[[int], None] | None = None) -> LoadResult:
    """Load one file (or only `pair`'s rows of it) in one transaction. Raises EventFileError
    when the file is not an event file; the database is then untouched."""
    url = url or db.database_url()
    started = time.perf_counter()
    result = LoadResult(Path(path))
    raw = read_event_file(path)
    checked = validate(raw, assume_tz=assume_tz)
    good, rejected = checked.good, checked.rejected
    if pair is not None:
        good = good[(good["instrument"] == pair[0]) & (good["granularity"] == pair[1])]
        in_slice = [r for r in rejected if (str(r.raw.get("instrument", "")).strip(),
                                            str(r.raw.get("granularity", "")).strip()) == pair]
    else:
        in_slice = rejected
    result.rejected = len(in_slice)
    result.rows_read = len(good) + len(in_slice)
    for r in in_slice:
        result.reasons.update(r.rules)

    pairs = sorted(set(zip(good["instrument"], good["granularity"], strict=True)))
    ensure_partitions(url, pairs)
    source = str(Path(path).resolve())
    with db.connect(url, role=db.WRITER_ROLE) as conn:
        begun = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        new_parts = []
        for p in pairs:
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                         (LOAD_LOCK, f"{p[0]}/{p[1]}"))
        for p, rows in good.groupby(["instrument", "granularity"], sort=True):
            existing = _existing_ids(conn, p, rows["ts"].min().to_pydatetime(),
                                     rows["ts"].max().to_pydatetime())
            fresh = rows[~rows["original_event_id"].isin(existing)] if existing else rows
            result.duplicates += len(rows) - len(fresh)
            if len(fresh):
                new_parts.append(fresh)
                result.pairs[p] = len(fresh)
        new = pd.concat(new_parts) if new_parts else good.iloc[:0]
        if len(new):
            _copy(conn, "new_resistance_events", new, COPY_COLUMNS, progress)
            # fresh statistics before the levels' foreign-key checks probe these leaves
            for p in result.pairs:
                conn.execute("SELECT analyze_partition(%s, %s)", p)
            _copy(conn, "support_and_resistance_master", new, LEVEL_COLUMNS)
        result.loaded = len(new)
        # quarantine every bad row of the file (also those of other slices: the insert is
        # idempotent, and rows with no valid pair belong to no slice)
        _quarantine(conn, source, raw.sha256, rejected)
        conn.execute(
            "INSERT INTO load_log (source, source_sha256, instrument, granularity, rows_read, "
            "rows_loaded, rows_duplicate, rows_rejected, started_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (source, raw.sha256, pair[0] if pair else None, pair[1] if pair else None,
             result.rows_read, result.loaded, result.duplicates, result.rejected, begun))
    result.seconds = time.perf_counter() - started
    return result


def load_paths(paths: Iterable[Path], url: str | None = None, assume_tz: str | None = None,
               progress_factory: Callable[[Path, int], Callable[[int], None]] | None = None,
               ) -> list[LoadResult]:
    """Load each file in its own transaction; a file that is not an event file is reported
    (LoadResult.error) and the others still load."""
    url = url or db.database_url()
    results = []
    for path in find_event_files(paths):
        try:
            progress = progress_factory(path, 0) if progress_factory else None
            results.append(load_file(path, url, assume_tz=assume_tz, progress=progress))
        except EventFileError as exc:
            results.append(LoadResult(Path(path), error=str(exc)))
    return results
