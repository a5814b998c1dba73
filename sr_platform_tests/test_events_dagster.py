"""The events domain in real Dagster: the landing sensor, partitioned materializations of each
asset, and a backfill run twice, against a real PostgreSQL."""

import json
import logging
from collections import Counter
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest

from sr_platform.core import db
from sr_platform.core.generate import write_event_files
from sr_platform.core.levels import level_outcomes
from sr_platform.core.reading import existing_pairs
from sr_platform.definitions import defs
from sr_platform.events.assets import (
    event_features,
    new_resistance_events,
    support_and_resistance_master,
)
from sr_platform.events.checks import EVENTS_STATE_CHECKS
from sr_platform.events.jobs import ingest_landing_files_job, load_events_job
from sr_platform.events.partitions import event_partitions, partition_key
from sr_platform.events.resources import LandingZone
from sr_platform.events.sensors import landing_zone_sensor
from sr_platform.resources import PostgresResource

from .conftest import insert_event
from .helpers import count_rows

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


def _partitions(url: str) -> set[tuple[str, str, str]]:
    with psycopg.connect(db.libpq_url(url)) as conn:
        return set(conn.execute("SELECT table_name, instrument, granularity "
                                "FROM list_partitions()").fetchall())


def test_sensor_requests_one_run_per_tick(resources, landing, clean_db):
    expected = _expected(landing)
    partitions_before = _partitions(clean_db)
    files = sorted(str(p) for p in landing.glob("*.csv"))
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
        result = landing_zone_sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        (req,) = result.run_requests
        assert req.run_config == {"ops": {"ingest_files": {"config": {
            "files": files,
            "partitions_by_file": {f: sorted(str(partition_key(i, g)) for i, g in expected.index
                                             if f"_{i}_" in f) for f in files}}}}}
        assert len(expected) == 8
        assert req.tags["sr_platform/files"] == "events_EUR_USD_001.csv,events_GBP_USD_001.csv"
        assert req.tags["sr_platform/partition_count"] == "8"
        (add,) = result.dynamic_partitions_requests
        assert (add.partitions_def_name, list(add.partition_keys)) == (
            "instruments", ["EUR_USD", "GBP_USD"])
        assert json.loads(result.cursor)["recent"].keys() == set(files)
        # the tick does no database work: the run creates the partitions it loads
        assert _partitions(clean_db) == partitions_before

        # a second tick with the cursor sees nothing new, even before the run has finished
        again = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs, cursor=result.cursor))
        assert again.skip_reason and not again.run_requests

        # a retried tick (same cursor as the first) asks for the same run key: no new run
        retry = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs))
        assert [r.run_key for r in retry.run_requests] == [req.run_key]

        # a new file for one new instrument, and a file that is not an event file
        write_event_files(landing / "more", years=0.25, instruments=3, seed=9, event_rate=0.5)
        for f in (landing / "more").glob("*.csv"):
            if "USD_JPY" not in f.name:
                f.unlink()
        (landing / "junk.csv").write_bytes(b"\x00\x01garbage")
        third = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs, cursor=result.cursor))
        (req3,) = third.run_requests
        assert req3.run_config["ops"]["ingest_files"]["config"]["files"] == [
            str(landing / "more" / "events_USD_JPY_001.csv")]
        assert req3.run_key != req.run_key
        (add,) = third.dynamic_partitions_requests
        assert list(add.partition_keys) == ["USD_JPY"]
        assert str(landing / "junk.csv") in json.loads(third.cursor)["recent"]


def _tick_and_run(instance, resources, cursor=None):
    """One sensor tick, its dynamic partitions added (as the daemon does), and the one run it
    requests executed with the request's config and tags."""
    result = landing_zone_sensor(dg.build_sensor_context(
        instance=instance, resources=resources, definitions=defs, cursor=cursor))
    for add in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(add.partitions_def_name, add.partition_keys)
    (req,) = result.run_requests
    run = ingest_landing_files_job.execute_in_process(
        run_config=req.run_config, tags=req.tags, instance=instance, resources=resources)
    assert run.success
    return req, run


