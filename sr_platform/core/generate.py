"""Synthetic "new resistance" events: a realistic year (or more) of detections for FX instruments.

Used for the "simulate 1 year of data" scenario and for load benchmarks. Per instrument one H1
price path is simulated (a geometric random walk with intraday volatility seasonality and weekly
volatility regimes, pinned back to a realistic level at both ends) and H4/D/W bars are aggregated
from it, so prices, ATRs and volumes agree across granularities. A bar becomes an event mostly
when it makes a new high against the previous bars; the rest of each row is drawn around that.

Everything is deterministic for a given seed, and instrument i's rows do not depend on how many
instruments were asked for (each instrument has its own random stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from . import keys

# an event file's columns: every event column but the id (the loader derives it)
EVENT_COLUMNS: list[str] = [c for c in keys.EVENT_COLUMNS if c != "original_event_id"]

EVENT_TYPE = "new_resistance"
DEFAULT_END = datetime(2026, 11, 20, tzinfo=UTC)
GRANULARITIES = ("W", "D", "H4", "H1")  # coarse first: the row order at equal timestamps

ATR_PERIOD = 14  # Wilder's ATR period, the usual charting default
HIGH_LOOKBACK = 20  # a "new high" is judged against this many previous bars
VOLUME_MISSING_SHARE = 0.02  # volume_at_event is nullable; feeds do drop it now and then
ZERO_REBOUND_SHARE = 0.03  # price left the level without pulling back at all


@dataclass(frozen=True)
class Instrument:
    name: str
    level: float  # typical price
    daily_vol: float  # stdev of daily log returns
    hourly_ticks: float  # typical tick volume of an average H1 bar


# Ordered roughly by liquidity: `instruments=N` takes the first N.
INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("EUR_USD", 1.10, 0.0050, 4000),
    Instrument("GBP_USD", 1.27, 0.0060, 3500),
    Instrument("USD_JPY", 150.0, 0.0060, 3800),
    Instrument("AUD_USD", 0.66, 0.0070, 2500),
    Instrument("USD_CHF", 0.88, 0.0055, 2000),
    Instrument("USD_CAD", 1.36, 0.0045, 2200),
    Instrument("NZD_USD", 0.60, 0.0070, 1500),
    Instrument("EUR_GBP", 0.86, 0.0040, 1800),
    Instrument("EUR_JPY", 163.0, 0.0065, 2800),
    Instrument("GBP_JPY", 190.0, 0.0075, 3000),
    Instrument("XAU_USD", 2000.0, 0.0100, 6000),
    Instrument("XAG_USD", 24.0, 0.0180, 3000),
    Instrument("EUR_CHF", 0.95, 0.0045, 1400),
    Instrument("EUR_AUD", 1.65, 0.0060, 1600),
    Instrument("EUR_CAD", 1.48, 0.0050, 1300),
    Instrument("EUR_NZD", 1.78, 0.0060, 1200),
    Instrument("GBP_CHF", 1.12, 0.0060, 1200),
    Instrument("GBP_AUD", 1.92, 0.0065, 1300),
    Instrument("GBP_CAD", 1.72, 0.0055, 1100),
    Instrument("AUD_JPY", 99.0, 0.0080, 1800),
    Instrument("CAD_JPY", 110.0, 0.0065, 1100),
    Instrument("CHF_JPY", 170.0, 0.0060, 1000),
    Instrument("NZD_JPY", 90.0, 0.0080, 1000),
    Instrument("AUD_NZD", 1.09, 0.0045, 1000),
    Instrument("AUD_CAD", 0.90, 0.0055, 900),
    Instrument("USD_SGD", 1.34, 0.0030, 700),
    Instrument("USD_MXN", 17.1, 0.0090, 1500),
    Instrument("XPT_USD", 950.0, 0.0150, 800),
    Instrument("USD_SEK", 10.5, 0.0070, 900),
    Instrument("USD_NOK", 10.6, 0.0075, 900),
)

# Relative volatility/activity by UTC hour: quiet Asia, busy London and the London-NY overlap,
# a lull around the 21-22 UTC rollover.
_HOUR_ACTIVITY = np.array(
    [0.8, 0.8, 0.8, 0.7, 0.7, 0.8, 0.9, 1.2, 1.4, 1.3, 1.2, 1.2,
     1.4, 1.6, 1.6, 1.4, 1.2, 0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.6])
_HOUR_ACTIVITY = _HOUR_ACTIVITY / np.sqrt(np.mean(_HOUR_ACTIVITY**2))  # keep daily vol as given


def _to_utc(ts: datetime) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _h1_grid(years: float, end: datetime | None) -> pd.DatetimeIndex:
    """Hour starts in [end - years, end) when FX trades: not Fri 22:00 to Sun 22:00 UTC."""
    stop = _to_utc(end or DEFAULT_END).floor("h")
    start = (stop - pd.Timedelta(days=365.25 * years)).ceil("h")
    # ns resolution: the rest of the module does int64 ns arithmetic on .asi8.
    hours = pd.date_range(start, stop, freq="h", inclusive="left").as_unit("ns")
    dow, hour = hours.day_of_week, hours.hour
    closed = ((dow == 4) & (hour >= 22)) | (dow == 5) | ((dow == 6) & (hour < 22))
    return hours[~closed]


def _bar_groups(grid: pd.DatetimeIndex, gran: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a coarse granularity: (H1 indices used, offset of each bar's first H1 among them,
    bar open times as int64 ns).

    Bars open on aligned boundaries; the Sunday 22:00-24:00 hours belong to Monday's bars
    (the FX week opens then, and no bar is labelled on a Sunday).
    """
    dow, hour = np.asarray(grid.day_of_week), np.asarray(grid.hour)
    if gran == "H4":
        starts = hour % 4 == 0
    elif gran == "D":
        starts = (hour == 0) & (dow <= 4)
    else:  # W
        starts = (hour == 0) & (dow == 0)
    start_ts = grid.asi8[starts]
    key = np.where(dow == 6, grid.ceil("D").asi8, grid.asi8)
    group = np.searchsorted(start_ts, key, side="right") - 1
    kept = np.flatnonzero(group >= 0)  # hours before the first bar open are not in any bar
    first = np.flatnonzero(np.diff(group[kept], prepend=-1) != 0)
    # Every bar open is itself a trading hour, so each bar has at least one H1.
    return kept, first, start_ts


