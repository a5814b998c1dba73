"""Scale-out by instrument with postgres_fdw, against two real clusters: what PostgreSQL
refuses (foreign leaves under keyed partitioned tables), and the path that works (whole shard
databases read through UNION ALL views): loads, queries by instrument with pruning on both
sides, retention."""

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from sr_platform.core import db, loader, migrate, retention, settings, shards
from sr_platform.core.localpg import LocalCluster, free_port, read_pgpass

pytestmark = pytest.mark.skipif(settings.external_database_url() is not None,
                                reason="needs the local cluster's administrator")


def _events(path: Path, instrument: str, start: datetime, n: int) -> Path:
    pd.DataFrame([{
        "event_creation_date": (start + timedelta(days=i)).isoformat().replace("+00:00", "Z"),
        "granularity": "D", "instrument": instrument,
        "event_price_level": f"{1.2 + i / 1000:.6f}", "atr_at_event": "0.002000",
        "new_resistance_negative_rebound": "-0.001000",
        "new_resistance_negative_rebound_in_atr": "-0.500000"} for i in range(n)]
    ).to_csv(path, index=False)
    return path


@pytest.fixture
def shard(tmp_path):
    cluster = LocalCluster(tmp_path / "shard_home", settings.pg_bin_dir(), port=free_port())
    cluster.start()
    name = f"sr_shard_{uuid.uuid4().hex[:6]}"
    db.ensure_database(cluster.url(), name, owner=db.OWNER_ROLE)
    url = cluster.url(name)
    migrate.upgrade(url)
    yield cluster, name, url
    cluster.remove()


def test_foreign_leaves_are_refused_and_shards_work(server_url, make_db, shard, tmp_path):
    cluster, shard_db, shard_url = shard
    home = make_db(server_url)
    admin = db.role_url(home, db.ADMIN_ROLE)
    reader_pw = read_pgpass(cluster.passfile)["sr_app_reader"]

    # 1. PostgreSQL refuses a foreign leaf under a partitioned table with a unique index
    with psycopg.connect(db.libpq_url(admin), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
        conn.execute(sql.SQL("CREATE SERVER probe FOREIGN DATA WRAPPER postgres_fdw OPTIONS "
                             "(host '127.0.0.1', port {}, dbname {})").format(
            sql.Literal(str(cluster.port)), sql.Literal(shard_db)))
        with pytest.raises(psycopg.errors.WrongObjectType) as exc:
            conn.execute("CREATE FOREIGN TABLE new_resistance_events_d_sharded PARTITION OF "
                         "new_resistance_events_d FOR VALUES IN ('SHARDED') SERVER probe")
        assert 'cannot create foreign partition of partitioned table ' \
               '"new_resistance_events_d"' in str(exc.value)
        conn.execute("DROP SERVER probe")

    # 2. a whole shard database, read through postgres_fdw
    shards.add_shard(admin, "east", "127.0.0.1", cluster.port, shard_db, "sr_app_reader",
                     reader_pw)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    # loads: the same loader, pointed at the instrument's home
    r1 = loader.load_file(_events(tmp_path / "sharded.csv", "SHARDED", start, 40), shard_url)
    r2 = loader.load_file(_events(tmp_path / "local.csv", "LOCALPAIR", start, 30), home)
    assert (r1.loaded, r2.loaded) == (40, 30)

    with db.connect(home, role=db.READER_ROLE) as conn:
        counts = dict(conn.execute(
            "SELECT instrument, count(*) FROM all_events GROUP BY 1 ORDER BY 1").fetchall())
        assert counts == {"LOCALPAIR": 30, "SHARDED": 40}
        assert conn.execute("SELECT count(*) FROM all_levels WHERE instrument = 'SHARDED'"
                            ).fetchone() == (40,)
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM all_events WHERE instrument = 'SHARDED' "
            "AND granularity = 'D' ORDER BY event_creation_date DESC LIMIT 10"))
        # local side pruned to nothing (no SHARDED leaf here); the filter travels to the shard
        assert "new_resistance_events_d_" not in plan.split("Foreign Scan")[0]
        assert "Remote SQL:" in plan
        remote = plan.split("Remote SQL:")[1]
        assert "instrument = 'SHARDED'" in remote and "granularity = 'D'" in remote
        latest = conn.execute(
            "SELECT event_creation_date FROM all_events WHERE instrument = 'SHARDED' "
            "ORDER BY event_creation_date DESC LIMIT 1").fetchone()[0]
        assert latest == start + timedelta(days=39)

    # 3. retention runs per shard with the same code
    report = retention.prune(shard_url, as_of=datetime(2026, 1, 11, tzinfo=UTC))  # 10 days
    assert report.rows[retention.EVENTS] == 10
    with db.connect(home, role=db.READER_ROLE) as conn:
        assert conn.execute("SELECT count(*) FROM all_events WHERE instrument = 'SHARDED'"
                            ).fetchone() == (30,)
