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

Safety (docs/backup.md):
- A backup is built in `.partial-<id>/` and renamed to `<id>/` only once its manifest is
  written and fsynced, so a half backup is never listed; the next backup (or `backup list`)
  removes what a killed run left, with the scratch databases of an interrupted verification.
  One backup at a time per directory (a lock file).
- Client tools match the server's major version (a newer pg_dump writes dumps an older server
  cannot restore); children die with us (procs.run); passwords go through the environment,
  never argv; the backup directory is 0700 and its files 0600.
- Restores skip extensions (pg_stat_statements needs a superuser: the local cluster's own
  database has it, and the restoring owner may not create it) and ANALYZE between the data
  and the post-data sections, so the foreign keys validate with statistics (restore time
  stays linear in the data).
"""

import fcntl
import functools
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from . import db, procs, settings
from .event_files import sha256_of
from .migrate import current

MANIFEST, VERIFIED = "manifest.json", "verified.json"
ID_FORMAT = "%Y%m%dT%H%M%SZ"
ID_PATTERN = re.compile(r"\d{8}T\d{6}Z(-\d+)?")
PARTIAL = ".partial-"  # a backup being written; renamed to its id when complete
SCRATCH_PREFIX = "sr_verify_"


class BackupError(RuntimeError):
    pass


_held: dict[Path, int] = {}
_held_guard = threading.Lock()


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """One backup, verification or cleanup at a time in `root` (an flock on root/.lock;
    re-entrant within a process, so take_backup inside run_backup does not wait on itself)."""
    root = procs.private_dir(Path(root).resolve())
    with _held_guard:
        if root in _held:
            _held[root] += 1
            fh = None
        else:
            fh = open(os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        if fh is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
            with _held_guard:
                _held[root] = 1
        yield
    finally:
        with _held_guard:
            _held[root] -= 1
            last = _held[root] == 0
            if last:
                del _held[root]
        if fh is not None:
            fh.close()  # releases the flock


def server_major(url: str) -> int:
    with psycopg.connect(db.libpq_url(url), connect_timeout=10) as conn:
        return conn.info.server_version // 10000


def _tool_major(path: Path) -> int | None:
    try:
        out = procs.run([str(path), "--version"]).stdout  # "pg_dump (PostgreSQL) 15.18 ..."
    except OSError:
        return None
    m = re.search(r"\) (\d+)", out)
    return int(m.group(1)) if m else None


@functools.cache
def client_bin_dir(major: int) -> Path:
    """A bin directory whose pg_dump and pg_restore are of PostgreSQL `major`: the server's
    own major version, since a newer pg_dump writes settings (e.g. transaction_timeout) that
    an older server refuses on restore. Looks in SR_PLATFORM_PG_BIN / the embedded wheel,
    Debian's /usr/lib/postgresql/N/bin, then PATH."""
    candidates: list[Path] = []
    try:
        candidates.append(settings.pg_bin_dir())
    except RuntimeError:
        pass
    candidates.append(Path(f"/usr/lib/postgresql/{major}/bin"))
    if found := shutil.which("pg_dump"):
        candidates.append(Path(found).resolve().parent)
    for d in candidates:
        if (d / "pg_dump").exists() and (d / "pg_restore").exists() \
                and _tool_major(d / "pg_dump") == major:
            return d
    raise BackupError(
        f"the server is PostgreSQL {major}, and no pg_dump/pg_restore {major} was found (looked "
        f"in {', '.join(map(str, dict.fromkeys(candidates)))}): a dump by another major version "
        f"may not restore on this server. Install them (Debian: apt-get install "
        f"postgresql-client-{major}) or set SR_PLATFORM_PG_BIN to their bin directory")


def _tool(name: str, url: str) -> str:
    return str(client_bin_dir(server_major(url)) / name)


