"""Dagster resources shared by every domain."""

import dagster as dg

from .core import db


class PostgresResource(dg.ConfigurableResource):
    """The sr-platform database. `database_url` is SR_PLATFORM_DATABASE_URL (an EnvVar) when
    that is set; left None, db.database_url() decides when the resource is used: the
    project-local cluster's `sr_platform` database, started if needed."""

    database_url: str | None = None

    def url(self) -> str:
        return self.database_url or db.database_url()
