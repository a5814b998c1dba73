"""The bulk loader (sr_platform.core.loader) against a real PostgreSQL: every kind of bad input
is quarantined with its exact reason and physical line while the good rows load exactly once
(one event row and one level row each), reloads change nothing, files that are not event files
touch nothing, the CLI's exit codes, and the hard cases: kill -9 mid-load then rerun, two
loaders racing on overlapping files, and per-pair slices of a mixed file."""

import os
import random
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import psycopg
import pytest

from sr_platform.core import db, loader, validate
from sr_platform.core.event_files import REQUIRED, EventFileError
from sr_platform.core.generate import write_event_files

from .helpers import (
    HOSTILE,
    INSTRUMENT_RE,
    NO_OFFSET,
    TABLES,
    assert_loaded_once,
    assert_loaded_once_and_derived,
    cli,
    columns_of,
    concat_csv,
    counts,
    csv_text,
    events_snapshot,
    fetch,
    full_snapshot,
    leaves,
    levels_snapshot,
    load_log_rows,
    load_with_one_bad_row,
    rejections,
    row,
    run_cli,
    scalar,
    sha256,
    truncate,
    write_csv,
)

# ---------------------------------------------------------------------------------------------
# one test per kind of bad row: the two good rows load once, the bad one is quarantined on
# line 3 with exactly these reasons (and these rule names in the result)

BAD_ROWS = {
    # id: (overrides of a valid 13:00 UTC Wednesday row, reasons, rule names)
    "granularity-M5": ({"granularity": "M5"},
                       ["granularity: 'M5' is not one of W, D, H4, H1"],
                       ["granularity in W/D/H4/H1"]),
    "granularity-lowercase": ({"granularity": "h1"},
                              ["granularity: 'h1' is not one of W, D, H4, H1"],
                              ["granularity in W/D/H4/H1"]),
    "price-zero": ({"event_price_level": "0"}, ["event_price_level: 0 must be > 0"],
                   ["event_price_level > 0"]),
    "price-negative": ({"event_price_level": "-1.5"}, ["event_price_level: -1.5 must be > 0"],
                       ["event_price_level > 0"]),
    "price-rounds-to-zero": ({"event_price_level": "0.0000004"},
                             ["event_price_level: 0.0000004 must be > 0"],
                             ["event_price_level > 0"]),
    "atr-zero": ({"atr_at_event": "0.000000"}, ["atr_at_event: 0.000000 must be > 0"],
                 ["atr_at_event > 0"]),
    "atr-negative": ({"atr_at_event": "-0.0015"}, ["atr_at_event: -0.0015 must be > 0"],
                     ["atr_at_event > 0"]),
    "rebound-positive": ({"new_resistance_negative_rebound": "0.0001"},
                         ["new_resistance_negative_rebound: 0.0001 must be <= 0"],
                         ["new_resistance_negative_rebound <= 0"]),
    "day-of-week-7": ({"day_of_week": "7"}, ["day_of_week: 7 is not in 0..6"],
                      ["day_of_week in 0..6"]),
    "day-of-week-negative": ({"day_of_week": "-1"}, ["day_of_week: -1 is not in 0..6"],
                             ["day_of_week in 0..6"]),
    "day-of-week-not-integer": ({"day_of_week": "2.5"}, ["day_of_week: '2.5' is not an integer"],
                                ["day_of_week integer"]),
    "hour-24": ({"hour_of_day": "24"}, ["hour_of_day: 24 is not in 0..23"],
                ["hour_of_day in 0..23"]),
    "hour-negative": ({"hour_of_day": "-1"}, ["hour_of_day: -1 is not in 0..23"],
                      ["hour_of_day in 0..23"]),
    "day-of-week-mismatch": ({"day_of_week": "3"},
                             ["day_of_week: 3 does not match event_creation_date "
                              "(Wednesday UTC = 2; Monday=0)"],
                             ["day_of_week matches timestamp"]),
    "hour-mismatch": ({"hour_of_day": "12"},
                      ["hour_of_day: 12 does not match event_creation_date (UTC hour 13)"],
                      ["hour_of_day matches timestamp"]),
    "instrument-lowercase": ({"instrument": "eur_usd"},
                             [f"instrument: 'eur_usd' does not match {INSTRUMENT_RE}"],
                             ["instrument format"]),
    "instrument-11-chars": ({"instrument": "EURUSD_LONG"},
                            [f"instrument: 'EURUSD_LONG' does not match {INSTRUMENT_RE}"],
                            ["instrument format"]),
    "instrument-leading-underscore": ({"instrument": "_EUR"},
                                      [f"instrument: '_EUR' does not match {INSTRUMENT_RE}"],
                                      ["instrument format"]),
    "instrument-slash": ({"instrument": "EUR/USD"},
                         [f"instrument: 'EUR/USD' does not match {INSTRUMENT_RE}"],
                         ["instrument format"]),
    "missing-instrument": ({"instrument": ""}, ["instrument: required"],
                           ["instrument required"]),
    "missing-granularity": ({"granularity": ""}, ["granularity: required"],
                            ["granularity required"]),
    "missing-timestamp": ({"event_creation_date": ""}, ["event_creation_date: required"],
                          ["event_creation_date required"]),
    "missing-price": ({"event_price_level": ""}, ["event_price_level: required"],
                      ["event_price_level required"]),
    "missing-atr": ({"atr_at_event": "  "}, ["atr_at_event: required"],
                    ["atr_at_event required"]),
    "missing-rebound": ({"new_resistance_negative_rebound": ""},
                        ["new_resistance_negative_rebound: required"],
                        ["new_resistance_negative_rebound required"]),
    "missing-rebound-in-atr": ({"new_resistance_negative_rebound_in_atr": ""},
                               ["new_resistance_negative_rebound_in_atr: required"],
                               ["new_resistance_negative_rebound_in_atr required"]),
    "timestamp-february-30": ({"event_creation_date": "2026-02-30T10:00:00Z"},
                              ["event_creation_date: '2026-02-30T10:00:00Z' is not a valid "
                               "ISO 8601 timestamp"],
                              ["event_creation_date parses"]),
    "timestamp-hour-25": ({"event_creation_date": "2026-03-04T25:00:00+01:00"},
                          ["event_creation_date: '2026-03-04T25:00:00+01:00' is not a valid "
                           "ISO 8601 timestamp"],
                          ["event_creation_date parses"]),
    "timestamp-words-with-offset": ({"event_creation_date": "soon+01:00"},
                                    ["event_creation_date: 'soon+01:00' is not a valid "
                                     "ISO 8601 timestamp"],
                                    ["event_creation_date parses"]),
    "naive-timestamp": ({"event_creation_date": "2026-03-04T13:00:00"},
                        [f"event_creation_date: '2026-03-04T13:00:00' {NO_OFFSET}"],
                        ["event_creation_date has an offset"]),
    "price-inf": ({"event_price_level": "inf"}, ["event_price_level: 'inf' is not a finite number"],
                  ["event_price_level finite number"]),
    "atr-nan": ({"atr_at_event": "nan"}, ["atr_at_event: 'nan' is not a finite number"],
                ["atr_at_event finite number"]),
    "rebound-in-atr-abc": ({"new_resistance_negative_rebound_in_atr": "abc"},
                           ["new_resistance_negative_rebound_in_atr: 'abc' is not a finite "
                            "number"],
                           ["new_resistance_negative_rebound_in_atr finite number"]),
    "rebound-minus-infinity": ({"new_resistance_negative_rebound": "-Infinity"},
                               ["new_resistance_negative_rebound: '-Infinity' is not a finite "
                                "number"],
                               ["new_resistance_negative_rebound finite number"]),
    "volume-nan": ({"volume_at_event": "NaN"}, ["volume_at_event: 'NaN' is not a finite number"],
                   ["volume_at_event finite number"]),
    "price-too-large-for-decimal": ({"event_price_level": "1000000000000"},
                                    ["event_price_level: 1000000000000 is out of range for "
                                     "its DECIMAL"],
                                    ["event_price_level fits DECIMAL"]),
    "rebound-in-atr-too-large-for-decimal": (
        {"new_resistance_negative_rebound_in_atr": "-1e12"},
        ["new_resistance_negative_rebound_in_atr: -1e12 is out of range for its DECIMAL"],
        ["new_resistance_negative_rebound_in_atr fits DECIMAL"]),
    "volume-too-large-for-decimal": ({"volume_at_event": "10000000000000000"},
                                     ["volume_at_event: 10000000000000000 is out of range for "
                                      "its DECIMAL"],
                                     ["volume_at_event fits DECIMAL"]),
    "event-id-not-uuid": ({"original_event_id": "not-a-uuid"},
                          ["original_event_id: 'not-a-uuid' is not a UUID"],
                          ["original_event_id is a UUID"]),
    "event-type-with-space": ({"event_type": "new resistance"},
                              ["event_type: 'new resistance' does not match "
                               "^[A-Za-z0-9_]{1,20}$"],
                              ["event_type format"]),
}