def _atr(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    prev_close = np.concatenate([close[:1], close[:-1]])
    tr = np.maximum(high - low, np.maximum(np.abs(high - prev_close), np.abs(low - prev_close)))
    if len(tr) == 0:
        return tr
    # Seed the average with the series' median TR: the data starts mid-history (often with a
    # partial first bar), so a cold start would give the first bars' ATRs wildly off.
    seeded = np.concatenate([[np.median(tr)], tr])
    return pd.Series(seeded).ewm(alpha=1.0 / ATR_PERIOD, adjust=False).mean().to_numpy()[1:]


def _h1_bars(inst: Instrument, rng: np.random.Generator, grid: pd.DatetimeIndex
             ) -> dict[str, np.ndarray]:
    """The instrument's H1 bars (close, high, low, volume) over `grid`."""
    n = len(grid)
    hours = np.asarray(grid.hour)
    # Log-price path at hour boundaries (n + 1 points): weekly vol regimes x intraday profile.
    week = (grid.asi8 - grid.asi8[0]) // (7 * 24 * 3600 * 10**9)
    regime = np.exp(rng.normal(0.0, 0.25, int(week[-1]) + 1))[week]
    sigma = inst.daily_vol / np.sqrt(24) * _HOUR_ACTIVITY[hours] * regime
    walk = np.concatenate([[0.0], np.cumsum(sigma * rng.standard_normal(n))])
    # Brownian-bridge pin: both ends at the typical level, so any span stays realistic.
    walk -= np.linspace(0.0, 1.0, n + 1) * walk[-1]
    log_open, log_close = walk[:-1], walk[1:]
    wick = sigma * 0.6
    log_high = np.maximum(log_open, log_close) + wick * np.abs(rng.standard_normal(n))
    log_low = np.minimum(log_open, log_close) - wick * np.abs(rng.standard_normal(n))
    level = inst.level
    return {
        "close": level * np.exp(log_close),
        "high": level * np.exp(log_high), "low": level * np.exp(log_low),
        # Tick volume follows activity and how far price travelled within the hour.
        "volume": inst.hourly_ticks * _HOUR_ACTIVITY[hours] * regime
        * rng.lognormal(0.0, 0.35, n) * (0.5 + (log_high - log_low) / (3 * sigma)),
    }


def _aggregated(h1: dict[str, np.ndarray], kept: np.ndarray, first: np.ndarray
                ) -> dict[str, np.ndarray]:
    """Bars of a coarser granularity from the H1 bars: the `kept` hours, grouped from each
    `first` index."""
    sub = {k: v[kept] for k, v in h1.items()}
    last = np.concatenate([first[1:], [len(kept)]]) - 1
    return {
        "close": sub["close"][last],
        "high": np.maximum.reduceat(sub["high"], first),
        "low": np.minimum.reduceat(sub["low"], first),
        "volume": np.add.reduceat(sub["volume"], first),
    }


def _chosen_bars(bar: dict[str, np.ndarray], atr: np.ndarray, rng: np.random.Generator,
                 event_rate: float) -> np.ndarray:
    """Event choice: rank bars by how far their high clears the previous HIGH_LOOKBACK highs
    (in ATRs, with a bonus for clearing them at all) plus noise, and keep the top
    Binomial(nb, event_rate): new highs first, then near-highs; at rate 1 every bar."""
    nb = len(atr)
    prev_max = (pd.Series(bar["high"]).rolling(HIGH_LOOKBACK, min_periods=1).max()
                .shift(1).to_numpy())
    margin = np.nan_to_num((bar["high"] - prev_max) / atr, nan=0.0)
    score = margin + (margin > 0) + rng.gumbel(0.0, 0.25, nb)
    n_events = rng.binomial(nb, event_rate) if nb else 0
    return np.sort(np.argsort(-score, kind="stable")[:n_events])


def _instrument_events(inst: Instrument, index: int, seed: int, grid: pd.DatetimeIndex,
                       groups: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                       event_rate: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, index])
    h1 = _h1_bars(inst, rng, grid)
    out: dict[str, list[np.ndarray]] = {k: [] for k in
                                        ("ts", "gran", "price", "atr", "volume")}
    for g_code, gran in enumerate(GRANULARITIES):
        if gran == "H1":
            bar, bar_ts = h1, grid.asi8
        else:
            kept, first, bar_ts = groups[gran]
            if len(first) == 0:  # span shorter than one bar of this granularity
                continue
            bar = _aggregated(h1, kept, first)
        atr = _atr(bar["high"], bar["low"], bar["close"])
        chosen = _chosen_bars(bar, atr, rng, event_rate)
        out["ts"].append(bar_ts[chosen])
        out["gran"].append(np.full(len(chosen), g_code, dtype=np.int8))
        out["price"].append(bar["high"][chosen])
        out["atr"].append(atr[chosen])
        out["volume"].append(bar["volume"][chosen])

    res = {k: np.concatenate(v) for k, v in out.items()}
    order = np.lexsort((res["gran"], res["ts"]))
    res = {k: v[order] for k, v in res.items()}
    m = len(order)
    # Pull-backs are right-skewed in ATRs: mostly 0.2-1, sometimes up to 2, a few exactly 0.
    frac = 0.1 + 1.9 * rng.beta(1.5, 4.0, m)
    frac[rng.random(m) < ZERO_REBOUND_SHARE] = 0.0
    res["frac"] = frac
    res["volume"][rng.random(m) < VOLUME_MISSING_SHARE] = np.nan
    return res


