"""The Dagster code location: every domain's assets, checks, jobs, schedules and sensors."""

import dagster as dg

from .events.assets import (
    event_features,
    freshness_checks,
    freshness_checks_sensor,
    landing_files,
    new_resistance_events,
    support_and_resistance_master,
)
from .events.jobs import load_events_job
from .events.resources import LandingZone
from .events.sensors import landing_zone_sensor
from .operations import definitions as operations
from .resources import PostgresResource
from .schema.assets import database_schema

defs = dg.Definitions(
    assets=[database_schema, landing_files, new_resistance_events,
            support_and_resistance_master, event_features, *operations.assets],
    asset_checks=[*freshness_checks],
    jobs=[load_events_job, *operations.jobs],
    schedules=operations.schedules,
    sensors=[landing_zone_sensor, freshness_checks_sensor, *operations.sensors],
    resources={**operations.resources,
        "postgres": PostgresResource(database_url=dg.EnvVar("SR_PLATFORM_DATABASE_URL")),
        "landing_zone": LandingZone(path=dg.EnvVar("SR_PLATFORM_LANDING_DIR")),
    },
)
