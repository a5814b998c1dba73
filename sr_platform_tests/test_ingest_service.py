"""The ingest service (core/ingest.py) from the command line: a load leaves every pair it
touched fully derived, and Dagster learns of it (outside_loads_sensor)."""

from datetime import datetime

import dagster as dg
import pandas as pd
import psycopg

from sr_platform.cli import main
from sr_platform.core import db
from sr_platform.core.generate import write_event_files
from sr_platform.definitions import defs
from sr_platform.events.partitions import partition_key
from sr_platform.events.sensors import outside_loads_sensor
from sr_platform.resources import PostgresResource

ASSETS = ("new_resistance_events", "support_and_resistance_master", "event_features")


def _rows(url: str, query: str, params=()) -> list[tuple]:
    with psycopg.connect(db.libpq_url(url)) as conn:
        return conn.execute(query, params).fetchall()


def _split(tmp_path):
    """Two instruments' events, the first half of each file in a/, the second in b/: b's
    events are later events of the same pairs."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for f in write_event_files(tmp_path / "gen", years=0.1, instruments=2, seed=11,
                               event_rate=0.5):
        header, *lines = f.read_text().splitlines(keepends=True)
        half = len(lines) // 2
        (a / f.name).write_text(header + "".join(lines[:half]))
        (b / f.name).write_text(header + "".join(lines[half:]))
    return a, b


def test_a_cli_load_into_existing_pairs_leaves_them_derived_and_dagster_knows(
        clean_db, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SR_PLATFORM_DATABASE_URL", clean_db)
    a, b = _split(tmp_path)
    assert main(["load", str(a)]) == 0
    assert main(["load", str(b)]) == 0  # new events of the pairs a/ created
    out = capsys.readouterr().out
    in_b = set()
    for f in b.iterdir():
        frame = pd.read_csv(f, usecols=["instrument", "granularity"])
        in_b |= set(map(tuple, frame.drop_duplicates().to_numpy().tolist()))
    assert f"derived: {len(in_b)} pairs refreshed" in out
    pairs = _rows(clean_db, "SELECT DISTINCT instrument, granularity FROM new_resistance_events "
                            "ORDER BY 1, 2")
    assert len(pairs) == 8
    # features: one row per event in every pair
    assert _rows(clean_db, "SELECT instrument, granularity, count(*) FROM new_resistance_events "
                           "GROUP BY 1, 2 ORDER BY 1, 2") == \
        _rows(clean_db, "SELECT instrument, granularity, count(*) FROM event_features "
                        "GROUP BY 1, 2 ORDER BY 1, 2")
    # breached exactly when a later event of its pair is priced above it
    truth = _rows(clean_db, """
        SELECT count(*) FILTER (WHERE l.status = 'breached'),
               count(*) FILTER (WHERE (l.status = 'breached') IS DISTINCT FROM EXISTS (
                   SELECT FROM new_resistance_events e
                   WHERE (e.instrument, e.granularity) = (l.instrument, l.granularity)
                     AND e.event_creation_date > l.event_creation_date
                     AND e.event_price_level > ev.event_price_level)),
               count(*) FILTER (WHERE f.level_status IS DISTINCT FROM l.status)
        FROM support_and_resistance_master l
        JOIN new_resistance_events ev USING (instrument, granularity, event_creation_date,
                                             original_event_id)
        JOIN event_features f USING (instrument, granularity, event_creation_date,
                                     original_event_id)""")[0]
    breached, wrong, features_stale = truth
    assert breached > 0 and (wrong, features_stale) == (0, 0)
    (loaded_at,) = _rows(clean_db, "SELECT max(finished_at) FROM load_log WHERE origin = 'cli'")[0]

    # Dagster: each touched partition of the three assets materialized after the load
    resources = {"postgres": PostgresResource(database_url=clean_db)}
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources,
                                          definitions=defs)
        result = outside_loads_sensor(context)
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
        for asset in ASSETS:
            for instrument, granularity in pairs:
                key = str(partition_key(instrument, granularity))
                records = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset),
                                          asset_partitions=[key]), limit=1).records
                assert len(records) == 1, (asset, key)
                stamp = datetime.fromtimestamp(records[0].timestamp, loaded_at.tzinfo)
                assert stamp > loaded_at
        meta = {e.partition: e.metadata for e in result.asset_events
                if e.asset_key == dg.AssetKey("new_resistance_events")}
        counts = dict(((i, g), n) for i, g, n in _rows(
            clean_db, "SELECT instrument, granularity, count(*) FROM new_resistance_events "
                      "GROUP BY 1, 2"))
        assert {k: m["rows_loaded"].value for k, m in meta.items()} == {
            str(partition_key(*p)): n for p, n in counts.items()}
        # nothing new: the next tick skips and keeps its cursor
        again = outside_loads_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs,
            cursor=result.cursor))
        assert isinstance(again, dg.SkipReason)


def test_a_rerun_refreshes_pairs_whose_rows_are_all_present(clean_db, tmp_path, monkeypatch,
                                                            capsys):
    """A load whose refresh was cut off (kill -9 between the load's commit and the refresh;
    here: the library's load, which does not refresh) is made whole by rerunning the same
    command: every row is a duplicate, and the pairs are still refreshed."""
    from sr_platform.core import loader

    monkeypatch.setenv("SR_PLATFORM_DATABASE_URL", clean_db)
    a, _ = _split(tmp_path)
    loader.load_paths([a], clean_db)
    assert _rows(clean_db, "SELECT count(*) FROM event_features") == [(0,)]
    assert main(["load", str(a)]) == 0
    assert "derived: 8 pairs refreshed" in capsys.readouterr().out
    assert _rows(clean_db, "SELECT count(*) FROM event_features") == \
        _rows(clean_db, "SELECT count(*) FROM new_resistance_events")


def test_without_overlap_no_pair_is_refreshed_before_every_file_is_committed(
        clean_db, tmp_path, monkeypatch):
    """Ingest(overlap=False), the landing run's order (issue 16, section 4): each file holds
    one instrument, so with overlap the first file's pairs would be refreshed while the second
    file loads; without, every refresh finds every file's rows committed."""
    from sr_platform.core import ingest, loader

    files = write_event_files(tmp_path, years=0.1, instruments=2, seed=12, event_rate=0.5)
    expected = {str(f): loader.file_pairs(f) for f in files}
    total = sum(len(pd.read_csv(f)) for f in files)
    seen: list[int] = []
    refresh = ingest.refresh_pair

    def counting(url, pair_load, conns=None, derive=True):
        with psycopg.connect(db.libpq_url(url)) as conn:  # what a reader sees at that moment
            seen.append(conn.execute("SELECT count(*) FROM new_resistance_events").fetchone()[0])
        return refresh(url, pair_load, conns, derive)

    monkeypatch.setattr(ingest, "refresh_pair", counting)
    reports = ingest.Ingest(clean_db, files, expected, overlap=False).run()
    assert len(reports) == 8
    assert seen == [total] * 8
    assert _rows(clean_db, "SELECT count(*) FROM event_features") == [(total,)]
