"""Database health: one snapshot of the numbers an operator watches, and the checks on them.

Everything comes from PostgreSQL's own statistics views (pg_stat_*, pg_class, pg_stat_archiver,
pg_stat_statements where installed) and the backup directory, read as the reader role (which
holds pg_read_all_stats on the local cluster, so it sees every session and statement). On the
local cluster also from its files: the free disk, and the WAL archive's size and the free space
of its filesystem (only backup rotation prunes that archive; a big write can fill the disk).
"""

import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from . import backup, db, retention, settings
from .catalog import catch_all_rows
from .keys import PARTITIONED_TABLES

TABLES = (*PARTITIONED_TABLES, "rejected_events", "load_log")


@dataclass(frozen=True)
class Thresholds:
    """(warn, error) pairs; environment variables SR_PLATFORM_HEALTH_* override them."""

    backup_age_hours: tuple[float, float] = (26, 50)
    retention_lag_days: tuple[float, float] = (1, 7)
    dead_tuple_ratio: tuple[float, float] = (0.2, 0.5)
    free_disk_pct: tuple[float, float] = (20, 10)  # below these
    min_rows_for_dead_ratio: int = 1000
    # the local cluster's WAL archive: warn above this size (GB, 10^9 bytes) ...
    wal_archive_gb: float = 20.0
    # ... and on the free space of the filesystem it is on (below these)
    wal_archive_free_pct: tuple[float, float] = (20, 10)

    @classmethod
    def from_env(cls) -> "Thresholds":
        return settings.overrides(cls, "SR_PLATFORM_HEALTH_")


# every check collect() reports, with what it watches (shown in the UI); thresholds are
# SR_PLATFORM_HEALTH_<NAME>_WARN / _ERROR
CHECK_DESCRIPTIONS = {
    "backup_is_recent": "The newest backup proven by a restore is younger than "
                        "BACKUP_AGE_HOURS (WARN above 26 h, ERROR above 50 h or when there is "
                        "none).",
    "retention_is_applied": "No event or feature row is older than the retention policy by more "
                            "than RETENTION_LAG_DAYS (WARN above 1 day, ERROR above 7).",
    "no_rows_in_catch_all_partitions": "No row sits in a NULL-guard partition and no DEFAULT "
                                       "partition exists (ERROR otherwise).",
    "dead_tuple_ratio": "The worst leaf's dead rows over its rows (leaves of 1,000 rows or "
                        "more) stay under DEAD_TUPLE_RATIO (WARN above 0.2, ERROR above 0.5).",
    "free_disk": "Free space of the local cluster's data disk stays above FREE_DISK_PCT (WARN "
                 "below 20 %, ERROR below 10 %); WARN 'not measured' when the data directory "
                 "is not on this machine.",
    "wal_archiving_works": "PostgreSQL's WAL archiver has not failed since it last succeeded "
                           "(pg_stat_archiver; ERROR otherwise: point-in-time recovery is at "
                           "risk).",
    "wal_archive_space": "The local WAL archive stays under WAL_ARCHIVE_GB (WARN above 20 GB) "
                         "and its filesystem keeps WAL_ARCHIVE_FREE_PCT free (WARN below 20 %, "
                         "ERROR below 10 %); WARN 'not measured' when the archive is not on "
                         "this machine.",
}
CHECK_NAMES = tuple(CHECK_DESCRIPTIONS)


def readable_bytes(n: float | None) -> str:
    """1,234,567,890 -> '1.23 GB' (powers of 1000, as the thresholds are)."""
    if n is None:
        return "n/a"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


@dataclass
class Check:
    name: str
    level: str  # "ok", "warn", "error"
    summary: str
    metadata: dict = field(default_factory=dict)


@dataclass
class Health:
    taken_at: datetime
    metrics: dict[str, float | int | None]
    oldest: dict[str, datetime | None]
    top_statements: list[dict]
    partitions: list[dict]
    notes: list[str]
    checks: list[Check] = field(default_factory=list)
    unmeasured: dict[str, str] = field(default_factory=dict)  # what was not measured: why


def _level(value: float | None, warn: float, error: float, below: bool = False) -> str:
    if value is None:
        return "ok"
    if below:
        return "error" if value < error else "warn" if value < warn else "ok"
    return "error" if value > error else "warn" if value > warn else "ok"


def local_wal_archive(url: str) -> Path | None:
    """The WAL archive directory of `url`'s server when that is the project's local cluster (a
    passfile URL on the local cluster's port); None for any other server."""
    if not db.has_passfile(url):
        return None
    cluster = db.local_cluster()
    return cluster.wal_archive if make_url(url).port == cluster.port else None


