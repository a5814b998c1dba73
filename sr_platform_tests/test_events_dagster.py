"""The events domain in real Dagster: the landing sensor, partitioned materializations of each
asset, and a backfill run twice, against a real PostgreSQL."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest

from sr_platform.core import db
from sr_platform.core.generate import write_event_files
from sr_platform.core.levels import level_outcomes
from sr_platform.definitions import defs
from sr_platform.events.assets import (
    event_features,
    new_resistance_events,
    support_and_resistance_master,
)
from sr_platform.events.partitions import event_partitions, partition_key
from sr_platform.events.resources import LandingZone
from sr_platform.events.sensors import landing_zone_sensor
from sr_platform.resources import PostgresResource

ASSETS = [new_resistance_events, support_and_resistance_master, event_features]


@pytest.fixture
def landing(tmp_path) -> Path:
    d = tmp_path / "landing"
    write_event_files(d, years=0.25, instruments=2, seed=3, event_rate=0.5)  # EUR_USD, GBP_USD
    return d


@pytest.fixture
def resources(clean_db, landing):
    return {"postgres": PostgresResource(database_url=clean_db),
            "landing_zone": LandingZone(path=str(landing))}


def _expected(landing: Path) -> pd.DataFrame:
    frames = [pd.read_csv(f) for f in sorted(landing.glob("*.csv"))]
    return pd.concat(frames).groupby(["instrument", "granularity"]).size()


def _count(url: str, table: str, where: str = "") -> int:
    with psycopg.connect(db.libpq_url(url)) as conn:
        return conn.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0]


def _partitions(url: str) -> set[tuple[str, str, str]]:
    with psycopg.connect(db.libpq_url(url)) as conn:
        return set(conn.execute("SELECT table_name, instrument, granularity "
                                "FROM list_partitions()").fetchall())


def test_sensor_requests_partitions_and_runs_once(resources, landing, clean_db):
    expected = _expected(landing)
    partitions_before = _partitions(clean_db)
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
        result = landing_zone_sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        keys = [r.partition_key for r in result.run_requests]
        assert keys == [partition_key(i, g) for i, g in sorted(expected.index)]
        assert len(keys) == 8
        (add,) = result.dynamic_partitions_requests
        assert (add.partitions_def_name, list(add.partition_keys)) == (
            "instruments", ["EUR_USD", "GBP_USD"])
        req = result.run_requests[0]
        assert req.run_config == {"ops": {"new_resistance_events": {"config": {
            "files": [str(landing / "events_EUR_USD_001.csv")]}}}}
        assert json.loads(result.cursor).keys() == {str(p) for p in landing.glob("*.csv")}
        # the tick does no database work: the runs create the partitions they load
        assert _partitions(clean_db) == partitions_before

        # a second tick with the cursor sees nothing new, even before any run has finished
        again = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs, cursor=result.cursor))
        assert isinstance(again, dg.SkipReason)

        # a retried tick (same cursor as the first) asks for the same run keys: no new runs
        retry = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs))
        assert [r.run_key for r in retry.run_requests] == [r.run_key for r in
                                                           result.run_requests]

        # a new file for one new pair, and a file that is not an event file
        write_event_files(landing / "more", years=0.25, instruments=3, seed=9, event_rate=0.5)
        for f in (landing / "more").glob("*.csv"):
            if "USD_JPY" not in f.name:
                f.unlink()
        (landing / "junk.csv").write_bytes(b"\x00\x01garbage")
        third = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs, cursor=result.cursor))
        assert sorted(r.partition_key.keys_by_dimension["instrument"]
                      for r in third.run_requests) == ["USD_JPY"] * 4
        (add,) = third.dynamic_partitions_requests
        assert list(add.partition_keys) == ["USD_JPY"]
        assert str(landing / "junk.csv") in json.loads(third.cursor)


def test_partitioned_materialization_of_each_asset(resources, landing, clean_db):
    expected = _expected(landing)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("instruments", ["EUR_USD", "GBP_USD"])
        key = partition_key("EUR_USD", "H1")
        result = dg.materialize(ASSETS, resources=resources, instance=instance,
                                partition_key=key)
        assert result.success
        n = int(expected[("EUR_USD", "H1")])
        ev = result.asset_materializations_for_node("new_resistance_events")[0].metadata
        assert (ev["rows_read"].value, ev["rows_loaded"].value, ev["rows_duplicate"].value,
                ev["rows_rejected"].value, ev["partition_rows"].value) == (n, n, 0, 0, n)
        lv = result.asset_materializations_for_node("support_and_resistance_master")[0].metadata
        assert lv["levels"].value == n
        assert lv["active"].value + lv["breached"].value == n
        ft = result.asset_materializations_for_node("event_features")[0].metadata
        assert ft["rows"].value == n
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {"loaded_equals_source_minus_rejected": True,
                          "no_rows_in_catch_all_partitions": True,
                          "rebound_in_atr_matches_rebound_over_atr": True,
                          "source_files_had_no_rejected_rows": True}
    # only that partition was loaded
    assert _count(clean_db, "new_resistance_events") == n
    assert _count(clean_db, "event_features", "WHERE level_status = 'breached'") \
        == lv["breached"].value


@pytest.mark.slow  # two backfills over every partition: 21-33 s measured
def test_backfill_twice_is_idempotent(resources, landing, clean_db):
    expected = _expected(landing)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("instruments", ["EUR_USD", "GBP_USD"])
        keys = event_partitions.get_partition_keys(dynamic_partitions_store=instance)
        assert len(keys) == 8
        counts = []
        for attempt in range(2):
            for key in keys:
                result = dg.materialize(ASSETS, resources=resources, instance=instance,
                                        partition_key=key)
                meta = result.asset_materializations_for_node("new_resistance_events")[0]
                i, g = key.keys_by_dimension["instrument"], key.keys_by_dimension["granularity"]
                n = int(expected[(i, g)])
                # first pass loads, second finds every row already there
                assert (meta.metadata["rows_loaded"].value,
                        meta.metadata["rows_duplicate"].value) == ((n, 0) if attempt == 0
                                                                   else (0, n))
            counts.append(tuple(_count(clean_db, t) for t in (
                "new_resistance_events", "support_and_resistance_master", "event_features")))
    total = int(expected.sum())
    assert counts == [(total, total, total), (total, total, total)]


def test_level_outcomes_exact():
    ts = pd.date_range("2026-01-05", periods=6, freq="h", tz="UTC")
    events = pd.DataFrame({
        "original_event_id": list("abcdef"),
        "ts": ts,
        "price": [1.0, 0.99, 0.995, 1.2, 0.90, 0.91],
        "atr": [0.04] * 6,
    })
    out = level_outcomes(events).set_index("original_event_id")
    # a: tested by b (0.99) and c (0.995) within 0.25*ATR = 0.01 below 1.0, breached by d
    assert out.loc["a", "test_count"] == 2
    assert out.loc["a", "last_test_date"] == ts[2]
    assert out.loc["a", "breach_date"] == ts[3]
    assert out.loc["a", "status"] == "breached"
    # d (1.2) is never exceeded: active; e is breached by f
    assert (out.loc["d", "status"], out.loc["d", "test_count"]) == ("active", 0)
    assert pd.isna(out.loc["d", "breach_date"])
    assert out.loc["e", "breach_date"] == ts[5]


def test_rejected_rows_warn_and_the_counts_check_holds(resources, landing, clean_db):
    expected = _expected(landing)
    bad = landing / "bad.csv"
    bad.write_text(
        "event_creation_date,granularity,instrument,event_price_level,atr_at_event,"
        "new_resistance_negative_rebound,new_resistance_negative_rebound_in_atr\n"
        "2026-01-05T10:00:00Z,H1,EUR_USD,-1,0.001,-0.0005,-0.5\n"
        "2026-01-05T11:00:00Z,H1,EUR_USD,1.2,0.001,-0.0005,-0.5\n")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("instruments", ["EUR_USD"])
        result = dg.materialize(ASSETS, resources=resources, instance=instance,
                                partition_key=partition_key("EUR_USD", "H1"))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    warn = checks["source_files_had_no_rejected_rows"]
    assert (warn.passed, warn.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert warn.metadata["rejected_rows_by_file"].value == {"bad.csv": 1}
    counts = checks["loaded_equals_source_minus_rejected"]
    n = int(expected[("EUR_USD", "H1")]) + 1
    assert counts.passed
    assert (counts.metadata["source_rows"].value, counts.metadata["rejected"].value,
            counts.metadata["in_table"].value) == (n + 1, 1, n)
    assert _count(clean_db, "rejected_events") == 1


def test_counts_check_passes_with_two_copies_of_one_file(resources, landing, clean_db):
    expected = _expected(landing)
    for f in landing.glob("*.csv"):
        if "EUR_USD" not in f.name:
            f.unlink()
    copy = landing / "copy_of_events_EUR_USD_001.csv"
    copy.write_bytes((landing / "events_EUR_USD_001.csv").read_bytes())
    n = int(expected[("EUR_USD", "H1")])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("instruments", ["EUR_USD"])
        result = dg.materialize(ASSETS, resources=resources, instance=instance,
                                partition_key=partition_key("EUR_USD", "H1"))
    meta = result.asset_materializations_for_node("new_resistance_events")[0].metadata
    # the second copy's rows are all duplicates of the first's
    assert (meta["rows_read"].value, meta["rows_loaded"].value, meta["rows_duplicate"].value,
            meta["files"].value) == (2 * n, n, n, 2)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    counts = checks["loaded_equals_source_minus_rejected"]
    assert counts.passed
    assert (counts.metadata["source_rows"].value, counts.metadata["rejected"].value,
            counts.metadata["source_distinct_good_ids"].value,
            counts.metadata["in_table"].value) == (2 * n, 0, n, n)
    assert _count(clean_db, "new_resistance_events") == n


def test_a_database_outage_asks_for_retries(landing, monkeypatch):
    """Unreachable database: the load step asks Dagster to retry (3 times), instead of failing
    for good; nothing else is retried this way."""
    from sr_platform.core.localpg import free_port
    from sr_platform.events import assets as event_assets

    monkeypatch.setattr(event_assets, "OUTAGE_RETRY_SECONDS", 0)
    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/sr_platform?connect_timeout=2"
    key = partition_key("EUR_USD", "H1")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("instruments", ["EUR_USD"])
        result = dg.materialize(
            [new_resistance_events], partition_key=key, instance=instance,
            raise_on_error=False,
            resources={"postgres": PostgresResource(database_url=dead),
                       "landing_zone": LandingZone(path=str(landing))})
    assert not result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 3
