"""Logical backups that are proven by a restore, restores into new databases, and rotation.

A backup is a directory `<backup dir>/<id>/` holding `sr_platform.dump` (pg_dump custom format
of the platform database), `dagster.dump` when Dagster's storage database is on the same
server, and `manifest.json`, written last (a directory without one is an unfinished backup and
is ignored): creation time, server version, schema revision, exact row counts per table, and the
sha256 and size of every file. The row counts and the dump come from ONE snapshot (exported with
pg_export_snapshot and handed to pg_dump --snapshot), so they agree even while loads run.

`verify` restores a backup into a scratch database, compares its row counts and revision with
the manifest, drops the scratch database and records the outcome in `verified.json`: a backup
that has never been restored does not count (health checks look at the newest verified one).

Dumps run as the owner's login role (it owns every object, so it can read and recreate all of
them); creating and dropping databases is cluster administration.
"""

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from . import db, settings
from .event_files import sha256_of
from .migrate import current

MANIFEST, VERIFIED = "manifest.json", "verified.json"
ID_FORMAT = "%Y%m%dT%H%M%SZ"


class BackupError(RuntimeError):
    pass


def backup_dir() -> Path:
    return Path(os.environ.get("SR_PLATFORM_BACKUP_DIR") or
                settings.PROJECT_ROOT / "backups").resolve()


def _tool(name: str) -> str:
    return str(settings.pg_bin_dir() / name)


@dataclass
class Backup:
    id: str
    path: Path
    created_at: datetime
    server_version: str
    revision: str | None
    row_counts: dict[str, int]
    files: dict[str, dict] = field(default_factory=dict)  # name -> {sha256, bytes, database}
    seconds: float = 0.0
    verified: dict | None = None

    @property
    def bytes(self) -> int:
        return sum(f["bytes"] for f in self.files.values())


def table_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Exact row counts of every top-level table of the public schema."""
    tables = [r[0] for r in conn.execute(
        """SELECT c.relname::text FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
           AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1""")]
    return {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(t))).fetchone()[0] for t in tables}


def _pg_dump(url: str, out: Path, snapshot: str | None = None) -> None:
    args = [_tool("pg_dump"), "--format=custom", "--file", str(out), "--dbname",
            db.libpq_url(url)]
    if snapshot:
        args += ["--snapshot", snapshot]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackupError(f"pg_dump of {out.name} failed: {proc.stderr.strip()}")


def _dagster_url(url: str) -> str | None:
    """Dagster's storage database on the same server, when we know how to reach it."""
    explicit = os.environ.get("SR_PLATFORM_DAGSTER_STORAGE_URL")
    if explicit:
        return db.libpq_url(explicit.replace("+psycopg2", ""))
    if not db.has_passfile(url):
        return None
    candidate = db.role_url(db.with_database(url, settings.DAGSTER_DATABASE), db.DAGSTER_ROLE)
    try:
        psycopg.connect(db.libpq_url(candidate), connect_timeout=5).close()
    except psycopg.OperationalError:
        return None
    return candidate


def take_backup(url: str | None = None, root: Path | None = None,
                include_dagster: bool = True, now: datetime | None = None) -> Backup:
    started = time.perf_counter()
    url = url or db.database_url()
    owner = db.role_url(url, db.OWNER_ROLE)
    root = root or backup_dir()
    now = now or datetime.now(UTC)
    backup_id = now.strftime(ID_FORMAT)
    n = 1
    while (root / backup_id).exists():
        n += 1
        backup_id = f"{now.strftime(ID_FORMAT)}-{n}"
    path = root / backup_id
    path.mkdir(parents=True)
    files: dict[str, dict] = {}
    with db.connect(owner) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        version = conn.execute("SHOW server_version").fetchone()[0]
        database = conn.execute("SELECT current_database()").fetchone()[0]
        counts = table_counts(conn)
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] \
            if "alembic_version" in counts else None
        _pg_dump(owner, path / "sr_platform.dump", snapshot)  # while the snapshot is held
    files["sr_platform.dump"] = {"database": database}
    if include_dagster and (dagster := _dagster_url(url)):
        _pg_dump(dagster, path / "dagster.dump")
        files["dagster.dump"] = {"database": settings.DAGSTER_DATABASE}
    for name, meta in files.items():
        meta |= {"sha256": sha256_of(path / name), "bytes": (path / name).stat().st_size}
    b = Backup(backup_id, path, now, version, revision, counts, files,
               time.perf_counter() - started)
    manifest = {k: v for k, v in asdict(b).items() if k not in ("path", "verified")}
    manifest["created_at"] = now.isoformat()
    manifest["kind"] = "logical"
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return b


def _load(path: Path) -> Backup:
    m = json.loads((path / MANIFEST).read_text())
    verified = json.loads((path / VERIFIED).read_text()) if (path / VERIFIED).exists() else None
    return Backup(m["id"], path, datetime.fromisoformat(m["created_at"]), m["server_version"],
                  m["revision"], m["row_counts"], m["files"], m.get("seconds", 0.0), verified)


