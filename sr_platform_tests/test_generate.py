"""The synthetic event generator (sr_platform.core.generate): shape, determinism, every row valid
for new_resistance_events, FX bar calendar, realistic levels and ATRs, and the files it writes.
No database needed."""

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sr_platform.core import generate
from sr_platform.core.generate import (
    DEFAULT_END,
    EVENT_COLUMNS,
    INSTRUMENTS,
    generate_events,
    write_event_files,
)

EXPECTED_COLUMNS = [
    "event_type", "event_creation_date", "granularity", "instrument", "event_price_level",
    "atr_at_event", "volume_at_event", "new_resistance_negative_rebound",
    "new_resistance_negative_rebound_in_atr", "day_of_week", "hour_of_day",
]


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return generate_events()


@pytest.fixture(scope="module")
def all_bars() -> pd.DataFrame:
    """event_rate=1: every bar of every granularity is an event."""
    return generate_events(event_rate=1.0)


def trading_hours(start: datetime, end: datetime) -> list[datetime]:
    """Hour starts in [start, end) outside Fri 22:00-Sun 22:00 UTC, by plain iteration."""
    t = start.replace(minute=0, second=0, microsecond=0)
    if t < start:
        t += timedelta(hours=1)
    out = []
    while t < end:
        wd, h = t.weekday(), t.hour
        if not ((wd == 4 and h >= 22) or wd == 5 or (wd == 6 and h < 22)):
            out.append(t)
        t += timedelta(hours=1)
    return out


def test_columns_and_types(events):
    assert EVENT_COLUMNS == EXPECTED_COLUMNS
    assert list(events.columns) == EXPECTED_COLUMNS
    assert "original_event_id" not in events.columns
    assert str(events["event_creation_date"].dt.tz) == "UTC"
    assert set(events["event_type"]) == {"new_resistance"}
    assert set(events["granularity"]) == {"W", "D", "H4", "H1"}
    assert events["instrument"].tolist()[:1] == ["EUR_USD"]
    assert list(events["instrument"].unique()) == [i.name for i in INSTRUMENTS[:28]]


def test_instrument_list():
    names = [i.name for i in INSTRUMENTS]
    assert len(names) >= 28
    assert len(set(names)) == len(names)
    assert names[:12] == ["EUR_USD", "GBP_USD", "USD_JPY", "AUD_USD", "USD_CHF", "USD_CAD",
                          "NZD_USD", "EUR_GBP", "EUR_JPY", "GBP_JPY", "XAU_USD", "XAG_USD"]
    assert all(re.fullmatch(r"[A-Z0-9][A-Z0-9_]{0,9}", n) for n in names)
    assert set(generate_events(instruments=3)["instrument"]) == {"EUR_USD", "GBP_USD", "USD_JPY"}
    with pytest.raises(ValueError, match=f"between 1 and {len(INSTRUMENTS)}"):
        generate_events(instruments=len(INSTRUMENTS) + 1)


def test_determinism(events):
    pd.testing.assert_frame_equal(generate_events(), events)
    other = generate_events(seed=1)
    assert not other.equals(events)
    assert not np.array_equal(other["event_price_level"].to_numpy()[:100],
                              events["event_price_level"].to_numpy()[:100])
    # Each instrument has its own random stream: asking for fewer changes nothing for them.
    first = generate_events(instruments=2)
    pd.testing.assert_frame_equal(
        first, events[events["instrument"].isin(["EUR_USD", "GBP_USD"])].reset_index(drop=True))


def test_span_and_default_end(events):
    assert DEFAULT_END == datetime(2026, 11, 20, tzinfo=UTC)
    ts = events["event_creation_date"]
    assert ts.max() < pd.Timestamp(DEFAULT_END)
    assert ts.min() >= pd.Timestamp(DEFAULT_END) - pd.Timedelta(days=366)
    assert ts.min() < pd.Timestamp(DEFAULT_END) - pd.Timedelta(days=360)
    later = generate_events(instruments=1, end=datetime(2027, 1, 1, tzinfo=UTC))
    assert later["event_creation_date"].max() > ts.max()
    # A naive end is UTC.
    pd.testing.assert_frame_equal(generate_events(instruments=1, end=datetime(2026, 11, 20)),
                                  generate_events(instruments=1))