def _run_materializations(run) -> dict[str, dict[str, dict]]:
    """{asset: {partition: metadata}} of the run's materializations, each partition once."""
    out: dict[str, dict[str, dict]] = {}
    for m in run.get_asset_materialization_events():
        mat = m.materialization
        by_partition = out.setdefault(mat.asset_key.to_user_string(), {})
        assert mat.partition not in by_partition, mat.partition
        by_partition[mat.partition] = {k: v.value for k, v in mat.metadata.items()}
    return out


BAD = ("event_creation_date,granularity,instrument,event_price_level,atr_at_event,"
       "new_resistance_negative_rebound,new_resistance_negative_rebound_in_atr\n"
       "2026-01-05T10:00:00Z,H1,EUR_USD,-1,0.001,-0.0005,-0.5\n"  # bad price: EUR_USD H1
       "2026-01-05T11:00:00Z,H1,EUR_USD,1.2,0.001,-0.0005,-0.5\n"  # good
       "2026-01-05T12:00:00Z,H1,,1.2,0.001,-0.0005,-0.5\n")  # no instrument: no partition


def test_the_ticks_one_run_materializes_each_partition_once(resources, landing, clean_db):
    # each instrument's rows in two files: a partition is complete after its second file
    for f in landing.glob("*.csv"):
        f.unlink()
    write_event_files(landing, years=0.25, instruments=2, seed=3, event_rate=0.5,
                      files_per_instrument=2)
    expected = _expected(landing)
    in_files = Counter(str(partition_key(i, g)) for f in landing.glob("*.csv")
                       for i, g in set(zip(*pd.read_csv(f)[["instrument", "granularity"]].T.values,
                                           strict=True)))
    in_files["H1|EUR_USD"] += 1  # bad.csv
    assert max(in_files.values()) == 3  # a partition whose rows are in three files
    (landing / "bad.csv").write_text(BAD)
    keys = {str(partition_key(i, g)): int(n) for (i, g), n in expected.items()}
    keys[str(partition_key("EUR_USD", "H1"))] += 1  # bad.csv's good row
    total = sum(keys.values())
    with dg.instance_for_test() as instance:
        req, run = _tick_and_run(instance, resources)
        assert len(req.run_config["ops"]["ingest_files"]["config"]["files"]) == 5
        assert req.run_config["ops"]["ingest_files"]["config"]["partitions_by_file"][
            str(landing / "bad.csv")] == [str(partition_key("EUR_USD", "H1"))]
        for asset in ASSETS:
            assert instance.get_materialized_partitions(asset.key) == set(keys)
        mats = _run_materializations(run)
        assert {a: set(p) for a, p in mats.items()} == {
            a.key.to_user_string(): set(keys) for a in ASSETS}
        for key, n in keys.items():
            ev = mats["new_resistance_events"][key]
            assert (ev["rows_loaded"], ev["partition_rows"], ev["dagster/row_count"]) == (n, n, n)
            assert ev["rows_rejected"] == (1 if key == "H1|EUR_USD" else 0)
            assert ev["files"] == in_files[key]
            lv = mats["support_and_resistance_master"][key]
            assert (lv["levels"], lv["active"] + lv["breached"]) == (n, n)
            assert mats["event_features"][key]["rows"] == n
        checks = {c.check_name: c for c in run.get_asset_check_evaluations()}
        assert {name: c.passed for name, c in checks.items()} == {
            "loaded_equals_source_minus_rejected": True,
            "no_rows_in_catch_all_partitions": True,
            "rebound_in_atr_matches_rebound_over_atr": True,
            "source_files_had_no_rejected_rows": False}
        counts = checks["loaded_equals_source_minus_rejected"].metadata
        assert (counts["source_rows"].value, counts["rejected"].value, counts["loaded"].value,
                counts["in_table_written_by_this_run"].value,
                counts["partitions_checked"].value) == (total + 2, 2, total, total, 8)
        warn = checks["source_files_had_no_rejected_rows"]
        assert warn.severity == dg.AssetCheckSeverity.WARN
        assert warn.metadata["rejected_rows_by_file"].value == {"bad.csv": 2}
        assert warn.metadata["rejected_rows_by_partition"].value == {"H1|EUR_USD": 1}
        assert warn.metadata["rejected_rows_without_a_valid_partition"].value == 1
        assert [count_rows(clean_db, t) for t in (
            "new_resistance_events", "support_and_resistance_master", "event_features",
            "rejected_events")] == [total, total, total, 2]
        with psycopg.connect(db.libpq_url(clean_db)) as conn:
            # one load per file, each whole (not per partition); load_log outlives clean_db,
            # so only this landing zone's loads
            assert conn.execute("SELECT count(*), count(instrument) FROM load_log "
                                "WHERE starts_with(source, %s)", (f"{landing.resolve()}/",)
                                ).fetchone() == (5, 0)

        # the same run again (a re-execution): every row is found present, none loaded twice
        again = ingest_landing_files_job.execute_in_process(
            run_config=req.run_config, tags=req.tags, instance=instance, resources=resources)
        assert again.success
        mats = _run_materializations(again)
        assert {p: m["rows_loaded"] for p, m in mats["new_resistance_events"].items()} == {
            k: 0 for k in keys}
        assert {p: m["partition_rows"] for p, m in mats["new_resistance_events"].items()} == keys
        assert all(c.passed for c in again.get_asset_check_evaluations()
                   if c.check_name != "source_files_had_no_rejected_rows")
        assert [count_rows(clean_db, t) for t in (
            "new_resistance_events", "support_and_resistance_master", "event_features",
            "rejected_events")] == [total, total, total, 2]

        # a backfill of one partition through the partitioned assets: nothing new (backfills
        # run twice: test_backfill_twice_is_idempotent)
        key = partition_key("GBP_USD", "D")
        n = keys[str(key)]
        result = dg.materialize(ASSETS, resources=resources, instance=instance,
                                partition_key=key)
        meta = result.asset_materializations_for_node("new_resistance_events")[0].metadata
        assert (meta["rows_loaded"].value, meta["rows_duplicate"].value,
                meta["partition_rows"].value) == (0, n, n)
        assert [count_rows(clean_db, t) for t in (
            "new_resistance_events", "support_and_resistance_master", "event_features")] == [
            total, total, total]