def list_backups(root: Path | None = None) -> list[Backup]:
    """Complete backups (with a manifest), oldest first."""
    root = root or backup_dir()
    if not root.is_dir():
        return []
    found = [_load(p) for p in root.iterdir() if (p / MANIFEST).is_file()]
    return sorted(found, key=lambda b: (b.created_at, b.id))


def get_backup(backup_id: str, root: Path | None = None) -> Backup:
    for b in list_backups(root):
        if b.id == backup_id:
            return b
    raise BackupError(f"no backup {backup_id!r} in {root or backup_dir()} "
                      "(`sr-platform backup list` shows them)")


def _database_exists(url: str, name: str) -> bool:
    admin = db.role_url(db.with_database(url, "postgres"), db.ADMIN_ROLE)
    with psycopg.connect(db.libpq_url(admin)) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (name,)).fetchone() is not None


def restore(backup_id: str, into: str, url: str | None = None, replace: bool = False,
            root: Path | None = None) -> dict[str, int]:
    """Restore a backup's platform database into a NEW database `into` (an existing one only
    with replace=True). Checks every file's sha256 first. Returns the restored row counts."""
    url = url or db.database_url()
    b = get_backup(backup_id, root)
    for name, meta in b.files.items():
        if sha256_of(b.path / name) != meta["sha256"]:
            raise BackupError(f"{b.path / name}: sha256 does not match the manifest")
    if _database_exists(url, into):
        if not replace:
            raise BackupError(f"database {into!r} exists; pass --replace to overwrite it")
        db.drop_database(url, into)
    db.ensure_database(url, into, owner=db.OWNER_ROLE)
    target = db.role_url(db.with_database(url, into), db.OWNER_ROLE)
    proc = subprocess.run(
        [_tool("pg_restore"), "--exit-on-error", "--single-transaction", "--no-comments",
         "--dbname", db.libpq_url(target), str(b.path / "sr_platform.dump")],
        capture_output=True, text=True)
    if proc.returncode != 0:
        db.drop_database(url, into)
        raise BackupError(f"pg_restore of {backup_id} failed: {proc.stderr.strip()}")
    with db.connect(target) as conn:
        return table_counts(conn)


def verify(backup_id: str | None = None, url: str | None = None,
           root: Path | None = None) -> dict:
    """Restore a backup (default: the newest) into a scratch database, compare row counts and
    revision with its manifest, drop the scratch database; record and return the outcome."""
    url = url or db.database_url()
    backups = list_backups(root)
    if not backups:
        raise BackupError(f"no backups in {root or backup_dir()}")
    b = get_backup(backup_id, root) if backup_id else backups[-1]
    scratch = f"sr_verify_{b.id.lower().replace('-', '_')}"
    started = time.perf_counter()
    try:
        counts = restore(b.id, scratch, url, replace=True, root=root)
        revision = current(db.with_database(url, scratch))
    finally:
        db.drop_database(url, scratch)
    outcome = {
        "backup_id": b.id, "verified_at": datetime.now(UTC).isoformat(),
        "restore_seconds": round(time.perf_counter() - started, 3),
        "counts_match": counts == b.row_counts, "revision_match": revision == b.revision,
        "mismatched_tables": sorted(t for t in set(counts) | set(b.row_counts)
                                    if counts.get(t) != b.row_counts.get(t)),
    }
    outcome["ok"] = outcome["counts_match"] and outcome["revision_match"]
    (b.path / VERIFIED).write_text(json.dumps(outcome, indent=2) + "\n")
    return outcome


def rotate(root: Path | None = None, daily: int = 7, weekly: int = 4,
           now: datetime | None = None) -> list[str]:
    """Keep the newest backup of each of the last `daily` days that have backups and of each
    of the last `weekly` ISO weeks; delete the rest (never the newest). Returns removed ids."""
    backups = list_backups(root)
    keep: set[str] = set()
    days: dict[str, str] = {}
    weeks: dict[tuple, str] = {}
    for b in reversed(backups):  # newest first
        days.setdefault(b.created_at.date().isoformat(), b.id)
        weeks.setdefault(tuple(b.created_at.isocalendar())[:2], b.id)
    keep |= set(list(days.values())[:daily]) | set(list(weeks.values())[:weekly])
    if backups:
        keep.add(backups[-1].id)
    removed = []
    for b in backups:
        if b.id not in keep:
            shutil.rmtree(b.path)
            removed.append(b.id)
    return removed


def newest_verified(root: Path | None = None) -> Backup | None:
    for b in reversed(list_backups(root)):
        if b.verified and b.verified.get("ok"):
            return b
    return None


def age(b: Backup | None, now: datetime | None = None) -> timedelta | None:
    return None if b is None else (now or datetime.now(UTC)) - b.created_at