def generate_events(years: float = 1.0, instruments: int = 28, seed: int = 0,
                    end: datetime | None = None, event_rate: float = 0.2) -> pd.DataFrame:
    """Synthetic new-resistance events over `years` before `end` (default 2026-11-20 UTC;
    a naive `end` is taken as UTC).

    Returns a DataFrame with EVENT_COLUMNS, sorted by instrument (list order), time, then
    granularity W, D, H4, H1. `event_rate` is the expected share of bars that become events.
    """
    if not years > 0:
        raise ValueError(f"years must be > 0, got {years}")
    if not 1 <= instruments <= len(INSTRUMENTS):
        raise ValueError(f"instruments must be between 1 and {len(INSTRUMENTS)} (the size of "
                         f"the built-in instrument list), got {instruments}")
    if not 0.0 <= event_rate <= 1.0:
        raise ValueError(f"event_rate must be within [0, 1], got {event_rate}")

    grid = _h1_grid(years, end)
    if len(grid) == 0:
        raise ValueError(f"no trading hours in the {years} years before the end date")
    groups = {g: _bar_groups(grid, g) for g in ("H4", "D", "W")}
    parts = [_instrument_events(inst, i, seed, grid, groups, event_rate)
             for i, inst in enumerate(INSTRUMENTS[:instruments])]
    sizes = [len(p["ts"]) for p in parts]
    col = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    inst_code = np.repeat(np.arange(instruments), sizes)
    n = len(inst_code)

    price = np.round(col["price"], 6)
    # Floor keeps the rounded ATR strictly positive (the column has CHECK atr > 0).
    atr = np.maximum(np.round(col["atr"], 6), 1e-6)
    rebound = np.round(-col["frac"] * atr, 6) + 0.0  # + 0.0 turns -0.0 into 0.0
    rebound_in_atr = np.round(rebound / atr, 6) + 0.0
    volume = np.round(col["volume"], 2)

    ts = pd.DatetimeIndex(col["ts"].astype("datetime64[ns]"), tz="UTC")
    names = np.array([inst.name for inst in INSTRUMENTS[:instruments]], dtype=object)
    df = pd.DataFrame({
        "event_type": np.full(n, EVENT_TYPE, dtype=object),
        "event_creation_date": ts,
        "granularity": np.array(GRANULARITIES, dtype=object)[col["gran"]],
        "instrument": names[inst_code],
        "event_price_level": price,
        "atr_at_event": atr,
        "volume_at_event": volume,
        "new_resistance_negative_rebound": rebound,
        "new_resistance_negative_rebound_in_atr": rebound_in_atr,
        "day_of_week": np.asarray(ts.day_of_week, dtype=np.int16),
        "hour_of_day": np.asarray(ts.hour, dtype=np.int16),
    })
    for c in ("event_type", "granularity", "instrument"):
        df[c] = df[c].astype("str")
    return df[EVENT_COLUMNS]


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    # Fixed-point text (no 1e-05 forms) and ISO 8601 with Z; empty field for missing volume.
    utc = out["event_creation_date"].dt.tz_convert("UTC").dt.tz_localize(None)
    out["event_creation_date"] = np.datetime_as_string(
        utc.to_numpy().astype("datetime64[s]"), unit="s", timezone="UTC")
    out["volume_at_event"] = (out["volume_at_event"]
                              .map("{:.2f}".format, na_action="ignore").fillna(""))
    out.to_csv(path, index=False, float_format="%.6f")


