"""Fixtures: a real PostgreSQL (the project's own cluster, or SR_PLATFORM_DATABASE_URL's
server), throwaway databases on it, and a second throwaway PostgreSQL 15 cluster where the
machine has those binaries."""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from sr_platform.core import db, migrate, settings
from sr_platform.core.localpg import LocalCluster, free_port

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="session")
def server_url() -> str:
    """Admin URL of the default server under test (its `postgres` database)."""
    external = settings.external_database_url()
    if external:
        return db.with_database(external, "postgres")
    cluster = db.local_cluster()
    cluster.start()
    return cluster.url("postgres")


@pytest.fixture(scope="session")
def pg15_server_url(tmp_path_factory) -> Iterator[str]:
    if not (PG15_BIN / "postgres").exists():
        pytest.skip(f"PostgreSQL 15 server binaries not at {PG15_BIN} (apt-get install "
                    "postgresql-15); the PG15 leg of the schema tests is skipped")
    cluster = LocalCluster(tmp_path_factory.mktemp("pg15"), PG15_BIN)
    cluster.start()
    yield cluster.url("postgres")
    cluster.remove()


@pytest.fixture(params=["default", "pg15"])
def any_server_url(request) -> str:
    """The default server, then PostgreSQL 15: schema and migration tests run on both."""
    return request.getfixturevalue("server_url" if request.param == "default"
                                   else "pg15_server_url")


@pytest.fixture
def make_db() -> Iterator[Callable[..., str]]:
    """make_db(server_url, migrated=True) -> URL of a new database, dropped after the test."""
    created: list[tuple[str, str]] = []

    def _make(server: str, migrated: bool = True) -> str:
        name = f"srtest_{uuid.uuid4().hex[:12]}"
        db.ensure_database(server, name, owner=db.OWNER_ROLE)
        created.append((server, name))
        url = db.with_database(server, name)
        if migrated:
            migrate.upgrade(url)
        return url

    yield _make
    for server, name in created:
        db.drop_database(server, name)


@pytest.fixture(scope="session")
def app_url(server_url) -> Iterator[str]:
    """One migrated database shared by a session's data tests (cleaned by `clean_db`)."""
    name = f"srtest_session_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server_url, name, owner=db.OWNER_ROLE)
    url = db.with_database(server_url, name)
    migrate.upgrade(url)
    yield url
    db.drop_database(server_url, name)


@pytest.fixture
def clean_db(app_url) -> str:
    """The session's database as a fresh migration leaves it: no rows, no load_log (a test
    sees only its own loads, e.g. outside_loads_sensor reads them) and no pair leaves (a test
    sees only its own partitions, whatever ran before it). The catch-all leaves stay."""
    with psycopg.connect(db.libpq_url(app_url), autocommit=True) as conn:
        conn.execute("TRUNCATE new_resistance_events, support_and_resistance_master, "
                     "event_features, rejected_events, load_log")
        leaves = [sql.Identifier(r[0]) for r in conn.execute(
            "SELECT partition_name FROM list_partitions()")]
        if leaves:  # one statement: the levels leaves' foreign keys go with their events leaf
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.SQL(", ").join(leaves)))
    return app_url


def event_row(**overrides) -> dict:
    """A valid event row; override any column."""
    row = {
        "event_creation_date": datetime(2026, 3, 4, 13, 0, tzinfo=UTC),
        "granularity": "H1",
        "instrument": "EUR_USD",
        "event_price_level": Decimal("1.084210"),
        "atr_at_event": Decimal("0.001500"),
        "volume_at_event": Decimal("1234.50"),
        "new_resistance_negative_rebound": Decimal("-0.000750"),
        "new_resistance_negative_rebound_in_atr": Decimal("-0.500000"),
        "day_of_week": 2,
        "hour_of_day": 13,
    }
    row.update(overrides)
    return row


def insert_event(conn: psycopg.Connection, **overrides):
    row = event_row(**overrides)
    cols = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    return conn.execute(
        f"INSERT INTO new_resistance_events ({cols}) VALUES ({marks}) "
        "RETURNING original_event_id, tableoid::regclass::text", list(row.values())).fetchone()


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def webserver(server_url, make_db, tmp_path):
    """`dagster-webserver` on a free loopback port, with PostgreSQL instance storage."""
    app = make_db(server_url)
    storage_name = f"srtest_dagster_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server_url, storage_name, owner=db.DAGSTER_ROLE)
    storage = db.role_url(db.with_database(server_url, storage_name), db.DAGSTER_ROLE)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(settings.PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(home), SR_PLATFORM_DATABASE_URL=app,
               SR_PLATFORM_DAGSTER_STORAGE_URL=db.sqlalchemy_url(storage, "psycopg2"))
    port = free_port()
    proc = subprocess.Popen(
        ["dagster-webserver", "-h", "127.0.0.1", "-p", str(port),
         "-w", str(settings.PROJECT_ROOT / "workspace.yaml")],
        env=env, cwd=tmp_path, start_new_session=True,
        stdout=open(tmp_path / "webserver.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        try:
            graphql(port, "{ version }")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "webserver.log").read_text()[-3000:]) from None
            time.sleep(0.5)
    yield port, env, tmp_path
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    db.drop_database(server_url, storage_name)


def asset_groups(port: int) -> dict[str, list[list[str]]]:
    """{group name: [asset key paths]} from the webserver, once the code location has loaded."""
    deadline = time.monotonic() + 120
    while True:
        data = graphql(port, "{ assetNodes { assetKey { path } groupName } }")
        nodes = (data.get("data") or {}).get("assetNodes") or []
        if nodes or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert nodes, f"the webserver lists no assets: {data}"
    groups: dict[str, list[list[str]]] = defaultdict(list)
    for node in nodes:
        groups[node["groupName"]].append(node["assetKey"]["path"])
    return dict(groups)
