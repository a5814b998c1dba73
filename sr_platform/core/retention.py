"""Retention: delete what the policy says is too old, leaf by leaf, in bounded batches.

Policy (settings, overridable by environment): events older than 2 years by
event_creation_date (their levels go with them through the per-leaf ON DELETE CASCADE foreign
key, so nothing is orphaned and no foreign key ever blocks the prune), features older than 5
years, quarantined rows (rejected_events) older than 1 year by rejected_at, load_log rows older
than 2 years by finished_at. "Older than" is strict: a row exactly at the boundary stays.

Why batches per leaf and not time sub-partitions dropped whole: the key already allows a third
partition level, but it multiplies leaves (112 pairs x 24 months = 2,688 per table) and needs a
migration of existing data. A batch is `DELETE ... WHERE ctid = ANY(the next N expired rows on
the date index)` on one leaf, committed on its own: locks are row locks held for one batch,
autovacuum keeps up between batches, and the work is proportional to what expires, not to what
is kept (docs/schema.md has the measurements).

With an archive directory, a row leaves the database only once a readable archive holds it
(docs/archive.md). Per batch, in one transaction: DELETE ... RETURNING (the rows stay deleted
only if the transaction commits); the rows are written to a zstd Parquet file under a temp name
(`.<name>.tmp`, a dot-file the loader skips), fsynced, read back (its ids must be the batch's),
renamed to <archive>/<as-of stamp>/<table>/<leaf>/<run id>-<batch no>.parquet (a name no other
run or batch uses: nothing is ever overwritten) and the directory fsynced; then COMMIT. Any
failure before the COMMIT rolls the batch back and leaves no file under a final name. A kill
(or a failed COMMIT) after the rename leaves a complete file whose rows may still be in the
database: the next run archives them again, a duplicate that `sr-platform load` skips (it is
idempotent on original_event_id), never a loss. The next run removes a killed run's temp files.
Events are in the event-file format, so `sr-platform load <archive>/<stamp>/new_resistance_events`
restores them.
"""

import contextlib
import errno
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from . import db, settings

EVENTS, LEVELS, FEATURES = ("new_resistance_events", "support_and_resistance_master",
                            "event_features")
# the event-file columns, in the loader's order: what an archive holds for events
EVENT_FILE_COLUMNS = (
    "original_event_id", "event_type", "event_creation_date", "granularity", "instrument",
    "event_price_level", "atr_at_event", "volume_at_event", "new_resistance_negative_rebound",
    "new_resistance_negative_rebound_in_atr", "day_of_week", "hour_of_day",
)
EVENT_KEY = ("original_event_id",)
FEATURE_KEY = ("instrument", "granularity", "event_creation_date", "original_event_id")
BATCH_ROWS = 10_000
ARCHIVE_DIR_MODE, ARCHIVE_FILE_MODE = 0o700, 0o600
TEMP_SUFFIX = ".tmp"  # with a leading dot: `.<final name>.tmp`, never an event file


@dataclass(frozen=True)
class Policy:
    events_years: int = 2
    features_years: int = 5
    rejected_days: int = 365
    load_log_days: int = 730
    change_log_days: int = 7  # change_log (sql/0009): how far back a subscriber can resume

    @classmethod
    def from_env(cls) -> "Policy":
        return settings.overrides(cls, "SR_PLATFORM_RETENTION_")

    def cutoffs(self, as_of: datetime) -> dict[str, datetime]:
        """The oldest instant each table keeps (rows strictly before it go)."""
        t = pd.Timestamp(as_of).tz_convert("UTC") if pd.Timestamp(as_of).tzinfo \
            else pd.Timestamp(as_of, tz="UTC")
        return {
            EVENTS: (t - pd.DateOffset(years=self.events_years)).to_pydatetime(),
            FEATURES: (t - pd.DateOffset(years=self.features_years)).to_pydatetime(),
            "rejected_events": (t - pd.Timedelta(days=self.rejected_days)).to_pydatetime(),
            "load_log": (t - pd.Timedelta(days=self.load_log_days)).to_pydatetime(),
            "change_log": (t - pd.Timedelta(days=self.change_log_days)).to_pydatetime(),
        }


@dataclass
class LeafPrune:
    table: str
    partition: str
    rows: int
    seconds: float = 0.0


