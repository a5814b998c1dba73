"""Where the database is and how to talk to it.

`SR_PLATFORM_DATABASE_URL` (any PostgreSQL 15+) wins; without it the project-local cluster is
started on demand. Connections use psycopg 3; SQLAlchemy engines use the `postgresql+psycopg`
dialect. The URL's user is the administrator (it runs migrations as `sr_owner`); loads and
queries drop to `sr_writer` / `sr_reader` with SET ROLE.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from . import settings
from .localpg import LocalCluster

OWNER_ROLE, WRITER_ROLE, READER_ROLE = "sr_owner", "sr_writer", "sr_reader"


def local_cluster() -> LocalCluster:
    return LocalCluster(settings.state_dir(), settings.pg_bin_dir(), settings.default_port())


def database_url(database: str | None = None) -> str:
    """libpq URL of the app database (or of `database` on the same server)."""
    url = settings.external_database_url()
    if url is None:
        cluster = local_cluster()
        cluster.start()
        ensure_database(cluster.url("postgres"), settings.APP_DATABASE)
        url = cluster.url(settings.APP_DATABASE)
    if database is not None:
        url = with_database(url, database)
    return url


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def sqlalchemy_url(url: str, driver: str = "psycopg") -> str:
    return make_url(url).set(drivername=f"postgresql+{driver}").render_as_string(
        hide_password=False
    )


def libpq_url(url: str) -> str:
    """Strip any SQLAlchemy driver suffix so psycopg/psql accept the URL."""
    return sqlalchemy_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


def ensure_database(url: str, name: str) -> None:
    """CREATE DATABASE name unless it exists (needs CREATEDB on `url`'s server)."""
    with psycopg.connect(libpq_url(with_database(url, "postgres")), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            pass  # created concurrently


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(libpq_url(with_database(url, "postgres")), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def engine(url: str | None = None) -> Engine:
    return create_engine(sqlalchemy_url(url or database_url()), pool_pre_ping=True)


@contextmanager
def connect(url: str | None = None, role: str | None = None,
            autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A psycopg connection, optionally dropped to `role` for its whole life.

    prepare_threshold=None: psycopg's automatic prepare can pin a generic plan that is far
    slower on skewed partitions, so statements are planned with their actual values.
    """
    conn = psycopg.connect(libpq_url(url or database_url()), autocommit=autocommit,
                           prepare_threshold=None)
    try:
        if role is not None:
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