def write_event_files(out_dir: Path, years: float = 1.0, instruments: int = 28, seed: int = 0,
                      end: datetime | None = None, event_rate: float = 0.2,
                      fmt: str = "csv", files_per_instrument: int = 1) -> list[Path]:
    """Generate events and write them as events_<INSTRUMENT>_<part>.<fmt> files in out_dir.

    Each instrument's rows (all granularities) are sorted by event_creation_date and split
    into `files_per_instrument` consecutive chunks of near-equal size; every part is written,
    header-only if it has no rows. Returns the paths, sorted.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    if files_per_instrument < 1:
        raise ValueError(f"files_per_instrument must be >= 1, got {files_per_instrument}")
    df = generate_events(years=years, instruments=instruments, seed=seed, end=end,
                         event_rate=event_rate)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(files_per_instrument)))  # zero-padded so names sort by part
    paths: list[Path] = []
    for inst in INSTRUMENTS[:instruments]:
        # generate_events already orders each instrument's rows by time.
        rows = df[df["instrument"] == inst.name].reset_index(drop=True)
        bounds = np.linspace(0, len(rows), files_per_instrument + 1).round().astype(int)
        for part in range(files_per_instrument):
            chunk = rows.iloc[bounds[part]:bounds[part + 1]]
            path = out_dir / f"events_{inst.name}_{part + 1:0{width}d}.{fmt}"
            if fmt == "csv":
                _write_csv(chunk, path)
            else:
                chunk.to_parquet(path, index=False)
            paths.append(path)
    return sorted(paths)