@dataclass
class PruneReport:
    as_of: datetime
    cutoffs: dict[str, datetime]
    dry_run: bool
    leaves: list[LeafPrune] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # per table
    oldest: dict[str, datetime | None] = field(default_factory=dict)  # per table, afterwards
    archived: list[Path] = field(default_factory=list)  # one file per archived batch
    seconds: float = 0.0


def _leaves(conn, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT partition_name FROM list_partitions() WHERE table_name = %s ORDER BY 1",
        (table,))]


def _count(conn, leaf: str, column: str, cutoff: datetime) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} < %s").format(
        sql.Identifier(leaf), sql.Identifier(column)), (cutoff,)).fetchone()[0]


class PruneError(RuntimeError):
    """A prune stopped part way; the message says what was deleted (and archived) before."""


def _rollback(conn) -> None:
    """Roll back; on a broken connection the server has rolled back already."""
    with contextlib.suppress(psycopg.Error):
        conn.rollback()


@dataclass
class _Progress:
    """Rows deleted by committed batches, per table (what a failure message reports)."""
    deleted: dict[str, int] = field(default_factory=lambda: {EVENTS: 0, FEATURES: 0})
    committing: bool = False  # a batch's COMMIT is under way (its outcome unknown on failure)
    committing_file: Path | None = None  # that batch's archive file


class _Archive:
    """The archive of one prune run: a zstd Parquet file per committed batch, every column as
    text (exact decimals; the loader reads text), at
    <root>/<as-of stamp>/<table>/<leaf>/<run id>-<batch no>.parquet, never overwritten."""

    def __init__(self, root: Path, stamp: str) -> None:
        self.root = Path(root)
        self.stamp = stamp
        # start time first (files sort by run), then random: two runs never share a name
        self.run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        self._dirs: set[Path] = set()
        self.batches: dict[str, int] = {}  # per leaf, batches written by this run
        _private_dir(self.root)
        remove_temp_files(self.root)

    def directory(self, table: str, leaf: str) -> Path:
        d = self.root / self.stamp / table / leaf
        if d not in self._dirs:
            for sub in (self.root / self.stamp, self.root / self.stamp / table, d):
                _private_dir(sub)
            self._dirs.add(d)
        return d

    def write(self, table: str, leaf: str, columns: list[str], rows: list[tuple]) -> Path:
        """Write `rows` to a new file, complete and durable (temp name, fsync, read back, rename,
        fsync of the directory) before the caller commits their DELETE. On any failure nothing
        is left under a final name."""
        directory = self.directory(table, leaf)
        batch = self.batches[leaf] = self.batches.get(leaf, 0) + 1
        final = directory / f"{self.run_id}-{batch:05d}.parquet"
        tmp = directory / f".{final.name}{TEMP_SUFFIX}"  # the loader skips dot-files
        key = [columns.index(c) for c in (EVENT_KEY if table == EVENTS else FEATURE_KEY)]
        cols = [[_text(v) for v in col] for col in zip(*rows, strict=True)]
        buf = pa.BufferOutputStream()
        pq.write_table(pa.table([pa.array(c, pa.string()) for c in cols],
                                schema=pa.schema([(c, pa.string()) for c in columns])),
                       buf, compression="zstd")
        try:
            _write_durably(tmp, buf.getvalue())
            _check_ids(tmp, [columns[i] for i in key], [cols[i] for i in key])
            if final.exists():  # the run id makes this impossible; never overwrite regardless
                raise FileExistsError(f"{final} exists already")
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:
            _fsync_dir(directory)
        except BaseException:
            final.unlink(missing_ok=True)  # the batch rolls back: its file must not remain
            raise
        return final


def remove_temp_files(root: Path) -> list[Path]:
    """Remove the temp files a killed prune left (never complete, never loaded)."""
    removed = [p for p in Path(root).rglob(f".*.parquet{TEMP_SUFFIX}") if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def _private_dir(path: Path) -> None:
    """Create `path` (and missing parents) 0700, whatever the umask; make it 0700 if it exists."""
    if not path.parent.exists():
        _private_dir(path.parent)
    try:
        path.mkdir(mode=ARCHIVE_DIR_MODE)
        _fsync_dir(path.parent)
    except FileExistsError:
        pass
    path.chmod(ARCHIVE_DIR_MODE)


def _write_durably(path: Path, data: pa.Buffer) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, ARCHIVE_FILE_MODE)
    try:
        os.fchmod(fd, ARCHIVE_FILE_MODE)  # the umask may narrow the mode, never widen it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_ids(path: Path, key: list[str], expected: list[list[str | None]]) -> None:
    """Read the file back: it must hold exactly the batch's keys, in order."""
    table = pq.read_table(path, columns=key)
    if [table.column(c).to_pylist() for c in key] != expected:
        raise ValueError(f"{path}: read back, the file does not hold the batch's "
                           f"{len(expected[0])} rows")


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.astimezone(UTC).isoformat()
    return str(v)


