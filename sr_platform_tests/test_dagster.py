"""The Dagster code location: loads, materializes, and serves the UI over real storage."""


import dagster as dg

from sr_platform.core import catalog, migrate
from sr_platform.definitions import defs
from sr_platform.resources import PostgresResource
from sr_platform.schema.assets import database_schema

from .conftest import asset_groups


def test_pinned_dagster_postgres_imports():
    import dagster_postgres

    assert dagster_postgres.__version__ == "0.29.27"
    assert dg.__version__ == "1.13.27"


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "database_schema" in keys


def test_materialize_database_schema(server_url, make_db):
    url = make_db(server_url, migrated=False)
    assert migrate.current(url) is None
    result = dg.materialize([database_schema],
                            resources={"postgres": PostgresResource(database_url=url)})
    assert result.success
    assert migrate.current(url) == migrate.head()
    meta = result.asset_materializations_for_node("database_schema")[0].metadata
    assert meta["revision"].value == migrate.head()
    assert meta["previous_revision"].value == "None"
    # 0005 added event_id_registry, 0009 the change log, its counter and pending changes
    assert meta["table_count"].value == 9
    assert sorted(catalog.schema_summary(url).tables) == [
        "change_log", "change_pending", "change_seq", "event_features", "event_id_registry",
        "load_log", "new_resistance_events", "rejected_events", "support_and_resistance_master"]
    assert meta["partition_count"].value == 0
    # a second materialization is a no-op upgrade
    again = dg.materialize([database_schema],
                           resources={"postgres": PostgresResource(database_url=url)})
    meta = again.asset_materializations_for_node("database_schema")[0].metadata
    assert meta["previous_revision"].value == migrate.head()


def test_webserver_lists_assets(webserver):
    port, _, _ = webserver
    assert asset_groups(port) == {
        "schema": [["database_schema"]],
        "events": [["event_features"], ["landing_files"], ["new_resistance_events"],
                   ["support_and_resistance_master"]],
        "operations": [["database_backup"], ["database_health"], ["partition_maintenance"],
                       ["retention_pruning"], ["sla_benchmark"]],
    }


def test_resources_use_envvar_only_when_the_variable_is_set(monkeypatch):
    from sr_platform.definitions import env_or_default

    monkeypatch.setenv("SR_PLATFORM_LANDING_DIR", "/srv/landing")
    assert env_or_default("SR_PLATFORM_LANDING_DIR") == dg.EnvVar("SR_PLATFORM_LANDING_DIR")
    assert isinstance(env_or_default("SR_PLATFORM_LANDING_DIR"), dg.EnvVar)
    monkeypatch.delenv("SR_PLATFORM_LANDING_DIR")
    assert env_or_default("SR_PLATFORM_LANDING_DIR") is None


def test_unset_resources_fall_back_to_the_core_settings(monkeypatch, tmp_path):
    from sr_platform.events.resources import LandingZone

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SR_PLATFORM_LANDING_DIR", raising=False)
    assert LandingZone().directory() == tmp_path / "data" / "landing"
    monkeypatch.setenv("SR_PLATFORM_LANDING_DIR", str(tmp_path / "in"))
    assert LandingZone().directory() == tmp_path / "in"