def test_every_row_satisfies_the_table_constraints(all_bars, events):
    for df in (events, all_bars):
        assert df[[c for c in EXPECTED_COLUMNS if c != "volume_at_event"]].notna().all().all()
        assert (df["event_price_level"] > 0).all()
        assert (df["atr_at_event"] > 0).all()
        assert (df["new_resistance_negative_rebound"] <= 0).all()
        rebound = df["new_resistance_negative_rebound"].to_numpy()
        assert not np.signbit(rebound[rebound == 0]).any()  # no -0.0
        assert df["day_of_week"].between(0, 6).all()
        assert df["hour_of_day"].between(0, 23).all()
        assert df["instrument"].str.fullmatch(r"[A-Z0-9][A-Z0-9_]{0,9}").all()
        # Fits DECIMAL(18,6) / DECIMAL(18,2) exactly.
        for c in ("event_price_level", "atr_at_event", "new_resistance_negative_rebound",
                  "new_resistance_negative_rebound_in_atr"):
            assert (df[c] == df[c].round(6)).all(), c
            assert (df[c].abs() < 1e12).all(), c
        vol = df["volume_at_event"].dropna()
        assert (vol == vol.round(2)).all() and (vol > 0).all() and (vol < 1e16).all()


def test_rebound_in_atr_is_rebound_over_atr(all_bars):
    ratio = all_bars["new_resistance_negative_rebound"] / all_bars["atr_at_event"]
    in_atr = all_bars["new_resistance_negative_rebound_in_atr"]
    assert (in_atr == ratio.round(6)).all()
    assert ((in_atr - ratio).abs() <= 1e-6 * np.maximum(1.0, ratio.abs())).all()
    assert in_atr.min() >= -2.0 and in_atr.max() == 0.0


def test_distributions(all_bars, events):
    in_atr = events["new_resistance_negative_rebound_in_atr"]
    zero = (events["new_resistance_negative_rebound"] == 0).mean()
    assert 0.01 < zero < 0.06  # occasionally exactly 0
    assert -0.8 < in_atr.median() < -0.3  # mostly a fraction of an ATR, skewed
    assert in_atr.mean() < in_atr.median()  # long tail towards big pull-backs
    missing = events["volume_at_event"].isna().mean()
    assert 0.01 < missing < 0.03
    share = len(events) / len(all_bars)
    assert 0.18 < share < 0.22


def test_bar_alignment(all_bars):
    ts = all_bars["event_creation_date"]
    assert (ts.dt.minute == 0).all() and (ts.dt.second == 0).all()
    g = all_bars["granularity"]
    assert ts[g == "H4"].dt.hour.isin([0, 4, 8, 12, 16, 20]).all()
    assert (ts[g == "D"].dt.hour == 0).all()
    assert ts[g == "D"].dt.day_of_week.isin([0, 1, 2, 3, 4]).all()
    assert (ts[g == "W"].dt.hour == 0).all() and (ts[g == "W"].dt.day_of_week == 0).all()


def test_no_weekend_bars(all_bars):
    ts = all_bars["event_creation_date"]
    dow, hour = ts.dt.day_of_week, ts.dt.hour
    closed = ((dow == 4) & (hour >= 22)) | (dow == 5) | ((dow == 6) & (hour < 22))
    assert not closed.any()
    coarse = all_bars["granularity"].isin(["D", "W"])
    assert not dow[coarse].isin([5, 6]).any()


def test_event_rate_one_is_the_full_bar_calendar(all_bars):
    """Every trading hour once per instrument, independently computed, and the coarser bars
    are exactly its aligned subsets."""
    stop = DEFAULT_END
    hours = trading_hours(stop - timedelta(days=365.25), stop)
    eur = all_bars[all_bars["instrument"] == "EUR_USD"]
    for gran, keep in [
        ("H1", lambda t: True),
        ("H4", lambda t: t.hour % 4 == 0),
        ("D", lambda t: t.hour == 0 and t.weekday() <= 4),
        ("W", lambda t: t.hour == 0 and t.weekday() == 0),
    ]:
        got = eur.loc[eur["granularity"] == gran, "event_creation_date"].tolist()
        assert got == [pd.Timestamp(t) for t in hours if keep(t)], gran
    counts = all_bars.groupby(["instrument", "granularity"]).size().unstack()
    assert (counts.nunique() == 1).all()  # same calendar for every instrument
    assert counts.iloc[0].to_dict() == {"D": 261, "H1": 6270, "H4": 1567, "W": 52}


