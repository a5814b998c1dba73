"""One Settings object read from the environment at the edge (settings.from_env); core takes
what it needs as arguments; the Dagster resources carry the settings (issue 17 §3)."""

from pathlib import Path

import dagster as dg
import psycopg
import pytest

from sr_platform.core import alerts, db, health, retention, settings, sla
from sr_platform.definitions import env_or_default
from sr_platform.operations import definitions as operations
from sr_platform.resources import PostgresResource

SRC = Path(__file__).resolve().parents[1] / "sr_platform"
VARIABLES = [settings.DATABASE_URL_ENV, settings.OWNER_URL_ENV, settings.READER_URL_ENV,
             settings.DAGSTER_STORAGE_URL_ENV, settings.LANDING_DIR_ENV,
             settings.BACKUP_DIR_ENV, settings.ALERT_LOG_ENV, settings.ALERT_WEBHOOK_ENV,
             "SR_PLATFORM_RETENTION_EVENTS_YEARS", "SR_PLATFORM_HEALTH_BACKUP_AGE_HOURS_WARN",
             "SR_PLATFORM_SLA_RANGE_P95_MS"]


@pytest.fixture
def bare_env(monkeypatch, tmp_path) -> Path:
    """No setting set; the working directory and the state directory in tmp_path."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SR_PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_from_env_defaults(bare_env):
    assert settings.from_env() == settings.Settings(
        database=settings.Database(None, None, None, None),
        landing_dir=bare_env / "data" / "landing",
        backup_dir=settings.PROJECT_ROOT / "backups",
        alerts=settings.Alerts(bare_env / "home" / "alerts.log", None),
        retention=retention.Policy(), health=health.Thresholds(), sla=sla.Targets())


def test_from_env_reads_every_section_and_empty_means_unset(bare_env, monkeypatch):
    values = {settings.DATABASE_URL_ENV: "postgresql://w@db.example/sr_platform",
              settings.READER_URL_ENV: "postgresql://r@db.example/sr_platform",
              settings.OWNER_URL_ENV: "",
              settings.DAGSTER_STORAGE_URL_ENV: "postgresql+psycopg2://d@db.example/dagster",
              settings.LANDING_DIR_ENV: "", settings.BACKUP_DIR_ENV: str(bare_env / "b"),
              settings.ALERT_LOG_ENV: str(bare_env / "a.log"),
              settings.ALERT_WEBHOOK_ENV: "http://hooks.example/x",
              "SR_PLATFORM_RETENTION_EVENTS_YEARS": "3",
              "SR_PLATFORM_HEALTH_BACKUP_AGE_HOURS_WARN": "30",
              "SR_PLATFORM_SLA_RANGE_P95_MS": "250"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert settings.from_env() == settings.Settings(
        database=settings.Database("postgresql://w@db.example/sr_platform", None,
                                   "postgresql://r@db.example/sr_platform",
                                   "postgresql+psycopg2://d@db.example/dagster"),
        landing_dir=bare_env / "data" / "landing",  # empty: the default
        backup_dir=bare_env / "b",
        alerts=settings.Alerts(bare_env / "a.log", "http://hooks.example/x"),
        retention=retention.Policy(events_years=3),
        health=health.Thresholds(backup_age_hours=(30.0, 50.0)),
        sla=sla.Targets(range_p95_ms=250.0))


def test_core_modules_read_no_environment():
    """The modules issue 17 named take their settings as arguments: none reads os.environ
    or a settings variable itself (only settings.py and, for where the database is, db.py)."""
    for name in ("alerts", "backup", "landing", "health", "sla", "retention"):
        text = (SRC / "core" / f"{name}.py").read_text()
        assert "os.environ" not in text and "settings.env(" not in text \
            and ".from_env()" not in text, name


def test_send_alert_posts_only_where_it_is_told(bare_env, monkeypatch):
    """The webhook comes from the Alerts settings passed in; the variable is read at the edge,
    not by core (here it names a server that does not exist)."""
    monkeypatch.setenv(settings.ALERT_WEBHOOK_ENV, "http://127.0.0.1:9/never")
    sent = alerts.send_alert("job", "run", "boom", settings.Alerts(bare_env / "a.log"))
    assert sent["webhook"] is None
    assert (bare_env / "a.log").read_text().count('"webhook": null') == 1


def test_code_location_resources_carry_the_settings(bare_env, monkeypatch):
    """Thresholds, targets and the retention policy are config values (the UI shows them);
    paths and URLs are EnvVars when their variables are set (shown by name only)."""
    monkeypatch.setenv(settings.ALERT_WEBHOOK_ENV, "http://hooks.example/secret-token")
    monkeypatch.setenv(settings.BACKUP_DIR_ENV, str(bare_env / "b"))
    monkeypatch.setenv("SR_PLATFORM_RETENTION_EVENTS_YEARS", "3")
    monkeypatch.setenv("SR_PLATFORM_RETENTION_CHANGE_LOG_DAYS", "3")
    r = operations.resources(settings.from_env(), env_or_default)
    assert r["alerts"].webhook == dg.EnvVar(settings.ALERT_WEBHOOK_ENV)
    assert r["alerts"].log is None
    assert r["backups"].path == dg.EnvVar(settings.BACKUP_DIR_ENV)
    assert r["backups"].dagster_storage_url is None
    assert r["thresholds"].retention.events_years == 3
    assert r["thresholds"].retention_policy() == retention.Policy(events_years=3,
                                                                 change_log_days=3)
    # as a run sees it: the EnvVar resolved, the unset log the settings' default
    alerts = r["alerts"].process_config_and_initialize()
    assert alerts.target() == settings.Alerts(bare_env / "home" / "alerts.log",
                                              "http://hooks.example/secret-token")


def test_postgres_resource_connects_by_role(server_url, make_db):
    url = make_db(server_url)
    postgres = PostgresResource(database_url=url)
    with postgres.connect("reader", autocommit=True) as conn:
        who = conn.execute("SELECT current_user").fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM load_log")
    reader = db.LOGIN_OF[db.READER_ROLE] if db.has_passfile(url) else db.READER_ROLE
    assert who == reader
    with postgres.connect("writer") as conn:
        assert conn.execute("SELECT count(*) FROM load_log").fetchone()[0] == 0
    assert postgres.url() == url
    assert postgres.url("reader") == db.role_url(url, db.READER_ROLE)
    with pytest.raises(ValueError, match="role 'admin': expected one of owner, writer, reader"):
        postgres.url("admin")
