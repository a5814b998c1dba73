"""Dagster resources shared by every domain."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg

from .core import db

ROLES = {"owner": db.OWNER_ROLE, "writer": db.WRITER_ROLE, "reader": db.READER_ROLE}


class PostgresResource(dg.ConfigurableResource):
    """The sr-platform database. `database_url` is SR_PLATFORM_DATABASE_URL (an EnvVar) when
    that is set; left None, db.database_url() decides when the resource is used: the
    project-local cluster's `sr_platform` database, started if needed.

    Work asks for a role (owner, writer or reader): `connect(role)` is a connection as that
    role, `url(role)` its URL (SR_PLATFORM_OWNER_URL / SR_PLATFORM_READER_URL on an external
    server, the role's login on the local cluster). `url()` without a role is the configured
    URL itself, for core functions that pick their roles per statement."""

    database_url: str | None = None

    def url(self, role: str | None = None) -> str:
        if role is not None and role not in ROLES:
            raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        url = self.database_url or db.database_url()
        return db.role_url(url, ROLES[role]) if role else url

    @contextmanager
    def connect(self, role: str = "writer",
                autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A psycopg connection as `role`, committed when the block ends without error."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        with db.connect(self.url(), role=ROLES[role], autocommit=autocommit) as conn:
            yield conn