def _prune_leaf(conn, leaf: str, column: str, cutoff: datetime, batch_rows: int,
                archive: _Archive | None = None, table: str | None = None,
                columns: list[str] | None = None, progress: _Progress | None = None,
                files: list[Path] | None = None) -> int:
    """Delete the leaf's rows older than cutoff in batches, each its own transaction. With an
    archive, a batch's DELETE ... RETURNING stays uncommitted until its file is complete."""
    deleted = 0
    ret = sql.SQL(", ").join(map(sql.Identifier, columns)) if archive else sql.SQL("1")
    stmt = sql.SQL(
        "DELETE FROM {leaf} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {leaf} WHERE {col} < %s "
        "ORDER BY {col} LIMIT %s)) RETURNING {ret}").format(
        leaf=sql.Identifier(leaf), col=sql.Identifier(column), ret=ret)
    while True:
        try:
            rows = conn.execute(stmt, (cutoff, batch_rows)).fetchall()
            path = archive.write(table, leaf, columns, rows) if archive and rows else None
        except BaseException:
            _rollback(conn)
            raise
        if progress is not None:
            progress.committing, progress.committing_file = True, path
        try:
            conn.commit()
        except BaseException:
            # the outcome is unknown: a file stays (its rows may still be in the database:
            # a rerun archives them again, a duplicate the loader skips; never a loss)
            _rollback(conn)
            raise
        if progress is not None:
            progress.committing, progress.committing_file = False, None
            if table in progress.deleted:
                progress.deleted[table] += len(rows)
        if path is not None and files is not None:
            files.append(path)
        deleted += len(rows)
        if len(rows) < batch_rows:
            return deleted


def prune(url: str | None = None, as_of: datetime | None = None, dry_run: bool = False,
          archive_dir: Path | None = None, policy: Policy | None = None,
          batch_rows: int = BATCH_ROWS) -> PruneReport:
    """Apply the retention `policy` (default: the code's, Policy()) as of `as_of` (default
    now). Safe to rerun and to run while
    loads run (each batch is short; loads of other rows are not blocked). Raises PruneError
    when it stops part way (a full archive disk, a lost connection...): every row deleted
    before is in a completed archive file; the batch in progress was not deleted."""
    started = time.perf_counter()
    url = url or db.database_url()
    as_of = as_of or datetime.now(UTC)
    policy = policy or Policy()
    cut = policy.cutoffs(as_of)
    report = PruneReport(as_of, cut, dry_run, rows={EVENTS: 0, LEVELS: 0, FEATURES: 0,
                                                    "rejected_events": 0, "load_log": 0})
    stamp = pd.Timestamp(as_of).strftime("%Y%m%dT%H%M%SZ")
    archive = _Archive(Path(archive_dir), stamp) if archive_dir is not None and not dry_run \
        else None
    progress = _Progress()
    # one reader connection counts, one writer connection deletes (a batch per transaction)
    with db.connect(url, role=db.READER_ROLE, autocommit=True) as reader, \
            db.connect(url, role=db.WRITER_ROLE) as writer:
        try:
            _prune_tables(reader, writer, report, archive, batch_rows, progress)
        except Exception as exc:
            raise PruneError(_stopped(exc, progress, archive)) from exc
        report.oldest = oldest_rows(reader)
    report.seconds = time.perf_counter() - started
    return report