def _run_tool(args: list[str], url: str, what: str) -> str:
    """Run a libpq tool with `--dbname=` `url` appended, as a conninfo without the password
    (that goes through PGPASSWORD: argv is visible to every user). Returns its stdout."""
    conninfo, env = db.tool_target(url)
    proc = procs.run([*args, f"--dbname={conninfo}"], env=env)
    if proc.returncode != 0:
        raise BackupError(f"{what} failed: {proc.stderr.strip()}")
    return proc.stdout


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
    args = [_tool("pg_dump", url), "--format=custom", "--file", str(out)]
    if snapshot:
        args += ["--snapshot", snapshot]
    _run_tool(args, url, f"pg_dump of {out.name}")
    _fsync_file(out)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _dagster_url(url: str, explicit: str | None) -> str | None:
    """Dagster's storage database: `explicit` (SR_PLATFORM_DAGSTER_STORAGE_URL) when set, else
    the one on the same server, when we know how to reach it."""
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


def _owner(url: str | None) -> str:
    """The URL dumps and restores run as: the owner's login role (SR_PLATFORM_OWNER_URL on an
    external server)."""
    return db.database_url(role=db.OWNER_ROLE) if url is None else db.role_url(url, db.OWNER_ROLE)


def take_backup(url: str | None = None, root: Path | None = None,
                include_dagster: bool = True, now: datetime | None = None,
                dagster_url: str | None = None) -> Backup:
    """Dump the platform database (and Dagster's, when reachable: `dagster_url`, else found
    on the same server) into a new backup directory (`root`, default settings.backup_dir());
    complete, fsynced and listed only once its manifest is in place."""
    started = time.perf_counter()
    owner = _owner(url)
    url = url or db.database_url()
    root = Path(root or settings.backup_dir()).resolve()
    now = now or datetime.now(UTC)
    with locked(root):
        dagster = _dagster_url(url, dagster_url) if include_dagster else None
        return build(root, now, lambda partial, backup_id: _dump_into(
            partial, backup_id, owner, dagster, now, started))


