"""Dagster resources shared by every domain."""

import dagster as dg

from .core import db


class PostgresResource(dg.ConfigurableResource):
    """The sr-platform database. `database_url` comes from SR_PLATFORM_DATABASE_URL (EnvVar);
    left empty, the project-local cluster is used (and started if needed)."""

    database_url: str | None = None

    def url(self) -> str:
        return self.database_url or db.database_url()