def _prune_tables(reader, writer, report: PruneReport, archive: _Archive | None,
                  batch_rows: int, progress: _Progress) -> None:
    cut, dry_run = report.cutoffs, report.dry_run
    event_leaves, feature_leaves = _leaves(reader, EVENTS), _leaves(reader, FEATURES)
    for table, leaves, cutoff in ((EVENTS, event_leaves, cut[EVENTS]),
                                  (FEATURES, feature_leaves, cut[FEATURES])):
        for leaf in leaves:
            t0 = time.perf_counter()
            levels_leaf = LEVELS + leaf[len(EVENTS):] if table == EVENTS else None
            n = _count(reader, leaf, "event_creation_date", cutoff)
            n_levels = _count(reader, levels_leaf, "event_creation_date", cutoff) \
                if levels_leaf and n else 0
            if n and not dry_run:
                columns = None
                if archive is not None:
                    columns = list(EVENT_FILE_COLUMNS) if table == EVENTS \
                        else _columns(reader, leaf)
                n = _prune_leaf(writer, leaf, "event_creation_date", cutoff, batch_rows,
                                archive, table, columns, progress, report.archived)
            if n:
                report.leaves.append(LeafPrune(table, leaf, n, time.perf_counter() - t0))
                report.rows[table] += n
                if levels_leaf:
                    report.leaves.append(LeafPrune(LEVELS, levels_leaf, n_levels))
                    report.rows[LEVELS] += n_levels
    for table, column in (("rejected_events", "rejected_at"), ("load_log", "finished_at"),
                          ("change_log", "created_at")):
        if not reader.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]:
            continue  # change_log: a database before 0009
        t0 = time.perf_counter()
        n = _count(reader, table, column, cut[table])
        if n and not dry_run:
            n = _prune_leaf(writer, table, column, cut[table], batch_rows)
        if n:
            report.leaves.append(LeafPrune(table, table, n, time.perf_counter() - t0))
            report.rows[table] = n


def _stopped(exc: Exception, progress: _Progress, archive: _Archive | None) -> str:
    """What an operator needs after a failed prune: why, and what was deleted (and where it is
    archived); the batch in progress was rolled back, nothing else was deleted."""
    why = "the archive disk is full (No space left on device)" \
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC \
        else f"{exc.__class__.__name__}: {str(exc).strip()}"
    done = progress.deleted
    where = f", every one of them in a completed archive file under {archive.root} " \
        f"(run {archive.run_id})" if archive else ""
    msg = (f"prune stopped: {why}. Rows deleted so far: {done[EVENTS]:,} events (with their "
           f"levels) and {done[FEATURES]:,} features{where}; ")
    if progress.committing:
        kept = f"; its rows are in {progress.committing_file} either way (rerun the prune: " \
            "rows still in the database are archived again, a duplicate `sr-platform load` " \
            "skips)" if progress.committing_file else ""
        return msg + (f"the batch being committed may or may not be deleted{kept}. Nothing else "
                      f"was deleted.")
    return msg + "the batch in progress was rolled back; nothing else was deleted."


def _columns(conn, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", (table,))]


def oldest_rows(url_or_conn) -> dict[str, datetime | None]:
    """The oldest row each table keeps (None when empty)."""
    if isinstance(url_or_conn, str):
        with db.connect(url_or_conn, role=db.READER_ROLE, autocommit=True) as conn:
            return oldest_rows(conn)
    out: dict[str, datetime | None] = {}
    for table, column in ((EVENTS, "event_creation_date"), (LEVELS, "event_creation_date"),
                          (FEATURES, "event_creation_date"),
                          ("rejected_events", "rejected_at"), ("load_log", "finished_at")):
        out[table] = url_or_conn.execute(sql.SQL("SELECT min({}) FROM {}").format(
            sql.Identifier(column), sql.Identifier(table))).fetchone()[0]
    return out


def oldest_kept(url: str, cutoffs: dict[str, datetime]) -> dict[str, datetime | None]:
    """Per table of `cutoffs`, the oldest row at or after its cutoff: the oldest row a prune
    with those cutoffs keeps (a dry run's answer too; None when nothing stays)."""
    columns = {EVENTS: "event_creation_date", LEVELS: "event_creation_date",
               FEATURES: "event_creation_date", "rejected_events": "rejected_at",
               "load_log": "finished_at", "change_log": "created_at"}
    with db.connect(url, role=db.READER_ROLE, autocommit=True) as conn:
        return {table: conn.execute(sql.SQL("SELECT min({}) FROM {} WHERE {} >= %s").format(
            sql.Identifier(columns[table]), sql.Identifier(table),
            sql.Identifier(columns[table])), (cutoff,)).fetchone()[0]
            for table, cutoff in cutoffs.items()}
