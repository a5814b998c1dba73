"""Physical base backups of the local cluster, WAL archive cleanup, point-in-time recovery.

The local cluster archives every WAL segment (localpg: archive_mode, an archive command that
never overwrites). A base backup (`pg_basebackup -Ft -z`, checked with `pg_verifybackup`) plus
the archived WAL after it can rebuild the cluster as it was at any second since that backup.
`recover` does that into a NEW cluster (its own directory and port); the live one is untouched.

Physical backups need the cluster's files and a replication connection, so they exist only for
the local cluster; on another server use pgBackRest (docs/backup.md).
"""

import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from . import backup, db, procs, settings
from .localpg import LocalCluster, free_port, service_account

BASE_DIR = "base"


class RecoveryError(RuntimeError):
    pass


def _require_local() -> LocalCluster:
    if settings.external_database_url():
        raise RecoveryError(
            "physical backups and point-in-time recovery need the project's local cluster; "
            f"{settings.DATABASE_URL_ENV} names another server: use pgBackRest there "
            "(docs/backup.md)")
    cluster = db.local_cluster()
    cluster.start()
    return cluster


@dataclass
class BaseBackup:
    id: str
    path: Path
    started_at: datetime
    finished_at: datetime
    start_wal: str
    bytes: int
    seconds: float


def _start_wal(path: Path) -> str:
    with tarfile.open(path / "base.tar.gz") as tar:
        label = tar.extractfile("backup_label").read().decode()
    for line in label.splitlines():
        if line.startswith("START WAL LOCATION"):
            return line.split("(file ")[1].rstrip(")")
    raise RecoveryError(f"{path}: no START WAL LOCATION in backup_label")


def take_base_backup(root: Path | None = None, now: datetime | None = None) -> BaseBackup:
    """pg_basebackup of the local cluster, checked with pg_verifybackup; built in
    base/.partial-<id> and renamed to base/<id> once complete (see backup.take_backup)."""
    cluster = _require_local()
    root = Path(root or settings.backup_dir()).resolve()
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    with backup.locked(root):
        return backup.build(root / BASE_DIR, now, lambda partial, backup_id: _base_backup_into(
            cluster, partial, backup_id, now, started))


def _base_backup_into(cluster: LocalCluster, path: Path, backup_id: str, now: datetime,
                      started: float) -> BaseBackup:
    conninfo, env = db.tool_target(cluster.url("postgres"))
    for args in ([str(cluster.source_bin_dir / "pg_basebackup"), f"--dbname={conninfo}",
                  "-D", str(path), "-Ft", "-z", "-X", "fetch", "-c", "fast", "--no-password"],
                 [str(cluster.source_bin_dir / "pg_verifybackup"), "--no-parse-wal",
                  str(path)]):
        proc = procs.run(args, env=env)
        if proc.returncode != 0:
            raise RecoveryError(f"{Path(args[0]).name} failed: {proc.stderr.strip()}")
    path.chmod(0o700)  # pg_basebackup creates it with the server's directory mode
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    finished = datetime.now(UTC)
    b = BaseBackup(backup_id, path, now, finished, _start_wal(path),
                   sum(f.stat().st_size for f in path.iterdir()), time.perf_counter() - started)
    procs.write_private(path / "manifest.json", json.dumps({
        "id": b.id, "kind": "physical", "created_at": now.isoformat(),
        "finished_at": finished.isoformat(), "start_wal": b.start_wal, "bytes": b.bytes,
        "seconds": round(b.seconds, 3), "server_version": cluster.version(),
        "revision": None, "row_counts": {}, "files": {}}, indent=2) + "\n")
    return b


def list_base_backups(root: Path | None = None) -> list[BaseBackup]:
    base = (root or settings.backup_dir()) / BASE_DIR
    out = []
    for p in sorted(base.iterdir()) if base.is_dir() else []:
        if not p.name.startswith(".") and (p / "manifest.json").is_file():
            m = json.loads((p / "manifest.json").read_text())
            out.append(BaseBackup(m["id"], p, datetime.fromisoformat(m["created_at"]),
                                  datetime.fromisoformat(m["finished_at"]), m["start_wal"],
                                  m["bytes"], m["seconds"]))
    return sorted(out, key=lambda b: b.started_at)


def rotate_base_backups(root: Path | None = None, daily: int = 7, weekly: int = 4) -> list[str]:
    """Apply the rotation to base backups, then drop archived WAL older than the oldest kept
    base backup (nothing before it can be recovered anyway)."""
    removed = backup.rotate((root or settings.backup_dir()) / BASE_DIR, daily, weekly)
    kept = list_base_backups(root)
    if kept and not settings.external_database_url():
        cluster = db.local_cluster()
        cluster._run([str(cluster.bin_dir / "pg_archivecleanup"), str(cluster.wal_archive),
                      kept[0].start_wal])
    return removed


