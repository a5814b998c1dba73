"""The Dagster code location: every domain's assets, checks, jobs, schedules and sensors."""

import os
import warnings

import dagster as dg

from .core import settings
from .events.assets import (
    event_features,
    landing_files,
    new_resistance_events,
    support_and_resistance_master,
)
from .events.checks import EVENTS_STATE_CHECKS
from .events.jobs import ingest_landing_files_job, load_events_job
from .events.resources import LandingZone
from .events.sensors import landing_zone_sensor, outside_loads_sensor
from .operations import definitions as operations
from .resources import PostgresResource
from .schema.assets import database_schema

LANDING_DIR_ENV = settings.LANDING_DIR_ENV


def env_or_default(name: str) -> dg.EnvVar | None:
    """EnvVar(name) when the variable is set (resolved at launch, shown by name, never by
    value, in the UI); None otherwise, so the resource falls back to the core settings when
    it is used (the project-local cluster, data/landing). A bare EnvVar of an unset variable
    fails every run and sensor tick with DagsterInvalidConfigError instead."""
    return dg.EnvVar(name) if os.environ.get(name) else None


# read once, when the code location loads: thresholds, targets and policies become resource
# config; paths and URLs stay EnvVars (resolved at launch, never shown by value)
SETTINGS = settings.from_env()
defs = dg.Definitions(
    assets=[database_schema, landing_files, new_resistance_events,
            support_and_resistance_master, event_features, *operations.assets],
    asset_checks=EVENTS_STATE_CHECKS,
    jobs=[load_events_job, ingest_landing_files_job, *operations.jobs],
    schedules=operations.schedules,
    sensors=[landing_zone_sensor, outside_loads_sensor, *operations.sensors],
    resources={
        **operations.resources(SETTINGS, env_or_default),
        "postgres": PostgresResource(database_url=env_or_default(settings.DATABASE_URL_ENV)),
        "landing_zone": LandingZone(path=env_or_default(LANDING_DIR_ENV)),
    },
)

# Building the repository copies each sensor with its job's resources, and dagster 1.13 hands
# the copy owners=None, which warns that the beta `owners` parameter is in use (no sensor here
# has owners). Built once, here, with that one warning silenced: every Dagster process that
# loads this module reuses the cached build, and no other warning is hidden.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Parameter `owners`", category=dg.BetaWarning)
    defs.get_repository_def()