def archive_usage(directory: Path) -> dict[str, int | float]:
    """Bytes and files in the WAL archive `directory` (flat: segments, .history and .backup
    files), and the free space of the filesystem it is on."""
    size = files = 0
    with os.scandir(directory) as entries:
        for e in entries:
            if e.is_file(follow_symlinks=False):
                size += e.stat(follow_symlinks=False).st_size
                files += 1
    disk = shutil.disk_usage(directory)
    return {"wal_archive_bytes": size, "wal_archive_files": files,
            "wal_archive_fs_free_bytes": disk.free,
            "wal_archive_fs_free_pct": round(100 * disk.free / disk.total, 2)}


def collect(url: str | None = None, backup_root: Path | None = None,
            data_dir: Path | None = None, thresholds: Thresholds | None = None,
            policy: retention.Policy | None = None, now: datetime | None = None,
            wal_archive: Path | None = None) -> Health:
    """`thresholds` and `policy` default to the code's (Thresholds(), retention.Policy());
    callers pass the settings' (settings.from_env). `wal_archive`: the WAL archive directory
    to measure (default: the local cluster's when `url` is on it; none for another server)."""
    url = url or db.database_url()
    now = now or datetime.now(UTC)
    th = thresholds or Thresholds()
    policy = policy or retention.Policy()
    m: dict[str, float | int | None] = {}
    notes: list[str] = []
    with db.connect(url, role=db.READER_ROLE, autocommit=True) as conn:
        m["database_bytes"] = conn.execute(
            "SELECT pg_database_size(current_database())").fetchone()[0]
        partitions = _partitions(conn)
        m |= _table_sizes(conn, partitions)
        m |= _vacuum_metrics(partitions, th, now)
        m |= _activity_metrics(conn)
        archive_mode = _archiver_metrics(conn, m, now)
        defaults, guard_rows = catch_all_rows(conn)
        m["catch_all_rows"] = guard_rows
        m["default_partitions"] = defaults
        top = _top_statements(conn, notes)
    oldest = retention.oldest_rows(url)
    newest = backup.newest_verified(backup_root)
    m["newest_backup_age_hours"] = round(backup.age(newest, now).total_seconds() / 3600, 2) \
        if newest else None
    unmeasured: dict[str, str] = {}
    m |= _disk_metrics(url, data_dir, unmeasured, notes)
    m |= _wal_archive_metrics(wal_archive or local_wal_archive(url), unmeasured, notes)
    h = Health(now, m, oldest, top, partitions, notes, unmeasured=unmeasured)
    h.checks = _health_checks(h, th, policy, archive_mode)
    return h


def _partitions(conn: psycopg.Connection) -> list[dict]:
    """Every leaf partition: its table, name, bytes, live and dead rows, last autovacuum and
    autoanalyze, and writes."""
    leaves = conn.execute(
        """SELECT p.table_name, p.partition_name, p.total_bytes,
                  coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
                  s.last_autovacuum, s.last_autoanalyze,
                  coalesce(s.n_tup_ins + s.n_tup_upd + s.n_tup_del, 0)
           FROM list_partitions() p
           LEFT JOIN pg_stat_user_tables s
                  ON s.relid = ('public.' || p.partition_name)::regclass
           ORDER BY 1, 2""").fetchall()
    return [dict(zip(("table", "partition", "bytes", "live_rows", "dead_rows",
                      "last_autovacuum", "last_autoanalyze", "writes"), r,
                     strict=True)) for r in leaves]


def _table_sizes(conn: psycopg.Connection, partitions: list[dict]) -> dict:
    """<table>_bytes and <table>_rows: summed over its leaves, or the table's own."""
    m: dict = {}
    for t in TABLES:
        part = [p for p in partitions if p["table"] == t]
        if part:
            m[f"{t}_bytes"] = sum(p["bytes"] for p in part)
            m[f"{t}_rows"] = sum(p["live_rows"] for p in part)
        else:
            m[f"{t}_bytes"], m[f"{t}_rows"] = conn.execute(
                "SELECT pg_total_relation_size(%s::regclass), coalesce((SELECT n_live_tup "
                "FROM pg_stat_user_tables WHERE relid = %s::regclass), 0)",
                (t, t)).fetchone()
    return m


