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

With an archive directory, each batch's events and features are written to zstd Parquet
(events in the event-file format, so `sr-platform load` reloads them) before the batch commits.
"""

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
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
BATCH_ROWS = 10_000


@dataclass(frozen=True)
class Policy:
    events_years: int = 2
    features_years: int = 5
    rejected_days: int = 365
    load_log_days: int = 730

    @classmethod
    def from_env(cls) -> "Policy":
        return settings.from_env(cls, "SR_PLATFORM_RETENTION_")

    def cutoffs(self, as_of: datetime) -> dict[str, datetime]:
        """The oldest instant each table keeps (rows strictly before it go)."""
        t = pd.Timestamp(as_of).tz_convert("UTC") if pd.Timestamp(as_of).tzinfo \
            else pd.Timestamp(as_of, tz="UTC")
        return {
            EVENTS: (t - pd.DateOffset(years=self.events_years)).to_pydatetime(),
            FEATURES: (t - pd.DateOffset(years=self.features_years)).to_pydatetime(),
            "rejected_events": (t - pd.Timedelta(days=self.rejected_days)).to_pydatetime(),
            "load_log": (t - pd.Timedelta(days=self.load_log_days)).to_pydatetime(),
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
    archived: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _leaves(conn, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT partition_name FROM list_partitions() WHERE table_name = %s ORDER BY 1",
        (table,))]


def _count(conn, leaf: str, column: str, cutoff: datetime) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} < %s").format(
        sql.Identifier(leaf), sql.Identifier(column)), (cutoff,)).fetchone()[0]


class _Archive:
    """One zstd Parquet file per leaf, written batch by batch, every column as text (exact
    decimals; the loader reads text)."""

    def __init__(self, directory: Path, name: str, columns: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}.parquet"
        self.schema = pa.schema([(c, pa.string()) for c in columns])
        self.writer: pq.ParquetWriter | None = None

    def write(self, rows: list[tuple]) -> None:
        if not rows:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        cols = list(zip(*rows, strict=True))
        self.writer.write_table(pa.table(
            [pa.array([_text(v) for v in col], pa.string()) for col in cols],
            schema=self.schema))

    def close(self) -> Path | None:
        if self.writer is None:
            return None
        self.writer.close()
        return self.path


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.astimezone(UTC).isoformat()
    return str(v)


def _prune_leaf(conn, leaf: str, column: str, cutoff: datetime, batch_rows: int,
                archive: _Archive | None, returning: tuple[str, ...] | None) -> int:
    """Delete the leaf's rows older than cutoff in batches, each its own transaction."""
    deleted = 0
    ret = sql.SQL(", ").join(map(sql.Identifier, returning)) if returning else sql.SQL("1")
    stmt = sql.SQL(
        "DELETE FROM {leaf} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {leaf} WHERE {col} < %s "
        "ORDER BY {col} LIMIT %s)) RETURNING {ret}").format(
        leaf=sql.Identifier(leaf), col=sql.Identifier(column), ret=ret)
    while True:
        try:
            rows = conn.execute(stmt, (cutoff, batch_rows)).fetchall()
            if archive is not None:
                archive.write(rows)  # before the commit: an archive never misses a row
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        deleted += len(rows)
        if len(rows) < batch_rows:
            return deleted


def prune(url: str | None = None, as_of: datetime | None = None, dry_run: bool = False,
          archive_dir: Path | None = None, policy: Policy | None = None,
          batch_rows: int = BATCH_ROWS) -> PruneReport:
    """Apply the retention policy as of `as_of` (default now). Safe to rerun and to run while
    loads run (each batch is short; loads of other rows are not blocked)."""
    started = time.perf_counter()
    url = url or db.database_url()
    as_of = as_of or datetime.now(UTC)
    policy = policy or Policy.from_env()
    cut = policy.cutoffs(as_of)
    report = PruneReport(as_of, cut, dry_run, rows={EVENTS: 0, LEVELS: 0, FEATURES: 0,
                                                    "rejected_events": 0, "load_log": 0})
    stamp = pd.Timestamp(as_of).strftime("%Y%m%dT%H%M%SZ")
    # one reader connection counts, one writer connection deletes (a batch per transaction)
    with db.connect(url, role=db.READER_ROLE, autocommit=True) as reader, \
            db.connect(url, role=db.WRITER_ROLE) as writer:
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
                    archive, returning = None, None
                    if archive_dir is not None:
                        cols = list(EVENT_FILE_COLUMNS) if table == EVENTS \
                            else _columns(reader, leaf)
                        archive = _Archive(Path(archive_dir) / stamp / table, leaf, cols)
                        returning = tuple(cols)
                    try:
                        n = _prune_leaf(writer, leaf, "event_creation_date", cutoff,
                                        batch_rows, archive, returning)
                    finally:
                        if archive is not None and (path := archive.close()):
                            report.archived.append(path)
                if n:
                    report.leaves.append(LeafPrune(table, leaf, n, time.perf_counter() - t0))
                    report.rows[table] += n
                    if levels_leaf:
                        report.leaves.append(LeafPrune(LEVELS, levels_leaf, n_levels))
                        report.rows[LEVELS] += n_levels
        for table, column in (("rejected_events", "rejected_at"), ("load_log", "finished_at")):
            t0 = time.perf_counter()
            n = _count(reader, table, column, cut[table])
            if n and not dry_run:
                n = _prune_leaf(writer, table, column, cut[table], batch_rows, None, None)
            if n:
                report.leaves.append(LeafPrune(table, table, n, time.perf_counter() - t0))
                report.rows[table] = n
        report.oldest = oldest_rows(reader)
    report.seconds = time.perf_counter() - started
    return report


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
               "load_log": "finished_at"}
    with db.connect(url, role=db.READER_ROLE, autocommit=True) as conn:
        return {table: conn.execute(sql.SQL("SELECT min({}) FROM {} WHERE {} >= %s").format(
            sql.Identifier(columns[table]), sql.Identifier(table),
            sql.Identifier(columns[table])), (cutoff,)).fetchone()[0]
            for table, cutoff in cutoffs.items()}