def test_a_tick_after_a_backfill_loads_only_what_is_new(resources, landing, clean_db):
    """Partitions backfilled first (the asset path), then the sensor's run over the same files
    and one more: only the new file's rows load, every partition is reported."""
    expected = _expected(landing)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("instruments", ["EUR_USD", "GBP_USD"])
        key = partition_key("EUR_USD", "W")
        assert dg.materialize(ASSETS, resources=resources, instance=instance,
                              partition_key=key).success
        n = int(expected[("EUR_USD", "W")])
        assert count_rows(clean_db, "new_resistance_events") == n
        _, run = _tick_and_run(instance, resources)
        mats = _run_materializations(run)
        loaded = {p: m["rows_loaded"] for p, m in mats["new_resistance_events"].items()}
        assert loaded == {str(partition_key(i, g)): (0 if (i, g) == ("EUR_USD", "W")
                                                     else int(c))
                          for (i, g), c in expected.items()}
        assert count_rows(clean_db, "new_resistance_events") == int(expected.sum())
        assert all(c.passed for c in run.get_asset_check_evaluations())


def test_partitioned_materialization_of_each_asset(resources, landing, clean_db):
    expected = _expected(landing)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("instruments", ["EUR_USD", "GBP_USD"])
        key = partition_key("EUR_USD", "H1")
        # the database-state checks are standalone: selected with the assets, as the
        # load_events job selects them
        result = dg.materialize([*ASSETS, *EVENTS_STATE_CHECKS], resources=resources,
                                instance=instance, partition_key=key)
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
    assert count_rows(clean_db, "new_resistance_events") == n
    assert count_rows(clean_db, "event_features", "WHERE level_status = 'breached'") \
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
            counts.append(tuple(count_rows(clean_db, t) for t in (
                "new_resistance_events", "support_and_resistance_master", "event_features")))
    total = int(expected.sum())
    assert counts == [(total, total, total), (total, total, total)]