def _vacuum_metrics(partitions: list[dict], th: Thresholds, now: datetime) -> dict:
    """Dead rows, the worst dead-tuple ratio, and how long since the busiest leaf was
    autovacuumed and autoanalyzed."""
    m: dict = {"dead_rows": sum(p["dead_rows"] for p in partitions)}
    ratios = [(p["dead_rows"] / (p["live_rows"] + p["dead_rows"]), p["partition"])
              for p in partitions
              if p["live_rows"] + p["dead_rows"] >= th.min_rows_for_dead_ratio]
    worst = max(ratios, default=(0.0, None))
    m["max_dead_tuple_ratio"] = round(worst[0], 4)
    busiest = max(partitions, key=lambda p: p["writes"], default=None)
    for key in ("last_autovacuum", "last_autoanalyze"):
        when = busiest and busiest[key]
        m[f"seconds_since_{key}_of_busiest_leaf"] = \
            round((now - when).total_seconds()) if when else None
    return m


def _activity_metrics(conn: psycopg.Connection) -> dict:
    """The cache hit ratio, client connections and the longest running query."""
    hit, read = conn.execute(
        "SELECT blks_hit, blks_read FROM pg_stat_database "
        "WHERE datname = current_database()").fetchone()
    return {
        "cache_hit_ratio": round(hit / (hit + read), 4) if hit + read else 1.0,
        "connections": conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        ).fetchone()[0],
        "longest_query_seconds": round(conn.execute(
            "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), 0) "
            "FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'").fetchone()[0], 3)}


def _archiver_metrics(conn: psycopg.Connection, m: dict, now: datetime) -> str:
    """The WAL archiver's counts, lag and failing state into `m`; returns archive_mode."""
    archived, failed, last_archived, last_failed = conn.execute(
        "SELECT archived_count, failed_count, last_archived_time, last_failed_time "
        "FROM pg_stat_archiver").fetchone()
    m["wal_archived"] = archived
    m["wal_archive_failures"] = failed
    m["wal_archive_lag_seconds"] = round((now - last_archived).total_seconds()) \
        if last_archived else None
    m["wal_archive_failing"] = int(bool(last_failed and (not last_archived
                                                         or last_failed > last_archived)))
    return conn.execute("SHOW archive_mode").fetchone()[0]


def _top_statements(conn: psycopg.Connection, notes: list[str]) -> list[dict]:
    """The ten statements with the most execution time (pg_stat_statements), if installed."""
    if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
                        ).fetchone():
        notes.append("pg_stat_statements is not installed in this database (an "
                     "administrator can CREATE EXTENSION pg_stat_statements); no top "
                     "statements")
        return []
    return [dict(zip(("query", "calls", "total_ms", "mean_ms", "rows"), r, strict=True))
            for r in conn.execute(
                "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 120), calls, "
                "round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3), "
                "rows FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) ORDER BY total_exec_time DESC "
                "LIMIT 10")]


def _disk_metrics(url: str, data_dir: Path | None, unmeasured: dict[str, str],
                  notes: list[str]) -> dict:
    """Free space of the data directory's filesystem, when it is on this machine."""
    if data_dir is None and db.has_passfile(url):  # our local cluster: its disk is here
        data_dir = db.local_cluster().runtime
    if data_dir is None:
        unmeasured["free_disk"] = "the data directory is not on this machine"
        notes.append("free disk: the data directory is not on this machine")
        return {"free_disk_pct": None, "free_disk_bytes": None}
    usage = shutil.disk_usage(data_dir)
    return {"free_disk_pct": round(100 * usage.free / usage.total, 2),
            "free_disk_bytes": usage.free}


def _wal_archive_metrics(archive: Path | None, unmeasured: dict[str, str],
                         notes: list[str]) -> dict:
    """The WAL archive's size, files and free space (archive_usage), when it is local and
    readable; None values otherwise."""
    usage: dict = dict.fromkeys(("wal_archive_bytes", "wal_archive_files",
                                 "wal_archive_fs_free_bytes", "wal_archive_fs_free_pct"))
    if archive is None:
        unmeasured["wal_archive"] = ("the WAL archive is not on this machine (it is watched "
                                     "where the server runs)")
        notes.append("WAL archive: not local (the server's archive is watched where it runs)")
        return usage
    try:
        return archive_usage(archive)
    except OSError as exc:
        unmeasured["wal_archive"] = f"the WAL archive {archive} is not readable ({exc})"
        notes.append(f"WAL archive {archive}: not readable ({exc})")
        return usage


