"""Retention against a real PostgreSQL: exact boundaries, the cascade, dry run, the archive."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from sr_platform.core import db, loader, retention
from sr_platform.core.features import refresh_features

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
EVENTS_CUT = datetime(2024, 6, 1, tzinfo=UTC)  # 2 years
FEATURES_CUT = datetime(2021, 6, 1, tzinfo=UTC)  # 5 years
SECOND = timedelta(seconds=1)
PAIR = ("RET_T", "H1")


def _write_events(path: Path, stamps: list[datetime]) -> Path:
    rows = [{
        "event_creation_date": ts.isoformat().replace("+00:00", "Z"),
        "granularity": PAIR[1], "instrument": PAIR[0],
        "event_price_level": f"{1.1 + i / 1000:.6f}", "atr_at_event": "0.001500",
        "volume_at_event": "" if i % 2 else "12.50",
        "new_resistance_negative_rebound": "-0.000750",
        "new_resistance_negative_rebound_in_atr": "-0.500000",
    } for i, ts in enumerate(stamps)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


STAMPS = [FEATURES_CUT - SECOND, FEATURES_CUT, FEATURES_CUT + SECOND,
          EVENTS_CUT - SECOND, EVENTS_CUT, EVENTS_CUT + SECOND]


@pytest.fixture
def loaded(clean_db, tmp_path):
    loader.load_file(_write_events(tmp_path / "events.csv", STAMPS), clean_db)
    refresh_features(clean_db, PAIR)
    with psycopg.connect(db.libpq_url(clean_db), autocommit=True) as conn:
        conn.execute("DELETE FROM load_log WHERE finished_at < %s", (AS_OF,))
        conn.execute("DELETE FROM rejected_events")
        for ts in (AS_OF - timedelta(days=365) - SECOND, AS_OF - timedelta(days=365)):
            conn.execute(
                "INSERT INTO rejected_events (source, source_sha256, line_number, raw_record, "
                "reasons, rejected_at) VALUES ('old.csv', repeat('a', 64), %s, '{}', '{x}', %s)",
                (int(ts.timestamp()) % 100000, ts))
        for ts in (AS_OF - timedelta(days=730) - SECOND, AS_OF - timedelta(days=730)):
            conn.execute(
                "INSERT INTO load_log (source, source_sha256, rows_read, rows_loaded, "
                "rows_duplicate, rows_rejected, started_at, finished_at) "
                "VALUES ('old.csv', repeat('b', 64), 0, 0, 0, 0, %s, %s)", (ts, ts))
    return clean_db


def _stamps(url: str, table: str) -> list[datetime]:
    with psycopg.connect(db.libpq_url(url)) as conn:
        return [r[0] for r in conn.execute(
            f"SELECT event_creation_date FROM {table} WHERE instrument = %s ORDER BY 1",
            (PAIR[0],))]


def test_policy_boundaries_are_calendar_years():
    cut = retention.Policy().cutoffs(AS_OF)
    assert cut[retention.EVENTS] == EVENTS_CUT
    assert cut[retention.FEATURES] == FEATURES_CUT
    assert cut["rejected_events"] == datetime(2025, 6, 1, tzinfo=UTC)
    assert cut["load_log"] == datetime(2024, 6, 1, tzinfo=UTC)


def test_dry_run_reports_and_changes_nothing(loaded):
    before = {t: _stamps(loaded, t) for t in (retention.EVENTS, retention.LEVELS,
                                               retention.FEATURES)}
    report = retention.prune(loaded, as_of=AS_OF, dry_run=True)
    assert report.rows == {retention.EVENTS: 4, retention.LEVELS: 4, retention.FEATURES: 1,
                           "rejected_events": 1, "load_log": 1}
    assert {(lp.table, lp.partition, lp.rows) for lp in report.leaves} >= {
        (retention.EVENTS, "new_resistance_events_h1_ret_t", 4),
        (retention.LEVELS, "support_and_resistance_master_h1_ret_t", 4),
        (retention.FEATURES, "event_features_h1_ret_t", 1)}
    after = {t: _stamps(loaded, t) for t in before}
    assert after == before


def test_prune_removes_exactly_what_the_policy_says(loaded):
    report = retention.prune(loaded, as_of=AS_OF, batch_rows=2)  # several batches per leaf
    assert report.rows == {retention.EVENTS: 4, retention.LEVELS: 4, retention.FEATURES: 1,
                           "rejected_events": 1, "load_log": 1}
    assert _stamps(loaded, retention.EVENTS) == [EVENTS_CUT, EVENTS_CUT + SECOND]
    assert _stamps(loaded, retention.LEVELS) == [EVENTS_CUT, EVENTS_CUT + SECOND]
    assert _stamps(loaded, retention.FEATURES) == STAMPS[1:]
    assert report.oldest[retention.EVENTS] == EVENTS_CUT
    assert report.oldest[retention.FEATURES] == FEATURES_CUT
    with psycopg.connect(db.libpq_url(loaded)) as conn:
        orphans = conn.execute(
            "SELECT count(*) FROM support_and_resistance_master l WHERE NOT EXISTS (SELECT 1 "
            "FROM new_resistance_events e WHERE (e.instrument, e.granularity, "
            "e.event_creation_date, e.original_event_id) = (l.instrument, l.granularity, "
            "l.event_creation_date, l.original_event_id))").fetchone()[0]
        assert orphans == 0
        assert conn.execute("SELECT min(rejected_at) FROM rejected_events").fetchone()[0] \
            == AS_OF - timedelta(days=365)
    # rerunning is a no-op
    again = retention.prune(loaded, as_of=AS_OF)
    assert sum(again.rows.values()) == 0


def test_archive_round_trip_reloads_the_pruned_events(loaded, tmp_path):
    with psycopg.connect(db.libpq_url(loaded)) as conn:
        old = conn.execute(
            "SELECT original_event_id, event_creation_date, event_price_level, volume_at_event, "
            "day_of_week, hour_of_day FROM new_resistance_events WHERE instrument = %s AND "
            "event_creation_date < %s ORDER BY 2", (PAIR[0], EVENTS_CUT)).fetchall()
    assert len(old) == 4
    report = retention.prune(loaded, as_of=AS_OF, archive_dir=tmp_path / "archive")
    # <archive>/<as-of stamp>/<table>/<leaf>/<run id>-<batch no>.parquet
    events_archive = [p for p in report.archived if p.parent.parent.name == retention.EVENTS]
    assert len(events_archive) == 1
    assert events_archive[0].parent.name == "new_resistance_events_h1_ret_t"
    assert events_archive[0].parent.parent.parent.name == "20260601T000000Z"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}-00001\.parquet", events_archive[0].name)
    assert pd.read_parquet(events_archive[0]).shape == (4, len(retention.EVENT_FILE_COLUMNS))
    features_archive = [p for p in report.archived if p.parent.parent.name == retention.FEATURES]
    assert len(features_archive) == 1 and len(pd.read_parquet(features_archive[0])) == 1
    result = loader.load_file(events_archive[0], loaded)
    assert (result.loaded, result.rejected, result.duplicates) == (4, 0, 0)
    with psycopg.connect(db.libpq_url(loaded)) as conn:
        back = conn.execute(
            "SELECT original_event_id, event_creation_date, event_price_level, volume_at_event, "
            "day_of_week, hour_of_day FROM new_resistance_events WHERE instrument = %s AND "
            "event_creation_date < %s ORDER BY 2", (PAIR[0], EVENTS_CUT)).fetchall()
    assert back == old


def test_policy_comes_from_settings(monkeypatch):
    monkeypatch.setenv("SR_PLATFORM_RETENTION_EVENTS_YEARS", "3")
    monkeypatch.setenv("SR_PLATFORM_RETENTION_REJECTED_DAYS", "30")
    policy = retention.Policy.from_env()
    assert policy == retention.Policy(events_years=3, features_years=5, rejected_days=30,
                                      load_log_days=730)
    assert policy.cutoffs(AS_OF)[retention.EVENTS] == datetime(2023, 6, 1, tzinfo=UTC)