def test_the_database_state_checks_run_on_their_own(resources, landing, clean_db):
    """Standalone @asset_checks: run without a load, over the tables as they are; a row whose
    stored rebound in ATR is not its rebound over its ATR fails the rebound check, naming its
    partition; nothing in a catch-all partition passes the other."""
    job_checks = defs.resolve_job_def(load_events_job.name).asset_layer.asset_graph
    assert {c.check_key for c in EVENTS_STATE_CHECKS} <= job_checks.asset_check_keys
    with db.connect(clean_db, role=db.WRITER_ROLE) as conn:
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1'), ensure_partition('GBP_USD', 'D')")
        insert_event(conn)
        insert_event(conn, instrument="GBP_USD", granularity="D", hour_of_day=13,
                     new_resistance_negative_rebound_in_atr=Decimal("-0.400000"))
        conn.commit()
        # clean_db empties the tables but keeps earlier tests' leaves: every one is checked
        pairs = existing_pairs(conn, "new_resistance_events")
    assert {("EUR_USD", "H1"), ("GBP_USD", "D")} <= set(pairs)
    with dg.instance_for_test() as instance:
        job = dg.Definitions(asset_checks=EVENTS_STATE_CHECKS, resources=resources
                             ).resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert {name: c.passed for name, c in checks.items()} == {
        "no_rows_in_catch_all_partitions": True,
        "rebound_in_atr_matches_rebound_over_atr": False}
    rebound = checks["rebound_in_atr_matches_rebound_over_atr"].metadata
    assert (rebound["mismatched_rows"].value, rebound["partitions_checked"].value,
            rebound["partitions_failing"].value) == (1, len(pairs), {"D|GBP_USD": 1})
    assert checks["no_rows_in_catch_all_partitions"].metadata["rows_in_null_guards"].value == 0


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
    # the same figures as the landing run's check (one definition, core/ingest.py)
    assert (counts.metadata["source_rows"].value, counts.metadata["rejected"].value,
            counts.metadata["loaded"].value,
            counts.metadata["in_table_written_by_this_run"].value) == (n + 1, 1, n, n)
    assert count_rows(clean_db, "rejected_events") == 1


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
            counts.metadata["duplicate"].value, counts.metadata["loaded"].value,
            counts.metadata["in_table_written_by_this_run"].value) == (2 * n, 0, n, n, n)
    assert count_rows(clean_db, "new_resistance_events") == n


def test_a_database_outage_asks_for_retries(landing, monkeypatch):
    """Unreachable database: the load step asks Dagster to retry (3 times), instead of failing
    for good; nothing else is retried this way."""
    from sr_platform.core.localpg import free_port
    from sr_platform.events import reporting

    monkeypatch.setattr(reporting, "OUTAGE_RETRY_SECONDS", 0)
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


def test_a_file_gone_before_the_run_is_reported_and_the_others_load(resources, landing,
                                                                    clean_db):
    expected = _expected(landing)
    with dg.instance_for_test() as instance:
        result = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs))
        instance.add_dynamic_partitions("instruments", ["EUR_USD", "GBP_USD"])
        (landing / "events_GBP_USD_001.csv").unlink()  # between the tick and its run
        (req,) = result.run_requests
        run = ingest_landing_files_job.execute_in_process(
            run_config=req.run_config, instance=instance, resources=resources)
        assert run.success
        mats = _run_materializations(run)
        assert {a: set(p) for a, p in mats.items()} == {
            a.key.to_user_string(): {str(partition_key("EUR_USD", g)) for g in
                                     ("D", "H1", "H4", "W")} for a in ASSETS}
        warnings = [e.message for e in instance.all_logs(run.run_id)
                    if e.level == logging.WARNING]
        assert any("events_GBP_USD_001.csv" in w for w in warnings), warnings
    n = int(expected.loc["EUR_USD"].sum())
    assert count_rows(clean_db, "new_resistance_events") == n


def test_the_ingest_run_asks_for_retries_when_the_database_is_down(landing, monkeypatch):
    """Unreachable database: the ingest step asks Dagster to retry (3 times) instead of failing
    for good, as the events asset does."""
    from sr_platform.core.localpg import free_port
    from sr_platform.events import reporting

    monkeypatch.setattr(reporting, "OUTAGE_RETRY_SECONDS", 0)
    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/sr_platform?connect_timeout=2"
    resources = {"postgres": PostgresResource(database_url=dead),
                 "landing_zone": LandingZone(path=str(landing))}
    with dg.instance_for_test() as instance:
        req = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs)).run_requests[0]
        result = ingest_landing_files_job.execute_in_process(
            run_config=req.run_config, instance=instance, resources=resources,
            raise_on_error=False)
    assert not result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 3
    assert not result.get_asset_materialization_events()