def _health_checks(h: Health, th: Thresholds, policy: retention.Policy, archive_mode: str
                   ) -> list[Check]:
    m, out = h.metrics, []
    age = m["newest_backup_age_hours"]
    out.append(Check("backup_is_recent",
                     "error" if age is None else _level(age, *th.backup_age_hours),
                     "no verified backup" if age is None
                     else f"newest verified backup is {age:.1f} h old",
                     {"newest_backup_age_hours": age, "warn_hours": th.backup_age_hours[0],
                      "error_hours": th.backup_age_hours[1]}))
    cut = policy.cutoffs(h.taken_at)
    lags = {}
    for table, key in ((retention.EVENTS, retention.EVENTS),
                       (retention.FEATURES, retention.FEATURES)):
        oldest = h.oldest.get(table)
        lags[table] = round((cut[key] - oldest).total_seconds() / 86400, 3) \
            if oldest and oldest < cut[key] else 0.0
    lag = max(lags.values())
    out.append(Check("retention_is_applied", _level(lag, *th.retention_lag_days),
                     f"oldest rows are {lag:.2f} days past the policy",
                     {"lag_days_" + t: v for t, v in lags.items()}
                     | {"warn_days": th.retention_lag_days[0],
                        "error_days": th.retention_lag_days[1]}))
    out.append(Check("no_rows_in_catch_all_partitions",
                     "error" if m["catch_all_rows"] or m["default_partitions"] else "ok",
                     f"{m['catch_all_rows']} rows in NULL-guard partitions, "
                     f"{m['default_partitions']} DEFAULT partitions",
                     {"rows": m["catch_all_rows"]}))
    out.append(Check("dead_tuple_ratio", _level(m["max_dead_tuple_ratio"], *th.dead_tuple_ratio),
                     f"worst leaf has {m['max_dead_tuple_ratio']:.1%} dead rows",
                     {"max_dead_tuple_ratio": m["max_dead_tuple_ratio"],
                      "warn_ratio": th.dead_tuple_ratio[0], "error_ratio": th.dead_tuple_ratio[1]}))
    free = m["free_disk_pct"]
    disk_meta = {"free_disk_pct": free, "free_disk_bytes": m["free_disk_bytes"],
                 "warn_pct": th.free_disk_pct[0], "error_pct": th.free_disk_pct[1]}
    if free is None:  # nothing measured is no pass
        out.append(Check("free_disk", "warn", f"not measured: {h.unmeasured['free_disk']}",
                         disk_meta))
    else:
        out.append(Check("free_disk", _level(free, *th.free_disk_pct, below=True),
                         f"{free:.1f}% ({readable_bytes(m['free_disk_bytes'])}) free",
                         disk_meta))
    out.append(Check("wal_archiving_works",
                     "error" if m["wal_archive_failing"] else "ok",
                     f"archive_mode={archive_mode}; {m['wal_archive_failures']} failures",
                     {"failures": m["wal_archive_failures"], "archive_mode": archive_mode}))
    out.append(_archive_space(m, th, archive_mode, h.unmeasured.get("wal_archive")))
    return out


def _archive_space(m: dict, th: Thresholds, archive_mode: str, unmeasured: str | None
                   ) -> Check:
    """WARN when the local WAL archive outgrows its threshold (only backup rotation prunes
    it), WARN / ERROR when the filesystem it is on runs out of space."""
    size, free = m["wal_archive_bytes"], m["wal_archive_fs_free_pct"]
    meta = {"wal_archive_bytes": size, "wal_archive_files": m["wal_archive_files"],
            "fs_free_bytes": m["wal_archive_fs_free_bytes"], "fs_free_pct": free,
            "warn_gb": th.wal_archive_gb, "warn_free_pct": th.wal_archive_free_pct[0],
            "error_free_pct": th.wal_archive_free_pct[1], "archive_mode": archive_mode}
    if size is None or free is None:  # nothing measured is no pass
        return Check("wal_archive_space", "warn", f"not measured: {unmeasured}", meta)
    levels = ("ok", "warn", "error")
    size_level = "warn" if size > th.wal_archive_gb * 1e9 else "ok"
    free_level = _level(free, *th.wal_archive_free_pct, below=True)
    level = max(size_level, free_level, key=levels.index)
    summary = f"WAL archive {size / 1e9:.2f} GB in {m['wal_archive_files']} files"
    if size_level != "ok":
        summary += f" (over {th.wal_archive_gb:g} GB)"
    summary += (f"; {free:.1f}% ({m['wal_archive_fs_free_bytes'] / 1e9:.1f} GB) free on its "
                "filesystem")
    if free_level != "ok":
        summary += f" (below {th.wal_archive_free_pct[free_level == 'error']:g}%)"
    summary += f"; archive_mode={archive_mode}"
    if level != "ok":
        summary += ("; only the base backup rotation (database_backup) prunes the archive: "
                    "take a backup, or move big one-off writes to a cluster without archiving")
    return Check("wal_archive_space", level, summary, meta)
