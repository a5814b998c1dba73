"""Where the database is and how to talk to it, as which role.

`SR_PLATFORM_DATABASE_URL` (any PostgreSQL 15+) wins; without it the project-local cluster is
started on demand. Connections use psycopg 3; SQLAlchemy engines use the `postgresql+psycopg`
dialect.

Least privilege: each kind of work connects as its own login role.
- local cluster: URLs name the cluster's password file (`?passfile=`), so `role_url` can point
  any URL of that server at the login role of a role: sr_owner (migrations), sr_app_writer
  (loads, Dagster runs and sensors; the rights of sr_writer), sr_app_reader (sr_reader's),
  postgres (cluster administration only).
- external server: SR_PLATFORM_DATABASE_URL is the writer's URL; SR_PLATFORM_OWNER_URL and
  SR_PLATFORM_READER_URL may name separate login roles (passwords in a PGPASSFILE, not in the
  URLs, is best). `role_url` turns the configured SR_PLATFORM_DATABASE_URL (on any database
  of its server) into the role's own URL when that is set, so every caller that asks for
  the owner (migrations) or the reader (reads, health) with the platform's URL gets it. A URL
  without a passfile keeps its own user, which then drops to the group role with SET ROLE
  (weaker without separate URLs: such a session could RESET ROLE).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

from . import settings
from .localpg import SUPERUSER, LocalCluster

OWNER_ROLE, WRITER_ROLE, READER_ROLE = "sr_owner", "sr_writer", "sr_reader"
ADMIN_ROLE, DAGSTER_ROLE = "admin", "sr_dagster"
# the local cluster's login role for each role
LOGIN_OF = {OWNER_ROLE: "sr_owner", WRITER_ROLE: "sr_app_writer", READER_ROLE: "sr_app_reader",
            ADMIN_ROLE: SUPERUSER, DAGSTER_ROLE: "sr_dagster"}
_EXTERNAL_ENV = {OWNER_ROLE: settings.OWNER_URL_ENV, READER_ROLE: settings.READER_URL_ENV}


def local_cluster() -> LocalCluster:
    """The project-local cluster of the state directory (SR_PLATFORM_HOME), archiving its WAL
    unless SR_PLATFORM_WAL_ARCHIVE=off."""
    return LocalCluster(settings.state_dir(), settings.pg_bin_dir(), settings.default_port(),
                        archive=settings.wal_archive())


def database_url(database: str | None = None, role: str = WRITER_ROLE) -> str:
    """libpq URL of the app database (or of `database` on the same server) for `role`."""
    url = settings.external_database_url()
    if url is None:
        cluster = local_cluster()
        cluster.start()
        ensure_database(cluster.url("postgres"), settings.APP_DATABASE, owner=OWNER_ROLE)
        url = cluster.url(settings.APP_DATABASE)
    elif role in _EXTERNAL_ENV and settings.env(_EXTERNAL_ENV[role]):
        url = settings.env(_EXTERNAL_ENV[role])
    url = role_url(url, role)
    if database is not None:
        url = with_database(url, database)
    return url


def has_passfile(url: str) -> bool:
    return "passfile" in make_url(sqlalchemy_url(url)).query


def _configured_role_url(url: str, role: str) -> str | None:
    """SR_PLATFORM_OWNER_URL / SR_PLATFORM_READER_URL (on `url`'s database) when `url` is the
    configured SR_PLATFORM_DATABASE_URL, on any database of its server, and that is set."""
    name = _EXTERNAL_ENV.get(role)
    own, writer = (settings.env(name) if name else None), settings.external_database_url()
    if not own or not writer:
        return None
    u, w = make_url(libpq_url(url)), make_url(libpq_url(writer))
    if u.set(database=w.database) != w:
        return None
    return own if u.database == w.database else with_database(own, u.database)


def role_url(url: str, role: str | None) -> str:
    """`url` as `role`: its own configured URL for the platform's external server (see the
    module's docstring); the login role of `role` when the URL's server is one whose passwords
    we hold (a passfile URL); otherwise `url` unchanged."""
    if role is None:
        return url
    configured = _configured_role_url(url, role)
    if configured is not None:
        return configured
    if not has_passfile(url):
        return url
    return _render(make_url(url).set(username=LOGIN_OF[role]))


def _render(u: URL) -> str:
    """The URL as text, its database name percent-encoded (SQLAlchemy decodes it when parsing
    but writes it back raw, and libpq refuses a name with a space or a '?')."""
    text = u._replace(database=None).render_as_string(hide_password=False)
    if u.database is None:
        return text
    base, sep, query = text.partition("?")
    return f"{base}/{quote(u.database, safe='')}{sep}{query}"


def with_database(url: str, database: str) -> str:
    return _render(make_url(url).set(database=database))


def sqlalchemy_url(url: str, driver: str = "psycopg") -> str:
    return _render(make_url(url).set(drivername=f"postgresql+{driver}"))


def tool_target(url: str) -> tuple[str, dict[str, str]]:
    """(conninfo, environment) for a libpq command-line tool (pg_dump, pg_restore, ...): the
    conninfo names no password, which goes in PGPASSWORD instead, because a process's
    arguments are visible to every user of the machine (`ps`)."""
    params = conninfo_to_dict(libpq_url(url))
    password = params.pop("password", None)
    env = {"PGPASSWORD": password} if password else {}
    return make_conninfo("", **params), env


def libpq_url(url: str) -> str:
    """Strip any SQLAlchemy driver suffix so psycopg/psql accept the URL."""
    return sqlalchemy_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


def ensure_database(url: str, name: str, owner: str | None = OWNER_ROLE) -> None:
    """CREATE DATABASE name unless it exists (needs CREATEDB on `url`'s server). On the local
    cluster it runs as the administrator and the database belongs to `owner`'s login role, so
    migrations can run as sr_owner (the owner of the database owns its public schema)."""
    admin = role_url(with_database(url, "postgres"), ADMIN_ROLE)
    with psycopg.connect(libpq_url(admin), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        # the owner: the role's login on the local cluster; on another server the group role
        # itself (sr_owner), when the URL's user may give it a database (a member of it), so
        # a restore as the owner can recreate what the owner owns; else the URL's user
        if owner is None:
            candidates: list[str | None] = [None]
        elif has_passfile(url):
            candidates = [LOGIN_OF[owner]]
        else:
            candidates = [owner, None]
        for i, who in enumerate(candidates):
            try:
                conn.execute(stmt + sql.SQL(" OWNER {}").format(sql.Identifier(who))
                             if who else stmt)
                break
            except psycopg.errors.DuplicateDatabase:
                return  # created concurrently
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedObject):
                if i == len(candidates) - 1:
                    raise
    if name == settings.APP_DATABASE and has_passfile(url):
        # the platform database of the local cluster gets its monitoring extension (other
        # databases, e.g. the tests' throwaway ones, stay exactly what the migrations make)
        ensure_extensions(with_database(admin, name))


def ensure_extensions(admin_url: str) -> None:
    """pg_stat_statements in the database, where the server has it and we may create it
    (an extension is cluster administration: the URL must be an administrator's)."""
    try:
        with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_available_extensions "
                            "WHERE name = 'pg_stat_statements'").fetchone():
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except psycopg.errors.InsufficientPrivilege:
        pass  # monitoring reports that top statements are unavailable


def drop_database(url: str, name: str) -> None:
    admin = role_url(with_database(url, "postgres"), ADMIN_ROLE)
    with psycopg.connect(libpq_url(admin), autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            # PostgreSQL 15 refuses FORCE to a role that is neither superuser nor in
            # pg_signal_backend when an autovacuum worker is in the database (its process has
            # no role to be a member of): the backup's scratch database right after a restore.
            # A plain DROP stops autovacuum itself and waits up to 5 s for it; a real session
            # still connected makes it fail (ObjectInUse), as FORCE's refusal would have.
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def engine(url: str | None = None) -> Engine:
    return create_engine(sqlalchemy_url(url or database_url()), pool_pre_ping=True)


@contextmanager
def connect(url: str | None = None, role: str | None = None,
            autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A psycopg connection as `role`: its login role where we hold the server's passwords
    (see role_url), else the URL's own user dropped to `role` with SET ROLE.

    prepare_threshold=None: psycopg's automatic prepare can pin a generic plan that is far
    slower on skewed partitions, so statements are planned with their actual values.
    """
    url = url or database_url()
    target = role_url(url, role)
    conn = psycopg.connect(libpq_url(target), autocommit=autocommit, prepare_threshold=None)
    try:
        if role in (OWNER_ROLE, WRITER_ROLE, READER_ROLE) and not has_passfile(url):
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            if not autocommit:
                conn.commit()
        yield conn
        if not autocommit and not conn.closed:
            conn.commit()
    finally:
        # on any error (or an interrupt mid-query) closing is the rollback: the server
        # discards the open transaction, and no second command races the interrupted one
        conn.close()