def _archive_through(cluster: LocalCluster, to: datetime, timeout: float = 120) -> None:
    """Make sure the archive holds a commit made after `to`: replay to a time stops at the first
    commit past it, and fails ("recovery ended before configured recovery target was reached")
    when the archived WAL ends first. Commits an empty transaction (it gets an xid, so it
    writes a commit record stamped now), switches to a new segment and waits for the
    archiver."""
    with psycopg.connect(db.libpq_url(cluster.url("postgres")), autocommit=True) as conn:
        now = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        if to >= now:
            raise RecoveryError(f"--to {to.isoformat()} is not in the past (server time "
                                f"{now.isoformat()})")
        conn.execute("SELECT pg_current_xact_id()")
        wal = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        deadline = time.monotonic() + timeout
        while True:
            done = conn.execute("SELECT last_archived_wal >= %s FROM pg_stat_archiver",
                                (wal,)).fetchone()[0]
            if done:
                return
            if time.monotonic() > deadline:
                raise RecoveryError(f"WAL {wal} was not archived within {timeout:.0f} s; "
                                    f"see {cluster.log_file}")
            time.sleep(0.2)


def recover(to: datetime, into: Path, port: int | None = None,
            root: Path | None = None) -> tuple[str, LocalCluster]:
    """Build a new cluster in `into` from the newest base backup finished before `to` plus the
    archived WAL, replay to `to`, promote it, and return its URL (app database, writer)."""
    live = _require_local()
    if to.tzinfo is None:
        raise RecoveryError("--to needs a UTC offset (e.g. 2026-11-25T10:00:00Z)")
    candidates = [b for b in list_base_backups(root) if b.finished_at <= to]
    if not candidates:
        raise RecoveryError(f"no base backup finished before {to.isoformat()} "
                            "(`sr-platform backup` takes one)")
    base = candidates[-1]
    _archive_through(live, to)
    into = Path(into).resolve()
    if into.exists() and any(into.iterdir()):
        raise RecoveryError(f"{into} exists and is not empty")
    target = LocalCluster(into, live.source_bin_dir)
    if target.initialized:
        raise RecoveryError(f"{target.data_dir} already holds a cluster")
    try:
        _restore_base(base.path, target)
        _configure_replay(live, target, to, port or free_port())
        target._run([target._bin("pg_ctl"), "start", "-w", "-t", "300", "-D",
                     str(target.data_dir), "-l", str(target.log_file)])
        url = target.url(settings.APP_DATABASE, "postgres")
        _wait_promoted(target)
    except BaseException as exc:
        # a failed recovery leaves no half-built cluster behind, and says why
        tail = target.log_file.read_text()[-3000:] if target.log_file.exists() else ""
        target.remove()
        if isinstance(exc, Exception) and tail:
            raise RecoveryError(f"{exc}\nend of the recovery's server log:\n{tail}") from exc
        raise
    return db.role_url(url, db.WRITER_ROLE), target


def _restore_base(backup_dir: Path, target: LocalCluster) -> None:
    """Unpack the base backup (and its streamed WAL) into the new cluster's data directory."""
    target._prepare_dirs()
    with tarfile.open(backup_dir / "base.tar.gz") as tar:
        tar.extractall(target.data_dir, filter="fully_trusted")
    if (backup_dir / "pg_wal.tar.gz").exists():  # -X stream; -X fetch puts it in base.tar
        with tarfile.open(backup_dir / "pg_wal.tar.gz") as tar:
            tar.extractall(target.data_dir / "pg_wal", filter="fully_trusted")


def _configure_replay(live: LocalCluster, target: LocalCluster, to: datetime,
                      port: int) -> None:
    """Settings for replaying the live archive to `to` and promoting; the data directory owned
    by the service account, the live cluster's roles and passwords."""
    target._write_settings(port)
    with open(target.data_dir / "postgresql.auto.conf", "a") as fh:
        fh.write(
            "\n# sr-platform recover\n"
            f"restore_command = 'cp {live.wal_archive}/%f %p'\n"
            f"recovery_target_time = '{to.astimezone(UTC).isoformat()}'\n"
            "recovery_target_action = 'promote'\n"
            "archive_mode = off\n")
    (target.data_dir / "recovery.signal").write_text("")
    account = service_account()
    if account is not None:
        # the service account reads the live archive already; it must own the new data
        subprocess.run(["chown", "-R", f"{account.pw_uid}:{account.pw_gid}",
                        str(target.data_dir)], check=True)
    target.data_dir.chmod(0o700)
    shutil.copy(live.passfile, target.passfile)  # same roles, same passwords
    target.passfile.chmod(0o600)


def _wait_promoted(target: LocalCluster, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        # the maintenance database: a base backup taken before the platform database
        # existed recovers a cluster without it (a fresh `make run`'s first minutes)
        with psycopg.connect(db.libpq_url(target.url("postgres", "postgres"))) as conn:
            if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                return
        if time.monotonic() > deadline:
            raise RecoveryError(f"recovery did not finish; see {target.log_file}")
        time.sleep(0.5)


def recovered_cluster(home: Path) -> LocalCluster:
    """The cluster `recover` built in `home`, to stop or remove it. Refuses the project's own
    cluster and anything `recover` did not build (its settings carry recover's marker)."""
    home = Path(home).resolve()
    if home == settings.state_dir():
        raise RecoveryError(f"{home} is the project's own cluster, not a recovered one "
                            "(`sr-platform db stop` stops it)")
    if not (home / "pgpass").exists():
        raise RecoveryError(f"{home} holds no cluster (no passfile)")
    cluster = LocalCluster(home, settings.pg_bin_dir())
    conf = cluster.data_dir / "postgresql.auto.conf"
    if not conf.exists() or "# sr-platform recover" not in conf.read_text():
        raise RecoveryError(f"{home} holds no cluster built by `sr-platform recover`")
    return cluster