@pytest.mark.parametrize("overrides,reasons,rules", BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_bad_row_is_quarantined_and_good_rows_load(clean_db, tmp_path, overrides, reasons,
                                                   rules):
    bad = row(13, **overrides)
    result, path = load_with_one_bad_row(clean_db, tmp_path, bad)

    assert (result.rows_read, result.loaded, result.duplicates, result.rejected) == (3, 2, 0, 1)
    assert result.reasons == Counter(rules)
    assert result.error is None
    assert result.pairs == {("EUR_USD", "H1"): 2}
    assert_loaded_once(clean_db, 2)
    assert [r[0] for r in fetch(clean_db, "SELECT hour_of_day FROM new_resistance_events "
                                          "ORDER BY hour_of_day")] == [10, 11]
    columns = columns_of([bad])
    quarantined = fetch(clean_db, "SELECT source, source_sha256, line_number, raw_record, "
                                  "reasons FROM rejected_events")
    assert quarantined == [(str(path.resolve()), sha256(path), 3,
                            {c: bad.get(c, "") for c in columns}, reasons)]
    assert load_log_rows(clean_db, path) == [(None, None, 3, 2, 0, 1)]


def test_hostile_instrument_is_rejected_and_creates_nothing(clean_db, tmp_path):
    before = leaves(clean_db)
    bad = row(13, instrument=HOSTILE)
    result, path = load_with_one_bad_row(clean_db, tmp_path, bad)

    assert (result.loaded, result.rejected) == (2, 1)
    assert rejections(clean_db) == [
        (3, [f"instrument: \"{HOSTILE}\" does not match {INSTRUMENT_RE}"])]
    assert scalar(clean_db, "SELECT raw_record->>'instrument' FROM rejected_events") == HOSTILE
    assert scalar(clean_db, "SELECT to_regclass('public.new_resistance_events') IS NOT NULL")
    assert_loaded_once(clean_db, 2)
    # the new leaf tables are the valid pair's (clean_db leaves none); nothing (table or
    # index) is named after the hostile value
    tables = {r[0] for r in fetch(clean_db, "SELECT relname::text FROM pg_class "
                                            "WHERE relispartition AND relkind = 'r'")}
    assert (leaves(clean_db) - before) & tables == {f"{t}_h1_eur_usd" for t in TABLES}
    assert not [n for n in leaves(clean_db) if re.search(r"drop|[^a-z0-9_]", n)]


def test_naive_timestamp_rejected_by_default(clean_db, tmp_path):
    path = write_csv(tmp_path / "naive.csv", [
        row(event_creation_date="2026-03-04T13:00:00"), row(14)])
    result = loader.load_file(path, clean_db)
    assert (result.loaded, result.rejected) == (1, 1)
    assert rejections(clean_db) == [
        (2, [f"event_creation_date: '2026-03-04T13:00:00' {NO_OFFSET}"])]
    assert_loaded_once(clean_db, 1)


@pytest.mark.parametrize("tz,expected", [
    ("UTC", [datetime(2026, 3, 4, 0, 30, tzinfo=UTC), datetime(2026, 3, 4, 13, 0, tzinfo=UTC),
             datetime(2026, 7, 1, 13, 0, tzinfo=UTC), datetime(2026, 7, 2, 9, 0, tzinfo=UTC)]),
    # CET (+01) in March, CEST (+02) in July; rows with an offset are not shifted
    ("Europe/Berlin", [datetime(2026, 3, 3, 23, 30, tzinfo=UTC),
                       datetime(2026, 3, 4, 12, 0, tzinfo=UTC),
                       datetime(2026, 7, 1, 11, 0, tzinfo=UTC),
                       datetime(2026, 7, 2, 9, 0, tzinfo=UTC)]),
])
def test_naive_timestamps_with_assume_tz(clean_db, tmp_path, tz, expected):
    path = write_csv(tmp_path / "naive.csv", [
        row(event_creation_date="2026-03-04T13:00:00"),
        row(event_creation_date="2026-07-01T13:00:00", event_price_level="1.1"),
        row(event_creation_date="2026-03-04T00:30:00", event_price_level="1.2"),
        row(event_creation_date="2026-07-02T09:00:00Z", event_price_level="1.3"),
    ])
    result = loader.load_file(path, clean_db, assume_tz=tz)
    assert (result.loaded, result.rejected) == (4, 0)
    assert_loaded_once(clean_db, 4)
    got = fetch(clean_db, "SELECT event_creation_date, day_of_week, hour_of_day "
                          "FROM new_resistance_events ORDER BY event_creation_date")
    assert [g[0] for g in got] == expected
    # day and hour are those of the UTC instant
    assert [(g[1], g[2]) for g in got] == [(e.weekday(), e.hour) for e in expected]
    assert load_log_rows(clean_db, path) == [(None, None, 4, 4, 0, 0)]


def test_given_day_and_hour_checked_against_utc_not_local_time(clean_db, tmp_path):
    # 00:30 Berlin on Wednesday 4 March is 23:30 UTC on Tuesday: day 1, hour 23
    path = write_csv(tmp_path / "naive.csv", [
        row(event_creation_date="2026-03-04T00:30:00", day_of_week="1", hour_of_day="23"),
        row(event_creation_date="2026-03-04T00:45:00", day_of_week="2", hour_of_day="0"),
    ])
    result = loader.load_file(path, clean_db, assume_tz="Europe/Berlin")
    assert (result.loaded, result.rejected) == (1, 1)
    assert rejections(clean_db) == [(3, [
        "day_of_week: 2 does not match event_creation_date (Tuesday UTC = 1; Monday=0)",
        "hour_of_day: 0 does not match event_creation_date (UTC hour 23)"])]


def test_many_problems_in_one_row_lists_every_reason(clean_db, tmp_path):
    bad = {
        "original_event_id": "xyz", "event_type": "new-resistance",
        "event_creation_date": "2026-03-04T13:00:00", "granularity": "M1",
        "instrument": "eur/usd", "event_price_level": "-1", "atr_at_event": "abc",
        "volume_at_event": "1e17", "new_resistance_negative_rebound": "0.5",
        "new_resistance_negative_rebound_in_atr": "", "day_of_week": "9", "hour_of_day": "x",
    }
    result, _ = load_with_one_bad_row(clean_db, tmp_path, bad)
    assert (result.loaded, result.rejected) == (2, 1)
    assert rejections(clean_db) == [(3, [
        f"instrument: 'eur/usd' does not match {INSTRUMENT_RE}",
        "granularity: 'M1' is not one of W, D, H4, H1",
        "event_type: 'new-resistance' does not match ^[A-Za-z0-9_]{1,20}$",
        f"event_creation_date: '2026-03-04T13:00:00' {NO_OFFSET}",
        "atr_at_event: 'abc' is not a finite number",
        "volume_at_event: 1e17 is out of range for its DECIMAL",
        "new_resistance_negative_rebound_in_atr: required",
        "event_price_level: -1 must be > 0",
        "new_resistance_negative_rebound: 0.5 must be <= 0",
        "day_of_week: 9 is not in 0..6",
        "hour_of_day: 'x' is not an integer",
        "original_event_id: 'xyz' is not a UUID",
    ])]
    assert sum(result.reasons.values()) == 12
    assert_loaded_once(clean_db, 2)


def test_duplicate_event_id_in_file_keeps_the_first(clean_db, tmp_path):
    a = "6f1c2a52-0d5e-4c53-9a57-1e2c3d4b5a69"
    b = "0b8e4d7c-2f1a-4e3b-8c5d-6a7b8c9d0e1f"
    path = write_csv(tmp_path / "dups.csv", [
        row(10, original_event_id=a),
        row(11, original_event_id=b),
        row(12, original_event_id=a),
        row(13, original_event_id=a.upper().replace("-", "")),  # the same UUID, spelled apart
    ])
    result = loader.load_file(path, clean_db)
    assert (result.rows_read, result.loaded, result.rejected) == (4, 2, 2)
    assert result.reasons == Counter({"original_event_id unique in file": 2})
    assert rejections(clean_db) == [
        (4, [f"original_event_id: duplicate of line 2 ({a})"]),
        (5, [f"original_event_id: duplicate of line 2 ({a})"]),
    ]
    assert fetch(clean_db, "SELECT original_event_id::text, hour_of_day "
                           "FROM new_resistance_events ORDER BY hour_of_day") == [(a, 10), (b, 11)]
    assert_loaded_once(clean_db, 2)


def test_identical_rows_without_id_get_one_derived_id(clean_db, tmp_path):
    path = write_csv(tmp_path / "same.csv", [row(13), row(14), row(13)])
    result = loader.load_file(path, clean_db)
    derived = validate.derive_event_id("EUR_USD", "H1", "2026-03-04T13:00:00.000000Z", "1.084210")
    assert (result.loaded, result.rejected) == (2, 1)
    assert rejections(clean_db) == [(4, [f"original_event_id: duplicate of line 2 ({derived})"])]
    assert scalar(clean_db, "SELECT original_event_id::text FROM new_resistance_events "
                            "WHERE hour_of_day = 13") == derived
    assert_loaded_once(clean_db, 2)


def test_row_with_too_many_fields_is_quarantined(clean_db, tmp_path):
    text = csv_text([row(10), row(11), row(12)])
    lines = text.splitlines()
    lines[2] += ",surplus"  # line 3 of the file
    path = tmp_path / "ragged.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = loader.load_file(path, clean_db)
    assert (result.rows_read, result.loaded, result.rejected) == (3, 2, 1)
    assert result.reasons == Counter({"csv field count": 1})
    assert fetch(clean_db, "SELECT line_number, reasons, raw_record FROM rejected_events") == [
        (3, ["csv: expected 7 fields, found 8"],
         {"fields": list(row(11).values()) + ["surplus"]})]
    assert_loaded_once(clean_db, 2)


def test_day_and_hour_derived_when_absent_or_empty_and_defaults(clean_db, tmp_path):
    path = write_csv(tmp_path / "derive.csv", [
        row(10, day_of_week="", hour_of_day=""),
        row(11, day_of_week="2", hour_of_day="11", event_type="custom_type",
            volume_at_event="1234.5"),
        row(12, day_of_week="2.0", hour_of_day=" 12 "),
        # the largest values DECIMAL(18,6) / (18,2) hold load
        row(13, event_price_level="999999999999.999", volume_at_event="999999999999999.99"),
    ])
    result = loader.load_file(path, clean_db)
    assert (result.loaded, result.rejected) == (4, 0)
    assert_loaded_once(clean_db, 4)
    assert fetch(clean_db, "SELECT hour_of_day, day_of_week, event_type, volume_at_event, "
                           "event_price_level FROM new_resistance_events ORDER BY 1") == [
        (10, 2, "new_resistance", None, Decimal("1.084210")),
        (11, 2, "custom_type", Decimal("1234.50"), Decimal("1.084210")),
        (12, 2, "new_resistance", None, Decimal("1.084210")),
        (13, 2, "new_resistance", Decimal("999999999999999.99"), Decimal("999999999999.999000")),
    ]
    derived = validate.derive_event_id("EUR_USD", "H1", "2026-03-04T10:00:00.000000Z", "1.084210")
    assert scalar(clean_db, "SELECT original_event_id::text FROM new_resistance_events "
                            "WHERE hour_of_day = 10") == derived


def test_timestamps_with_different_offsets_load_in_utc(clean_db, tmp_path):
    path = write_csv(tmp_path / "offsets.csv", [
        row(event_creation_date="2026-03-04T14:00:00+01:00", event_price_level="1.1"),
        row(event_creation_date="2026-03-04T20:30:00-05:00", event_price_level="1.2",
            day_of_week="3"),  # Thursday in UTC (Wednesday in New York)
        row(event_creation_date="2026-03-08T23:00:00+05:30", event_price_level="1.3"),
        row(event_creation_date="2026-03-09T00:15:00+0100", event_price_level="1.4"),
        row(event_creation_date="2026-03-09 10:00:00.250-02", event_price_level="1.5"),
        row(event_creation_date="2026-03-04T13:00:00Z", event_price_level="1.6"),
        row(event_creation_date="2026-03-04T21:00:00-05:00", event_price_level="1.7",
            day_of_week="2"),  # local Wednesday, UTC Thursday: refused
    ])
    result = loader.load_file(path, clean_db)
    assert (result.loaded, result.rejected) == (6, 1)
    assert rejections(clean_db) == [(8, [
        "day_of_week: 2 does not match event_creation_date (Thursday UTC = 3; Monday=0)"])]
    got = fetch(clean_db, "SELECT event_price_level, event_creation_date, day_of_week, "
                          "hour_of_day FROM new_resistance_events ORDER BY event_price_level")
    expected = [
        datetime(2026, 3, 4, 13, 0, tzinfo=UTC),
        datetime(2026, 3, 5, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 8, 17, 30, tzinfo=UTC),
        datetime(2026, 3, 8, 23, 15, tzinfo=UTC),
        datetime(2026, 3, 9, 12, 0, 0, 250000, tzinfo=UTC),
        datetime(2026, 3, 4, 13, 0, tzinfo=UTC),
    ]
    assert [g[1] for g in got] == expected
    assert [(g[2], g[3]) for g in got] == [(e.weekday(), e.hour) for e in expected]
    assert_loaded_once(clean_db, 6)


def test_reload_changes_nothing(clean_db, tmp_path):
    path = write_csv(tmp_path / "events.csv", [
        row(10), row(11, granularity="M5"), row(12), row(13, event_price_level="0"), row(14)])
    first = loader.load_file(path, clean_db)
    assert (first.rows_read, first.loaded, first.duplicates, first.rejected) == (5, 3, 0, 2)
    before = full_snapshot(clean_db)
    assert counts(clean_db) == {"new_resistance_events": 3, "support_and_resistance_master": 3,
                                "rejected_events": 2}

    second = loader.load_file(path, clean_db)
    assert (second.rows_read, second.loaded, second.duplicates, second.rejected) == (5, 0, 3, 2)
    assert second.pairs == {}
    third = loader.load_paths([path], clean_db)[0]
    assert (third.loaded, third.duplicates, third.rejected) == (0, 3, 2)

    assert full_snapshot(clean_db) == before
    assert_loaded_once(clean_db, 3)
    assert load_log_rows(clean_db, path) == [
        (None, None, 5, 3, 0, 2), (None, None, 5, 0, 3, 2), (None, None, 5, 0, 3, 2)]


def test_new_pairs_get_partitions(clean_db, tmp_path):
    assert not {f"{t}_w_zzt_new" for t in TABLES} & leaves(clean_db)
    path = write_csv(tmp_path / "new.csv", [
        row(13, instrument="ZZT_NEW", granularity="W"),
        row(13, instrument="ZZT_NEW", granularity="D"),
        row(14, instrument="ZZT_NEW", granularity="D"),
    ])
    result = loader.load_file(path, clean_db)
    assert result.pairs == {("ZZT_NEW", "D"): 2, ("ZZT_NEW", "W"): 1}
    assert {f"{t}_{g}_zzt_new" for t in TABLES for g in ("w", "d")} <= leaves(clean_db)
    assert fetch(clean_db, "SELECT tableoid::regclass::text, count(*) FROM new_resistance_events "
                           "GROUP BY 1 ORDER BY 1") == [
        ("new_resistance_events_d_zzt_new", 2), ("new_resistance_events_w_zzt_new", 1)]
    assert fetch(clean_db, "SELECT tableoid::regclass::text, count(*) "
                           "FROM support_and_resistance_master GROUP BY 1 ORDER BY 1") == [
        ("support_and_resistance_master_d_zzt_new", 2),
        ("support_and_resistance_master_w_zzt_new", 1)]
    assert_loaded_once(clean_db, 3)


def test_header_only_csv_loads_nothing(clean_db, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text(",".join(REQUIRED) + "\n", encoding="utf-8")
    result = loader.load_file(path, clean_db)
    assert (result.rows_read, result.loaded, result.duplicates, result.rejected) == (0, 0, 0, 0)
    assert result.error is None and result.pairs == {}
    assert counts(clean_db) == {"new_resistance_events": 0, "support_and_resistance_master": 0,
                                "rejected_events": 0}
    assert load_log_rows(clean_db, path) == [(None, None, 0, 0, 0, 0)]


# ---------------------------------------------------------------------------------------------
# Parquet


def test_parquet_loads_the_same_as_csv(clean_db, tmp_path):
    kw = {"years": 0.05, "instruments": 2, "event_rate": 1.0}
    csvs = write_event_files(tmp_path / "csv", fmt="csv", **kw)
    pqs = write_event_files(tmp_path / "pq", fmt="parquet", **kw)
    n = sum(len(pd.read_parquet(p)) for p in pqs)
    assert n > 100

    csv_results = loader.load_paths(csvs, clean_db)
    assert sum(r.loaded for r in csv_results) == n
    from_csv = (events_snapshot(clean_db), levels_snapshot(clean_db))
    assert_loaded_once(clean_db, n)
    truncate(clean_db)

    pq_results = loader.load_paths(pqs, clean_db)
    assert [(r.rows_read, r.loaded, r.rejected) for r in pq_results] == [
        (r.rows_read, r.loaded, r.rejected) for r in csv_results]
    assert (events_snapshot(clean_db), levels_snapshot(clean_db)) == from_csv
    # the same events, so loading the CSVs on top adds nothing
    assert sum(r.duplicates for r in loader.load_paths(csvs, clean_db)) == n
    assert_loaded_once(clean_db, n)


def test_parquet_bad_row_and_zoned_timestamps(clean_db, tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame({
        "event_creation_date": pd.to_datetime(
            ["2026-03-04 08:00", "2026-03-04 09:00", "2026-03-04 21:30"]).tz_localize(
            "America/New_York"),
        "granularity": ["H1", "H1", "H4"],
        "instrument": ["EUR_USD", "EUR_USD", "EUR_USD"],
        "event_price_level": [1.1, 0.0, 1.2],
        "atr_at_event": [0.001, 0.001, 0.002],
        "volume_at_event": [10.5, None, None],
        "new_resistance_negative_rebound": [-0.0001, 0.0, 0.0],
        "new_resistance_negative_rebound_in_atr": [-0.1, 0.0, 0.0],
    }).to_parquet(path, index=False)
    result = loader.load_file(path, clean_db)
    assert (result.rows_read, result.loaded, result.rejected) == (3, 2, 1)
    # Parquet has no lines: line_number is the 1-based row number
    assert rejections(clean_db) == [(2, ["event_price_level: 0.0 must be > 0"])]
    assert fetch(clean_db, "SELECT event_creation_date, granularity, day_of_week, hour_of_day, "
                           "volume_at_event FROM new_resistance_events ORDER BY 1") == [
        (datetime(2026, 3, 4, 13, 0, tzinfo=UTC), "H1", 2, 13, Decimal("10.50")),
        (datetime(2026, 3, 5, 2, 30, tzinfo=UTC), "H4", 3, 2, None),
    ]
    assert_loaded_once(clean_db, 2)


# ---------------------------------------------------------------------------------------------
# files that are not event files: EventFileError naming the file, the database untouched

rng = random.Random(20260304)
NOT_EVENT_FILES = {
    "empty": ("empty.csv", b"", "the file is empty"),
    "newline-only": ("blank.csv", b"\n", "no header row"),
    "binary-junk": ("junk.csv", rng.randbytes(8192), "not UTF-8 CSV text"),
    "latin1-not-utf8": ("latin1.csv", ",".join(REQUIRED).encode() + b"\n\xe9t\xe9,\xff\n",
                        "not UTF-8 CSV text"),
    "missing-columns": ("missing.csv", b"instrument,granularity\nEUR_USD,H1\n",
                        "missing columns event_creation_date, event_price_level, atr_at_event, "
                        "new_resistance_negative_rebound, new_resistance_negative_rebound_in_atr"),
    "repeated-column": ("repeated.csv",
                        (",".join([*REQUIRED, "instrument"]) + "\n").encode(),
                        "repeated columns instrument"),
    "parquet-junk": ("junk.parquet", b"PAR1 this is not parquet at all",
                     "unreadable Parquet"),
    "missing-file": ("does-not-exist.csv", None, "no such file"),
}


@pytest.mark.parametrize("name,content,problem", NOT_EVENT_FILES.values(),
                         ids=NOT_EVENT_FILES.keys())
def test_not_an_event_file_raises_and_touches_nothing(clean_db, tmp_path, name, content, problem):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    log_before = scalar(clean_db, "SELECT count(*) FROM load_log")
    leaves_before = leaves(clean_db)

    with pytest.raises(EventFileError) as exc:
        loader.load_file(path, clean_db)
    assert str(path) in str(exc.value)
    assert "not an event file" in str(exc.value)
    assert problem in str(exc.value)

    assert counts(clean_db) == {"new_resistance_events": 0, "support_and_resistance_master": 0,
                                "rejected_events": 0}
    assert scalar(clean_db, "SELECT count(*) FROM load_log") == log_before
    assert leaves(clean_db) == leaves_before


def test_repeated_column_message_is_exact(clean_db, tmp_path):
    path = tmp_path / "repeated.csv"
    path.write_text(",".join([*REQUIRED, "instrument", " atr_at_event "]) + "\n",
                    encoding="utf-8")
    with pytest.raises(EventFileError) as exc:
        loader.load_file(path, clean_db)
    assert str(exc.value) == (f"{path}: not an event file: repeated columns atr_at_event, "
                              "instrument")


def test_load_paths_reports_a_non_event_file_and_loads_the_others(clean_db, tmp_path):
    one = write_csv(tmp_path / "a.csv", [row(10), row(11)])
    junk = tmp_path / "b.csv"
    junk.write_bytes(b"\x00\x01\x02 junk")
    two = write_csv(tmp_path / "c.csv", [row(12), row(13, granularity="X")])
    results = loader.load_paths([one, junk, two], clean_db)

    assert [r.path for r in results] == [one, junk, two]
    assert [r.error is None for r in results] == [True, False, True]
    assert str(junk) in results[1].error and "not an event file" in results[1].error
    assert [(r.loaded, r.rejected) for r in results] == [(2, 0), (0, 0), (1, 1)]
    assert_loaded_once(clean_db, 3)
    assert load_log_rows(clean_db, junk) == []
    assert rejections(clean_db) == [(3, ["granularity: 'X' is not one of W, D, H4, H1"])]


# ---------------------------------------------------------------------------------------------
# the CLI


def test_cli_load_clean_exits_0(clean_db, tmp_path):
    path = write_csv(tmp_path / "clean.csv", [row(10), row(11)])
    proc = run_cli(clean_db, "load", str(path))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^file\s+read\s+loaded\s+duplicate\s+rejected\s+rows/s$", proc.stdout,
                     re.M)
    assert re.search(r"^clean\.csv\s+2\s+2\s+0\s+0\s", proc.stdout, re.M)
    assert re.search(r"^total\s+2\s+2\s+0\s+0\s.*\(1 files, ", proc.stdout, re.M)
    assert "top reasons" not in proc.stdout
    assert_loaded_once_and_derived(clean_db, 2)

    again = run_cli(clean_db, "load", str(path))
    assert again.returncode == 0, again.stderr
    assert re.search(r"^clean\.csv\s+2\s+0\s+2\s+0\s", again.stdout, re.M)
    assert_loaded_once_and_derived(clean_db, 2)


def test_cli_load_with_rejects_exits_2(clean_db, tmp_path):
    path = write_csv(tmp_path / "some_bad.csv", [row(10), row(11, granularity="M5"), row(12)])
    proc = run_cli(clean_db, "load", str(path))
    assert proc.returncode == 2, proc.stderr
    assert re.search(r"^some_bad\.csv\s+3\s+2\s+0\s+1\s", proc.stdout, re.M)
    assert "top reasons for rejected rows (all in table rejected_events):" in proc.stdout
    assert re.search(r"^\s+1\s+granularity in W/D/H4/H1$", proc.stdout, re.M)
    assert_loaded_once_and_derived(clean_db, 2)
    assert rejections(clean_db) == [(3, ["granularity: 'M5' is not one of W, D, H4, H1"])]


def test_cli_load_non_event_file_exits_3_and_loads_the_rest(clean_db, tmp_path):
    good = write_csv(tmp_path / "good.csv", [row(10)])
    junk = tmp_path / "junk.csv"
    junk.write_bytes(b"")
    proc = run_cli(clean_db, "load", str(good), str(junk))
    assert proc.returncode == 3, proc.stderr
    assert re.search(r"^junk\.csv\s+not loaded: .*junk\.csv: not an event file: the file is empty",
                     proc.stdout, re.M)
    assert re.search(r"^good\.csv\s+1\s+1\s+0\s+0\s", proc.stdout, re.M)
    assert_loaded_once_and_derived(clean_db, 1)


def test_cli_load_folder_and_assume_tz(clean_db, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_csv(folder / "a.csv", [row(event_creation_date="2026-03-04T00:30:00")])
    write_csv(folder / "b.csv", [row(13)])
    (folder / "notes.txt").write_text("not an event file, and not picked up from a folder")
    refused = run_cli(clean_db, "load", str(folder))
    assert refused.returncode == 2, refused.stderr
    assert_loaded_once_and_derived(clean_db, 1)

    proc = run_cli(clean_db, "load", "--assume-tz", "Europe/Berlin", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^total\s+2\s+1\s+1\s+0\s.*\(2 files, ", proc.stdout, re.M)
    assert fetch(clean_db, "SELECT event_creation_date FROM new_resistance_events "
                           "ORDER BY 1") == [(datetime(2026, 3, 3, 23, 30, tzinfo=UTC),),
                                             (datetime(2026, 3, 4, 13, 0, tzinfo=UTC),)]


def test_cli_load_empty_folder_exits_1(clean_db, tmp_path):
    proc = run_cli(clean_db, "load", str(tmp_path))
    assert proc.returncode == 1
    assert "no event files found" in proc.stderr


# ---------------------------------------------------------------------------------------------
# the hard ones


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None,
             interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


@pytest.mark.slow  # loads a large file twice (killed, then whole): 20-31 s measured
def test_kill_9_mid_load_leaves_nothing_and_rerun_loads_once(clean_db, tmp_path):
    files = write_event_files(tmp_path / "gen", years=2, instruments=10, event_rate=1.0)
    path = tmp_path / "big.csv"
    n = concat_csv(files, path)
    assert n > 100_000
    env = dict(os.environ, SR_PLATFORM_DATABASE_URL=clean_db)
    dbname = scalar(clean_db, "SELECT current_database()")

    with psycopg.connect(db.libpq_url(clean_db), autocommit=True) as watch, \
            open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cli() + ["load", str(path)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            def copying():
                # the load transaction is writing: a COPY runs and holds a transaction id
                return watch.execute(
                    "SELECT pid, query FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid() AND state = 'active' "
                    "AND query LIKE 'COPY \"new_resistance_events_%%' "
                    "AND backend_xid IS NOT NULL",
                    (dbname,)).fetchone()

            backend, query = wait_for(copying, 600, "the loader's COPY", proc)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(60)
        assert proc.returncode == -signal.SIGKILL
        assert query.startswith('COPY "new_resistance_events_')  # straight into a leaf
        # the server notices the dead client and rolls back
        wait_for(lambda: not watch.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                           (backend,)).fetchone(), 120, "the backend to end")

    assert counts(clean_db) == {"new_resistance_events": 0, "support_and_resistance_master": 0,
                                "rejected_events": 0}
    assert load_log_rows(clean_db, path) == []

    rerun = run_cli(clean_db, "load", str(path))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_loaded_once_and_derived(clean_db, n)
    assert load_log_rows(clean_db, path) == [(None, None, n, n, 0, 0)]

    third = run_cli(clean_db, "load", str(path))
    assert third.returncode == 0, third.stdout + third.stderr
    assert_loaded_once_and_derived(clean_db, n)
    assert load_log_rows(clean_db, path)[1:] == [(None, None, n, 0, n, 0)]
    assert scalar(clean_db, "SELECT count(*) FROM rejected_events") == 0


def test_two_loaders_on_overlapping_files(clean_db, tmp_path):
    files = write_event_files(tmp_path / "gen", years=1, instruments=3, event_rate=1.0)
    names = {"EUR_USD": "RACE_A", "GBP_USD": "RACE_B", "USD_JPY": "RACE_C"}  # new partitions
    header, lines = None, []
    for p in files:
        text = p.read_text(encoding="utf-8").splitlines()
        header = text[0]
        for line in text[1:]:
            for old, new in names.items():
                line = line.replace(f",{old},", f",{new},")
            lines.append(line)
    random.Random(11).shuffle(lines)  # every pair in both files
    total = len(lines)
    size = 2 * total // 3  # A = rows [0, size), B = rows [total - size, total)
    overlap = 2 * size - total
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("\n".join([header, *lines[:size]]) + "\n", encoding="utf-8")
    b.write_text("\n".join([header, *lines[total - size:]]) + "\n", encoding="utf-8")
    assert overlap > 5_000

    env = dict(os.environ, SR_PLATFORM_DATABASE_URL=clean_db)
    procs = [subprocess.Popen(cli() + ["load", str(p)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for p in (a, b)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    assert_loaded_once_and_derived(clean_db, total)
    logs = load_log_rows(clean_db, a) + load_log_rows(clean_db, b)
    assert [r[2] for r in logs] == [size, size]
    assert sum(r[3] for r in logs) == total  # loaded between them: the union
    assert sum(r[4] for r in logs) == overlap  # skipped between them: the overlap
    assert {f"{t}_{g}_{n.lower()}" for t in TABLES for g in ("w", "d", "h4", "h1")
            for n in names.values()} <= leaves(clean_db)


def test_pair_slices_add_up_to_the_whole_file(clean_db, tmp_path):
    files = write_event_files(tmp_path / "gen", years=0.05, instruments=2, event_rate=1.0)
    path = tmp_path / "mixed.csv"
    n_generated = concat_csv(files, path)
    with path.open("a", encoding="utf-8") as fh:  # two bad rows: one in the slice, one in none
        fh.write("new_resistance,2026-11-02T10:00:00Z,H1,EUR_USD,0,0.001,,0,0,0,10\n")
        fh.write("new_resistance,2026-11-02T10:00:00Z,H1,eur,1.1,0.001,,0,0,0,10\n")
    bad_lines = [n_generated + 2, n_generated + 3]
    pairs = loader.file_pairs(path)
    assert len(pairs) == 8 and ("EUR_USD", "H1") in pairs
    per_pair = dict(Counter(zip(*[pd.read_csv(path, dtype=str)[c][:n_generated]
                                  for c in ("instrument", "granularity")], strict=True)))

    eur_h1 = loader.load_file(path, clean_db, pair=("EUR_USD", "H1"))
    assert eur_h1.pairs == {("EUR_USD", "H1"): per_pair["EUR_USD", "H1"]}
    assert (eur_h1.loaded, eur_h1.rejected) == (per_pair["EUR_USD", "H1"], 1)
    assert eur_h1.rows_read == per_pair["EUR_USD", "H1"] + 1
    assert eur_h1.reasons == Counter({"event_price_level > 0": 1})
    assert fetch(clean_db, "SELECT instrument, granularity, count(*) FROM new_resistance_events "
                           "GROUP BY 1, 2") == [("EUR_USD", "H1", per_pair["EUR_USD", "H1"])]
    assert_loaded_once(clean_db, per_pair["EUR_USD", "H1"])
    assert [r[0] for r in rejections(clean_db)] == bad_lines  # every bad row of the file

    others = [loader.load_file(path, clean_db, pair=p)
              for p in sorted(pairs - {("EUR_USD", "H1")})]
    assert [(r.loaded, r.rejected) for r in others] == [
        (per_pair[p], 0) for p in sorted(pairs - {("EUR_USD", "H1")})]
    total = sum(per_pair.values())
    assert eur_h1.loaded + sum(r.loaded for r in others) == total == n_generated
    assert_loaded_once(clean_db, total)
    assert [r[0] for r in rejections(clean_db)] == bad_lines
    log = load_log_rows(clean_db, path)
    assert sorted((r[0], r[1]) for r in log) == sorted(pairs)
    assert sum(r[3] for r in log) == total

    whole_after = loader.load_file(path, clean_db)
    assert (whole_after.loaded, whole_after.duplicates, whole_after.rejected) == (0, total, 2)
    sliced = (events_snapshot(clean_db), levels_snapshot(clean_db), rejections(clean_db))

    truncate(clean_db)
    whole = loader.load_file(path, clean_db)
    assert (whole.loaded, whole.rejected) == (total, 2)
    assert whole.pairs == per_pair
    assert (events_snapshot(clean_db), levels_snapshot(clean_db), rejections(clean_db)) == sliced


# ---------------------------------------------------------------------------------------------
# regressions: loader bugs found while writing these tests, fixed since


def test_date_only_timestamp_is_naive(clean_db, tmp_path):
    path = write_csv(tmp_path / "dates.csv", [row(event_creation_date="2026-03-04"), row(14)])
    result = loader.load_file(path, clean_db)
    assert rejections(clean_db) == [(2, [f"event_creation_date: '2026-03-04' {NO_OFFSET}"])]
    assert (result.loaded, result.rejected) == (1, 1)


def test_unparseable_timestamp_without_offset_says_it_does_not_parse(clean_db, tmp_path):
    result, _ = load_with_one_bad_row(clean_db, tmp_path,
                                      row(event_creation_date="not a date"))
    assert result.rejected == 1
    assert ("event_creation_date: 'not a date' is not a valid ISO 8601 timestamp"
            in rejections(clean_db)[0][1])


def test_lowercase_z_is_utc(clean_db, tmp_path):
    path = write_csv(tmp_path / "z.csv", [row(event_creation_date="2026-03-04T13:00:00z")])
    result = loader.load_file(path, clean_db)
    assert (result.loaded, result.rejected) == (1, 0)


def test_line_numbers_after_a_multiline_quoted_field(clean_db, tmp_path):
    path = tmp_path / "multiline.csv"
    path.write_text(",".join(REQUIRED) + "\n"
                    '2026-03-04T10:00:00Z,H1,"EUR\nUSD",1.1,0.001,0,0\n'  # lines 2-3
                    "2026-03-04T11:00:00Z,H1,EUR_USD,-1,0.001,0,0\n"  # line 4
                    "2026-03-04T12:00:00Z,H1,EUR_USD,1.1,0.001,0,0\n", encoding="utf-8")
    result = loader.load_file(path, clean_db)
    assert (result.loaded, result.rejected) == (1, 2)
    assert [r[0] for r in rejections(clean_db)][-1] == 4


def test_bom_file_with_a_ragged_row(clean_db, tmp_path):
    lines = csv_text([row(10), row(11), row(12)]).splitlines()
    lines[2] += ",surplus"
    path = tmp_path / "bom.csv"
    path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    result = loader.load_file(path, clean_db)
    assert (result.loaded, result.rejected) == (2, 1)


def test_parquet_naive_timestamp_in_dst_gap(clean_db, tmp_path):
    path = tmp_path / "dst.parquet"
    pd.DataFrame({
        "event_creation_date": pd.to_datetime(["2026-03-29 02:30:00", "2026-03-29 05:00:00"]),
        "granularity": ["H1", "H1"], "instrument": ["EUR_USD", "EUR_USD"],
        "event_price_level": [1.1, 1.2], "atr_at_event": [0.001, 0.001],
        "new_resistance_negative_rebound": [0.0, 0.0],
        "new_resistance_negative_rebound_in_atr": [0.0, 0.0],
    }).to_parquet(path, index=False)
    result = loader.load_file(path, clean_db, assume_tz="Europe/Berlin")
    assert (result.loaded, result.rejected) == (1, 1)


def test_largest_decimal_values_load(clean_db, tmp_path):
    path = write_csv(tmp_path / "edge.csv", [
        row(10, volume_at_event="9999999999999999.99"),
        row(11, event_price_level="999999999999.999999")])
    result = loader.load_file(path, clean_db)
    assert (result.loaded, result.rejected) == (2, 0)


def test_unknown_columns_are_ignored_and_reported(clean_db, tmp_path):
    path = tmp_path / "extra.csv"
    path.write_bytes(csv_text([row(13, day_of_week="2")], [*REQUIRED, "colour"]).encode())
    result = loader.load_file(path, clean_db)
    assert (result.loaded, result.rejected, result.ignored_columns) == (1, 0, ["colour"])
    out = subprocess.run(["sr-platform", "load", str(path)], capture_output=True, text=True,
                         env=dict(os.environ, SR_PLATFORM_DATABASE_URL=clean_db))
    assert out.returncode == 0, out.stderr
    assert "note: extra.csv: ignored columns not in the contract: colour" in out.stdout
