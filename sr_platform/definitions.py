"""The Dagster code location: every domain's assets, checks, jobs, schedules and sensors."""

import dagster as dg

from .resources import PostgresResource
from .schema.assets import database_schema

defs = dg.Definitions(
    assets=[database_schema],
    resources={
        "postgres": PostgresResource(database_url=dg.EnvVar("SR_PLATFORM_DATABASE_URL")),
    },
)
