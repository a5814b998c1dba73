"""`dagster dev` started directly, with no SR_PLATFORM_* variable and no dagster.yaml: the
resources fall back to the core settings (the project-local cluster, data/landing) instead of
failing every run and sensor tick with DagsterInvalidConfigError."""

import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from sr_platform.core import landing, migrate, settings

from .dagster_dev import (
    dagster_dev,
    launch_assets,
    run_messages,
    stripped_environment,
    wait_for_run,
    wait_for_tick,
)

LOCATION = "sr_platform.definitions"  # `-m MODULE` names the code location after the module


@pytest.mark.slow
def test_dagster_dev_without_any_sr_platform_variable(tmp_path):
    home = tmp_path / "dagster_home"  # no dagster.yaml: Dagster's defaults (SQLite here)
    home.mkdir()
    work = tmp_path / "cwd"
    work.mkdir()
    env = stripped_environment(DAGSTER_HOME=str(home))
    # bring the default local cluster up outside dagster dev's process group (which is killed
    # at the end); the run below still finds it through db.database_url()'s fallback
    url = subprocess.run(
        [sys.executable, "-c", "from sr_platform.core import db; print(db.database_url())"],
        env=env, cwd=work, check=True, capture_output=True, text=True).stdout.strip()
    assert make_url(url).database == settings.APP_DATABASE
    assert make_url(url).username == "sr_app_writer"  # the fallback is least-privilege too
    with dagster_dev(["-m", LOCATION], env=env, cwd=work) as dev:
        port = dev.port
        run_id = launch_assets(port, LOCATION, [["database_schema"]])
        status = wait_for_run(port, run_id)
        assert status == "SUCCESS", run_messages(port, run_id)[-20:]
        tick = wait_for_tick(port, LOCATION, "landing_zone_sensor")
        # the fallback landing zone is data/landing under the working directory: missing,
        # and the tick says so (not "no new files")
        assert tick == {"status": "SKIPPED", "error": None,
                        "skipReason": landing.missing_reason(work / "data" / "landing")}
    assert migrate.current(url) == migrate.head()