def test_rows_sorted_and_unique(all_bars):
    key = ["instrument", "granularity", "event_creation_date"]
    assert not all_bars.duplicated(key).any()
    order = {name: i for i, name in enumerate(i.name for i in INSTRUMENTS)}
    inst = all_bars["instrument"].map(order).to_numpy()
    ts = all_bars["event_creation_date"].dt.tz_localize(None).to_numpy()
    assert (np.diff(inst) >= 0).all()
    same = np.diff(inst) == 0
    assert (np.diff(ts)[same] >= np.timedelta64(0)).all()


def test_day_and_hour_match_the_timestamp(events):
    ts = events["event_creation_date"]
    assert (events["day_of_week"] == ts.dt.day_of_week).all()
    assert (events["hour_of_day"] == ts.dt.hour).all()
    row = events.iloc[0]
    py = row["event_creation_date"].to_pydatetime()
    assert (row["day_of_week"], row["hour_of_day"]) == (py.weekday(), py.hour)


def test_realistic_levels(events):
    med = events.groupby("instrument")["event_price_level"].median()
    assert 0.9 < med["EUR_USD"] < 1.4
    assert 100 < med["USD_JPY"] < 200
    assert 1500 < med["XAU_USD"] < 3000
    assert 1.0 < med["GBP_USD"] < 1.6
    assert 15 < med["XAG_USD"] < 40
    for inst in INSTRUMENTS[:28]:
        assert 0.7 * inst.level < med[inst.name] < 1.3 * inst.level, inst.name
    # Daily ATR a realistic share of price: ~0.3-1.5% for FX, more allowed for metals.
    d = events[events["granularity"] == "D"]
    atr_pct = (d["atr_at_event"] / d["event_price_level"]).groupby(d["instrument"]).median()
    assert (atr_pct > 0.002).all() and (atr_pct < 0.03).all()
    assert 0.003 < atr_pct["EUR_USD"] < 0.012


def test_atr_grows_with_bar_length(all_bars):
    med = all_bars.groupby(["instrument", "granularity"])["atr_at_event"].median().unstack()
    assert ((med["H1"] < med["H4"]) & (med["H4"] < med["D"]) & (med["D"] < med["W"])).all()
    # Roughly sqrt of bar length: H4/H1 ~ 2, D/H1 ~ 4.9, W/D ~ 2.2.
    assert ((med["H4"] / med["H1"]).between(1.5, 3.0)).all()
    assert ((med["D"] / med["H1"]).between(3.0, 8.0)).all()
    assert ((med["W"] / med["D"]).between(1.5, 3.5)).all()


def test_granularities_share_one_price_path(all_bars):
    """A coarse bar's high is the max of the H1 highs it spans (H4 bars are never shifted)."""
    eur = all_bars[all_bars["instrument"] == "EUR_USD"].set_index("event_creation_date")
    h1 = eur.loc[eur["granularity"] == "H1", "event_price_level"]
    h4 = eur.loc[eur["granularity"] == "H4", "event_price_level"]
    bucket = h1.index.floor("4h")
    sunday = h1.index.day_of_week == 6
    bucket = bucket.where(~sunday, h1.index.ceil("D"))
    expected = h1.groupby(bucket).max()
    pd.testing.assert_series_equal(h4, expected.reindex(h4.index), check_names=False)


def test_events_favour_new_highs(all_bars, events):
    eur = all_bars[(all_bars["instrument"] == "EUR_USD") & (all_bars["granularity"] == "H1")]
    high = eur["event_price_level"]
    new_high = (high > high.rolling(20, min_periods=1).max().shift(1)).to_numpy()
    picked = eur["event_creation_date"].isin(
        events.loc[(events["instrument"] == "EUR_USD") & (events["granularity"] == "H1"),
                   "event_creation_date"]).to_numpy()
    assert new_high[picked].mean() > 2 * new_high.mean()


def test_zero_rate_and_bad_arguments():
    assert generate_events(instruments=2, event_rate=0.0).empty
    with pytest.raises(ValueError, match="event_rate"):
        generate_events(event_rate=1.5)
    with pytest.raises(ValueError, match="years"):
        generate_events(years=0)
    with pytest.raises(ValueError, match="fmt"):
        write_event_files(Path("/nonexistent"), fmt="json")
    with pytest.raises(ValueError, match="files_per_instrument"):
        write_event_files(Path("/nonexistent"), files_per_instrument=0)


def test_short_span_has_no_empty_granularity_crash():
    df = generate_events(years=0.001, instruments=1, event_rate=1.0)
    assert set(df["granularity"]) <= {"H1", "H4", "D", "W"} and len(df) > 0


