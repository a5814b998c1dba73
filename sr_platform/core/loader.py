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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from . import db
from .event_files import SUFFIXES, EventFileError, read_event_file
from .validate import COPY_COLUMNS, GRANULARITIES, INSTRUMENT_RE, Rejected, validate

Pair = tuple[str, str]  # (instrument, granularity)
LEVEL_COLUMNS = ("original_event_id", "event_type", "instrument", "granularity",
                 "event_creation_date")
NULLABLE = {"volume_at_event"}
COPY_CHUNK = 50_000
ANALYZE_MIN_ROWS = 1_000
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
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    ids: set[str] = field(default_factory=set)  # the slice's good ids (pair loads only)
    ignored_columns: list[str] = field(default_factory=list)  # in the file, not in the contract

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0


def find_event_files(paths: Iterable[Path]) -> list[Path]:
    """Files named on the command line, and event files (by suffix) inside named folders;
    dot-files inside folders are skipped (files being written should be moved in when done)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file()
                              and q.suffix.lower() in SUFFIXES and not q.name.startswith(".")))
        else:
            out.append(p)
    return out


def file_pairs(path: Path) -> set[Pair]:
    """The well-formed (instrument, granularity) pairs a file has rows for: a pre-scan of two
    columns, not a validation (a pair whose rows are all bad still gets its run, which
    quarantines them)."""
    f = read_event_file(path).frame
    instrument = f["instrument"].astype(str).str.strip()
    granularity = f["granularity"].astype(str).str.strip()
    ok = instrument.str.match(INSTRUMENT_RE) & granularity.isin(GRANULARITIES)
    return set(zip(instrument[ok], granularity[ok], strict=True))


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


def leaf_name(table: str, pair: Pair) -> str:
    """Leaf partition of `table` for a validated pair (ensure_partition's naming)."""
    return f"{table}_{pair[1].lower()}_{pair[0].lower()}"


def _existing_ids(conn: psycopg.Connection, pair: Pair, lo, hi) -> set[str]:
    # straight to the leaf: planning against the parent prunes hundreds of partitions per call
    rows = conn.execute(sql.SQL(
        "SELECT original_event_id::text FROM {} WHERE event_creation_date BETWEEN %s AND %s"
    ).format(sql.Identifier(leaf_name("new_resistance_events", pair))), (lo, hi))
    return {r[0] for r in rows}


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


@dataclass
class Prepared:
    """A file read and validated (no database work yet)."""

    raw_sha256: str
    source: str
    pair: Pair | None
    good: pd.DataFrame
    rejected: list[Rejected]  # every bad row of the file
    result: LoadResult
    started: float


def prepare(path: Path, pair: Pair | None = None, assume_tz: str | None = None) -> Prepared:
    """Read and validate one file, keeping only `pair`'s rows when given. Raises
    EventFileError when the file is not an event file."""
    started = time.perf_counter()
    result = LoadResult(Path(path))
    raw = read_event_file(path)
    result.ignored_columns = raw.ignored_columns
    checked = validate(raw, assume_tz=assume_tz)
    good, rejected = checked.good, checked.rejected
    in_slice = rejected
    if pair is not None:
        good = good[(good["instrument"] == pair[0]) & (good["granularity"] == pair[1])]
        in_slice = [r for r in rejected if (str(r.raw.get("instrument", "")).strip(),
                                            str(r.raw.get("granularity", "")).strip()) == pair]
        result.ids = set(good["original_event_id"])
    result.rejected = len(in_slice)
    result.rows_read = len(good) + len(in_slice)
    for r in in_slice:
        result.reasons.update(r.rules)
    result.timings["read+validate"] = time.perf_counter() - started
    return Prepared(raw.sha256, str(Path(path).resolve()), pair, good, rejected, result,
                    started)


def _stale_leaves(conn: psycopg.Connection, adding: dict[Pair, int]) -> list[Pair]:
    """Pairs whose events leaf will grow by more than a fifth of what its statistics say.

    Measured here: 100k level rows took 525 s when the events leaf they reference had only
    the statistics of an empty table (the FK check planned a seq scan per row) and 1.4 s after
    ANALYZE, so a leaf is analyzed inside the load whenever the load changes it materially
    (below ANALYZE_MIN_ROWS rows a scan per check costs less than the ANALYZE)."""
    return [p for p, tuples in _leaf_tuples(conn, adding).items()
            if adding[p] > max(ANALYZE_MIN_ROWS, 0.2 * max(tuples, 0))]


def write(prep: Prepared, url: str, progress: Callable[[int], None] | None = None
          ) -> LoadResult:
    """Write a prepared file in one transaction (see the module docstring)."""
    result, good, pair = prep.result, prep.good, prep.pair
    lap = _Lap(result.timings)
    pairs = sorted(set(zip(good["instrument"], good["granularity"], strict=True)))
    ensure_partitions(url, pairs)
    lap("partitions")
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
        lap("lock+dedupe")
        new = pd.concat(new_parts) if new_parts else good.iloc[:0]
        if len(new):
            stale = _stale_leaves(conn, result.pairs)
            _copy(conn, "new_resistance_events", new, COPY_COLUMNS, progress)
            lap("copy events")
            for p in stale:  # before the levels' FK checks probe these leaves
                conn.execute("SELECT analyze_partition(%s, %s)", p)
            lap("analyze")
            _copy(conn, "support_and_resistance_master", new, LEVEL_COLUMNS)
            lap("copy levels")
        result.loaded = len(new)
        # quarantine every bad row of the file (also those of other slices: the insert is
        # idempotent, and rows with no valid pair belong to no slice)
        _quarantine(conn, prep.source, prep.raw_sha256, prep.rejected)
        conn.execute(
            "INSERT INTO load_log (source, source_sha256, instrument, granularity, rows_read, "
            "rows_loaded, rows_duplicate, rows_rejected, started_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (prep.source, prep.raw_sha256, pair[0] if pair else None,
             pair[1] if pair else None, result.rows_read, result.loaded, result.duplicates,
             result.rejected, begun))
    lap("quarantine+commit")
    result.seconds = time.perf_counter() - prep.started
    return result


def load_file(path: Path, url: str | None = None, pair: Pair | None = None,
              assume_tz: str | None = None,
              progress: Callable[[int], None] | None = None) -> LoadResult:
    """Load one file (or only `pair`'s rows of it) in one transaction. Raises EventFileError
    when the file is not an event file; the database is then untouched."""
    return write(prepare(path, pair, assume_tz), url or db.database_url(), progress)


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
    """Load each file in its own transaction; a file that is not an event file is reported
    (LoadResult.error) and the others still load. The next file is read and validated in a
    thread while the current one is written, so Python and the server work side by side."""
    url = url or db.database_url()
    files = find_event_files(paths)
    results: list[LoadResult] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(prepare, files[0], None, assume_tz) if files else None
        for i, path in enumerate(files):
            current = ahead
            ahead = pool.submit(prepare, files[i + 1], None, assume_tz) \
                if i + 1 < len(files) else None
            try:
                prep = current.result()
                progress = progress_factory(path, 0) if progress_factory else None
                results.append(write(prep, url, progress))
            except EventFileError as exc:
                results.append(LoadResult(Path(path), error=str(exc)))
    return results