def build(parent: Path, now: datetime, make):
    """A new backup `parent/<id>` (id: `now` as ID_FORMAT, -2, -3... when taken): `make(dir,
    id)` fills `parent/.partial-<id>` and returns the backup; the directory is renamed to its
    id only when `make` returned (a half backup is never listed), removed when it raised. The
    caller holds `locked()`."""
    procs.private_dir(parent)
    backup_id, n = now.strftime(ID_FORMAT), 1
    while (parent / backup_id).exists():
        n += 1
        backup_id = f"{now.strftime(ID_FORMAT)}-{n}"
    partial = parent / f"{PARTIAL}{backup_id}"
    shutil.rmtree(partial, ignore_errors=True)
    procs.private_dir(partial)
    try:
        b = make(partial, backup_id)
        os.replace(partial, parent / backup_id)
        procs.fsync_dir(parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    b.path = parent / backup_id
    return b


def _dump_into(path: Path, backup_id: str, owner: str, dagster: str | None,
               now: datetime, started: float) -> Backup:
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
    if dagster:
        _pg_dump(dagster, path / "dagster.dump")
        files["dagster.dump"] = {"database": settings.DAGSTER_DATABASE}
    for name, meta in files.items():
        meta |= {"sha256": sha256_of(path / name), "bytes": (path / name).stat().st_size}
    b = Backup(backup_id, path, now, version, revision, counts, files,
               time.perf_counter() - started)
    manifest = {k: v for k, v in asdict(b).items() if k not in ("path", "verified")}
    manifest["created_at"] = now.isoformat()
    manifest["kind"] = "logical"
    procs.write_private(path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return b


def _safe_name(path: Path, name: str) -> str:
    """A file a manifest names: a plain name inside its backup directory, nothing else."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name \
            or (path / name).resolve().parent != path.resolve():
        raise BackupError(f"{path / MANIFEST}: refusing file {name!r}: a manifest may only "
                          "name files inside its own backup directory")
    return name


def _load(path: Path) -> Backup:
    m = json.loads((path / MANIFEST).read_text())
    verified = json.loads((path / VERIFIED).read_text()) if (path / VERIFIED).exists() else None
    files = {_safe_name(path, name): meta for name, meta in m["files"].items()}
    if m["id"] != path.name:
        raise BackupError(f"{path / MANIFEST}: its id {m['id']!r} is not its directory's name")
    return Backup(m["id"], path, datetime.fromisoformat(m["created_at"]), m["server_version"],
                  m["revision"], m["row_counts"], files, m.get("seconds", 0.0), verified)


def list_backups(root: Path | None = None) -> list[Backup]:
    """Complete backups (with a valid manifest), oldest first. A directory whose manifest is
    invalid is left out here; get_backup says why."""
    root = root or settings.backup_dir()
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if not p.name.startswith(".") and (p / MANIFEST).is_file():
            try:
                found.append(_load(p))
            except (BackupError, ValueError, KeyError):
                continue
    return sorted(found, key=lambda b: (b.created_at, b.id))


def get_backup(backup_id: str, root: Path | None = None) -> Backup:
    root = Path(root or settings.backup_dir())
    path = root / backup_id
    if ID_PATTERN.fullmatch(backup_id) and (path / MANIFEST).is_file():
        try:
            return _load(path)
        except (ValueError, KeyError) as exc:
            raise BackupError(f"{path / MANIFEST} is not a valid manifest: {exc}") from exc
    raise BackupError(f"no backup {backup_id!r} in {root} "
                      "(`sr-platform backup list` shows them)")


def _database_exists(url: str, name: str) -> bool:
    admin = db.role_url(db.with_database(url, "postgres"), db.ADMIN_ROLE)
    with psycopg.connect(db.libpq_url(admin)) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (name,)).fetchone() is not None


# TOC entries a restore leaves out: extensions need a superuser, and the database owner
# restores (the local cluster adds pg_stat_statements back as its administrator)
_SKIPPED_TOC = re.compile(r"^\d+; \d+ \d+ (EXTENSION|COMMENT - EXTENSION) ")


def _restore_list(pg_restore: str, dump: Path, work: Path) -> tuple[Path, bool]:
    """pg_restore's table of contents without the extension entries; and whether it had any.
    (--list reads the dump only: no connection.)"""
    proc = procs.run([pg_restore, "--list", str(dump)])
    if proc.returncode != 0:
        raise BackupError(f"pg_restore --list of {dump} failed: {proc.stderr.strip()}")
    lines = proc.stdout.splitlines(keepends=True)
    kept = [ln for ln in lines if not _SKIPPED_TOC.match(ln)]
    listing = work / "toc.list"
    listing.write_text("".join(kept))
    return listing, len(kept) != len(lines)


def _pg_restore(dump: Path, target: str) -> None:
    """Restore in three steps: pre-data (tables), data, ANALYZE, post-data (indexes, keys).
    Without statistics the planner may validate a partition's foreign key with a Merge Anti
    Join on a one-value index: issue 13 measured 56.9 s per leaf at 660k events, 19 ms after
    ANALYZE (not reproduced here; docs/backup.md)."""
    pg_restore = _tool("pg_restore", target)  # one look-up of the server's version
    with tempfile.TemporaryDirectory(prefix="sr-restore-") as work:
        listing, had_extensions = _restore_list(pg_restore, dump, Path(work))
        for section in ("pre-data", "data", "post-data"):
            if section == "post-data":
                with db.connect(target, autocommit=True) as conn:
                    # the two sides of each leaf's foreign key (recursing into the leaves):
                    # what its validation plans on; the rest is analyzed by autovacuum
                    conn.execute("ANALYZE new_resistance_events, support_and_resistance_master")
            _run_tool([pg_restore, "--exit-on-error", "--single-transaction",
                       "--no-comments", f"--section={section}", "--use-list", str(listing),
                       str(dump)], target, f"pg_restore ({section})")
    if had_extensions and db.has_passfile(target):
        db.ensure_extensions(db.role_url(target, db.ADMIN_ROLE))


def restore(backup_id: str, into: str, url: str | None = None, replace: bool = False,
            root: Path | None = None) -> dict[str, int]:
    """Restore a backup's platform database into a NEW database `into` (an existing one only
    with replace=True). Checks every file's sha256 first. Returns the restored row counts."""
    owner = _owner(url)
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
    target = db.with_database(owner, into)
    try:
        _pg_restore(b.path / "sr_platform.dump", target)
    except BaseException as exc:
        db.drop_database(url, into)  # a failed restore leaves nothing behind
        if isinstance(exc, BackupError):
            raise BackupError(f"restore of {backup_id} into {into!r}: {exc}") from exc
        raise
    with db.connect(target) as conn:
        return table_counts(conn)


def verify(backup_id: str | None = None, url: str | None = None,
           root: Path | None = None) -> dict:
    """Restore a backup (default: the newest) into a scratch database, compare row counts and
    revision with its manifest, drop the scratch database; record and return the outcome."""
    url = url or db.database_url()
    root = Path(root or settings.backup_dir())
    with locked(root):
        backups = list_backups(root)
        if not backups:
            raise BackupError(f"no backups in {root}")
        b = get_backup(backup_id, root) if backup_id else backups[-1]
        scratch = f"{SCRATCH_PREFIX}{b.id.lower().replace('-', '_')}"
        started = time.perf_counter()
        try:
            counts = restore(b.id, scratch, url, replace=True, root=root)
            revision = current(db.with_database(url, scratch))
        finally:
            db.drop_database(url, scratch)
        return _record_verification(b, counts, revision, time.perf_counter() - started)


def _record_verification(b: Backup, counts: dict[str, int], revision: str | None,
                         seconds: float) -> dict:
    outcome = {
        "backup_id": b.id, "verified_at": datetime.now(UTC).isoformat(),
        "restore_seconds": round(seconds, 3),
        "counts_match": counts == b.row_counts, "revision_match": revision == b.revision,
        "mismatched_tables": sorted(t for t in set(counts) | set(b.row_counts)
                                    if counts.get(t) != b.row_counts.get(t)),
    }
    outcome["ok"] = outcome["counts_match"] and outcome["revision_match"]
    procs.write_private(b.path / VERIFIED, json.dumps(outcome, indent=2) + "\n")
    b.verified = outcome
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


def cleanup(url: str | None = None, root: Path | None = None) -> list[str]:
    """Remove what killed or failed runs left: unfinished backup directories (no manifest,
    or `.partial-*`, logical and physical) and scratch databases of an interrupted
    verification that nobody is connected to. Returns what it removed, one line each."""
    root = Path(root or settings.backup_dir())
    removed: list[str] = []
    if not root.is_dir():
        return removed
    with locked(root):
        for parent in (root, root / "base"):
            for p in sorted(parent.iterdir()) if parent.is_dir() else []:
                half = p.name.startswith(PARTIAL) or (
                    ID_PATTERN.fullmatch(p.name) and not (p / MANIFEST).is_file())
                if half and p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(f"unfinished backup {p}")
        removed += [f"scratch database {name}" for name in _drop_scratch_databases(url)]
    return removed


def _drop_scratch_databases(url: str | None) -> list[str]:
    url = url or db.database_url()
    admin = db.role_url(db.with_database(url, "postgres"), db.ADMIN_ROLE)
    try:
        with psycopg.connect(db.libpq_url(admin), connect_timeout=10) as conn:
            names = [r[0] for r in conn.execute(
                "SELECT datname FROM pg_database d WHERE starts_with(datname, %s) AND NOT "
                "EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
                (SCRATCH_PREFIX,))]
    except psycopg.Error:
        return []  # not allowed to list or reach: nothing we can clean
    for name in names:
        db.drop_database(url, name)
    return names


def newest_verified(root: Path | None = None) -> Backup | None:
    for b in reversed(list_backups(root)):
        if b.verified and b.verified.get("ok"):
            return b
    return None


def age(b: Backup | None, now: datetime | None = None) -> timedelta | None:
    return None if b is None else (now or datetime.now(UTC)) - b.created_at