def read_csvs(paths: list[Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p, dtype={"volume_at_event": "float64"}) for p in paths]
    df = pd.concat(frames, ignore_index=True)
    df["event_creation_date"] = pd.to_datetime(df["event_creation_date"], utc=True)
    return df


def test_csv_round_trip(tmp_path, events):
    out = tmp_path / "new" / "dir"
    paths = write_event_files(out, instruments=3)
    assert paths == sorted(paths)
    assert [p.name for p in paths] == ["events_EUR_USD_001.csv", "events_GBP_USD_001.csv",
                                       "events_USD_JPY_001.csv"]
    expected = events[events["instrument"].isin(["EUR_USD", "GBP_USD", "USD_JPY"])]
    expected = expected.sort_values("instrument", kind="stable").reset_index(drop=True)

    text = paths[0].read_text()
    lines = text.splitlines()
    assert lines[0] == ",".join(EXPECTED_COLUMNS)
    assert "e-0" not in text and "-0.000000," not in text  # fixed-point, no negative zero
    ts_field = [line.split(",")[1] for line in lines[1:]]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", f) for f in ts_field)
    vol_field = [line.split(",")[6] for line in lines[1:]]
    eur = expected[expected["instrument"] == "EUR_USD"]
    assert vol_field.count("") == eur["volume_at_event"].isna().sum() > 0

    back = read_csvs(paths)
    assert len(back) == len(expected)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)


def test_parquet_round_trip(tmp_path, events):
    paths = write_event_files(tmp_path, instruments=2, fmt="parquet")
    assert [p.name for p in paths] == ["events_EUR_USD_001.parquet",
                                       "events_GBP_USD_001.parquet"]
    back = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    assert str(back["event_creation_date"].dt.tz) == "UTC"
    assert list(back.columns) == EXPECTED_COLUMNS
    expected = events[events["instrument"].isin(["EUR_USD", "GBP_USD"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    assert back["volume_at_event"].isna().sum() == expected["volume_at_event"].isna().sum() > 0


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_files_per_instrument_split(tmp_path, events, fmt):
    paths = write_event_files(tmp_path, instruments=3, fmt=fmt, files_per_instrument=4)
    assert len(paths) == 12 and paths == sorted(paths)
    assert paths[0].name == f"events_EUR_USD_001.{fmt}"
    assert paths[3].name == f"events_EUR_USD_004.{fmt}"
    read = read_csvs if fmt == "csv" else (
        lambda ps: pd.concat([pd.read_parquet(p) for p in ps], ignore_index=True))
    for inst in ("EUR_USD", "GBP_USD", "USD_JPY"):
        parts = [read([p]) for p in paths if p.name.startswith(f"events_{inst}_")]
        assert len(parts) == 4
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1  # near-equal consecutive chunks
        for a, b in zip(parts, parts[1:], strict=False):
            assert a["event_creation_date"].max() <= b["event_creation_date"].min()
        for p in parts:
            assert p["event_creation_date"].is_monotonic_increasing
            assert set(p["instrument"]) == {inst}
        joined = pd.concat(parts, ignore_index=True)
        expected = events[events["instrument"] == inst].reset_index(drop=True)
        pd.testing.assert_frame_equal(joined, expected, check_dtype=False)  # all, once


def test_more_parts_than_rows_writes_header_only_files(tmp_path):
    rows = generate_events(years=0.001, instruments=1, event_rate=1.0)
    assert 0 < len(rows) < 12
    paths = write_event_files(tmp_path, years=0.001, instruments=1, event_rate=1.0,
                              files_per_instrument=12)
    assert len(paths) == 12 and paths[-1].name == "events_EUR_USD_012.csv"
    assert len(read_csvs(paths)) == len(rows)
    # Parts hold 0 or 1 rows here; the empty ones are header-only files.
    header_only = [p for p in paths if p.read_text().strip() == ",".join(EXPECTED_COLUMNS)]
    assert len(header_only) == 12 - len(rows)


def test_core_module_has_no_dagster_or_cli_imports():
    src = Path(generate.__file__).read_text()
    assert not re.search(r"^\s*(import|from)\s+(dagster|argparse|sr_platform\.cli)", src, re.M)
    code = ("import sys, sr_platform.core.generate; "
            "print(any(m.split('.')[0] in ('dagster', 'argparse') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_benchmark_size():
    # the load benchmark's data set: every bar of 5 years of 28 instruments (speed: bench/)
    big = generate_events(years=5, instruments=28, event_rate=1.0)
    assert len(big) == 1_139_376
