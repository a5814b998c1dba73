"""The exact validation path: every rule on every row with pandas, each broken rule worded
as a reason quoting the bad value. The fast path (validate_fast) leaves it every row it cannot
decide and every row it finds breaking a rule. Rules:

- required values present (the table's NOT NULLs); instrument ^[A-Z0-9][A-Z0-9_]{0,9}$;
  granularity in W, D, H4, H1; event_type ^[A-Za-z0-9_]{1,20}$ (default new_resistance)
- event_creation_date parses and carries an offset or Z (naive timestamps are refused unless
  the caller names the zone they are in: `assume_tz`)
- numbers parse and are finite; price and ATR > 0 at 6 decimals; rebound <= 0; values fit
  DECIMAL(18,6) / DECIMAL(18,2)
- day_of_week (Monday=0 ... Sunday=6) and hour_of_day (0-23) of the UTC timestamp: derived
  when absent or empty, checked when present
- original_event_id is a UUID when given; derived as UUIDv5(instrument|granularity|UTC
  timestamp|price at 6 dp) when absent or empty
- a field holding a NUL byte: the row is refused by that rule alone
"""

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
import pyarrow as pa

from .ids import event_ids
from .keys import GRANULARITIES, INSTRUMENT_RE
from .rejections import NUL_BYTE, NUL_ESCAPE, Rejected, json_value, raw_record, storable

EVENT_TYPE_RE = r"^[A-Za-z0-9_]{1,20}$"
UUID_RE = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
# an offset after a time of day (a date alone, 2026-03-04, ends in "-04" but has none)
OFFSET_RE = r"[T ]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"
DEC18_6_MAX = 1e12  # DECIMAL(18,6): 12 integer digits
DEC18_2_MAX = 1e16  # DECIMAL(18,2): 16 integer digits
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NUMERIC = {  # column: (required, DECIMAL bound)
    "event_price_level": (True, DEC18_6_MAX),
    "atr_at_event": (True, DEC18_6_MAX),
    "volume_at_event": (False, DEC18_2_MAX),
    "new_resistance_negative_rebound": (True, DEC18_6_MAX),
    "new_resistance_negative_rebound_in_atr": (True, DEC18_6_MAX),
}


def _text(s: pd.Series) -> pd.Series:
    """A column as stripped text ('' for missing), whatever the file stored."""
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        return s.fillna("").astype(str).str.strip()
    if pd.api.types.is_float_dtype(s):
        return s.map(lambda v: "" if pd.isna(v) else repr(float(v)))
    return s.astype(str).where(s.notna(), "")


def _too_large(text: pd.Series, value: pd.Series, bound: float, finite) -> np.ndarray:
    """Values that overflow DECIMAL(18, s) once PostgreSQL rounds them to s places. Floats
    decide far from the limit; the few rows near it are decided exactly with Decimal."""
    scale = 6 if bound == DEC18_6_MAX else 2
    a = np.abs(value.to_numpy(dtype=float, na_value=0.0))
    out = finite & (a >= bound * 1.000001)
    near = np.flatnonzero(finite & (a >= bound * 0.999999) & (a < bound * 1.000001))
    step = Decimal(1).scaleb(-scale)
    for i in near:
        exact = abs(Decimal(text.iat[i]).quantize(step, rounding=ROUND_HALF_UP))
        out[i] = exact >= Decimal(int(bound))
    return out



class RuleBook:
    """The rules broken so far, as (rule name, row mask, message or fn(row) -> message)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.f, self.n = frame, len(frame)
        self.problems: list[tuple[str, np.ndarray, str | Callable[[int], str]]] = []

    def rule(self, name: str, mask, message: str | Callable[[int], str]) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.problems.append((name, mask, message))

    def col(self, name: str) -> pd.Series:
        f = self.f
        return _text(f[name]) if name in f.columns else pd.Series([""] * self.n, index=f.index)

    def bad(self) -> np.ndarray:
        bad = np.zeros(self.n, dtype=bool)
        for _, mask, _ in self.problems:
            bad |= mask
        return bad

    def rejected(self, bad: np.ndarray) -> list[Rejected]:
        out = []
        for i in np.flatnonzero(bad):
            hits = [(name, m) for name, mask, m in self.problems if mask[i]]
            out.append(Rejected(int(self.f["_line"].iat[i]), raw_record(self.f, i),
                                [m if isinstance(m, str) else m(i) for _, m in hits],
                                [name for name, _ in hits]))
        return out


def _keys(c: RuleBook) -> tuple[pd.Series, pd.Series, pd.Series]:
    """instrument, granularity and event_type: present and well-formed."""
    instrument, granularity = c.col("instrument"), c.col("granularity")
    event_type = c.col("event_type").replace("", "new_resistance")
    c.rule("instrument required", instrument == "", "instrument: required")
    c.rule("instrument format", (instrument != "") & ~instrument.str.match(INSTRUMENT_RE),
           lambda i: f"instrument: {instrument.iat[i]!r} does not match {INSTRUMENT_RE}")
    c.rule("granularity required", granularity == "", "granularity: required")
    c.rule("granularity in W/D/H4/H1", (granularity != "") & ~granularity.isin(GRANULARITIES),
           lambda i: f"granularity: {granularity.iat[i]!r} is not one of W, D, H4, H1")
    c.rule("event_type format", ~event_type.str.match(EVENT_TYPE_RE),
           lambda i: f"event_type: {event_type.iat[i]!r} does not match {EVENT_TYPE_RE}")
    return instrument, granularity, event_type


def _timestamps(c: RuleBook, assume_tz: str | None) -> pd.Series:
    """event_creation_date in UTC (NaT where it is refused). Aware values are converted; naive
    ones are refused unless assume_tz names their zone, and then a wall time that zone skips or
    repeats (DST) is refused too."""
    f = c.f
    ts_raw = f["event_creation_date"] if "event_creation_date" in f.columns else c.col("x")
    unzoned = pd.Series(False, index=f.index)  # naive, parsed, but not a time in assume_tz
    if pd.api.types.is_datetime64_any_dtype(ts_raw):
        ts_missing = ts_raw.isna()
        ts_bad = pd.Series(False, index=f.index)
        naive = pd.Series(ts_raw.dt.tz is None, index=f.index) & ~ts_missing
        if ts_raw.dt.tz is not None:
            ts = ts_raw.dt.tz_convert("UTC")
        elif assume_tz:
            ts = ts_raw.dt.tz_localize(assume_tz, ambiguous="NaT",
                                       nonexistent="NaT").dt.tz_convert("UTC")
            unzoned = ~ts_missing & ts.isna()
        else:
            ts = ts_raw.dt.tz_localize("UTC")
    else:
        text = _text(ts_raw).str.replace(r"[zZ]$", "+00:00", regex=True)
        ts_missing = text == ""
        naive = ~ts_missing & ~text.str.contains(OFFSET_RE)
        aware = pd.to_datetime(text.where(~naive, ""), utc=True, format="ISO8601",
                               errors="coerce")
        local = pd.to_datetime(text.where(naive, ""), format="ISO8601", errors="coerce")
        ts = aware
        if assume_tz and naive.any():
            zoned = local.dt.tz_localize(assume_tz, ambiguous="NaT", nonexistent="NaT")
            ts = aware.where(~naive, zoned.dt.tz_convert("UTC"))
            unzoned = naive & local.notna() & zoned.isna()
        ts_bad = ~ts_missing & ((~naive & aware.isna()) | (naive & local.isna()))
    c.rule("event_creation_date required", ts_missing, "event_creation_date: required")
    c.rule("event_creation_date parses", ts_bad,
           lambda i: f"event_creation_date: {json_value(ts_raw.iat[i])!r} is not a valid "
                     "ISO 8601 timestamp")
    if assume_tz is None:
        c.rule("event_creation_date has an offset", naive & ~ts_bad,
               lambda i: f"event_creation_date: {json_value(ts_raw.iat[i])!r} has no UTC "
                         "offset (write Z or +hh:mm, or load with --assume-tz)")
    c.rule("event_creation_date exists in --assume-tz", unzoned,
           lambda i: f"event_creation_date: {json_value(ts_raw.iat[i])!r} does not exist or "
                     f"is ambiguous in {assume_tz} (a daylight-saving change)")
    return ts


def _numbers(c: RuleBook) -> tuple[dict[str, pd.Series], dict[str, pd.Series]]:
    """The DECIMAL columns: (text as given, parsed value) per column; present when required,
    finite, within their DECIMAL, and the seed's CHECKs (price, ATR > 0; rebound <= 0)."""
    texts: dict[str, pd.Series] = {}
    values: dict[str, pd.Series] = {}
    for name, (required, bound) in NUMERIC.items():
        t = c.col(name)
        v = pd.to_numeric(t, errors="coerce")
        texts[name], values[name] = t, v
        empty = t == ""
        if required:
            c.rule(f"{name} required", empty, f"{name}: required")
        finite = np.isfinite(v.to_numpy(dtype=float, na_value=np.nan))
        c.rule(f"{name} finite number", ~empty & ~finite,
               lambda i, t=t, name=name: f"{name}: {t.iat[i]!r} is not a finite number")
        c.rule(f"{name} fits DECIMAL", finite & _too_large(t, v, bound, finite),
               lambda i, t=t, name=name: f"{name}: {t.iat[i]} is out of range for its DECIMAL")
    for name in ("event_price_level", "atr_at_event"):
        v = values[name]
        c.rule(f"{name} > 0", v.notna() & (v.round(6) <= 0),
               lambda i, name=name: f"{name}: {texts[name].iat[i]} must be > 0")
    reb = values["new_resistance_negative_rebound"]
    reb_text = texts["new_resistance_negative_rebound"]
    c.rule("new_resistance_negative_rebound <= 0", reb.notna() & (reb.round(6) > 0),
           lambda i: f"new_resistance_negative_rebound: {reb_text.iat[i]} must be <= 0")
    return texts, values


def _calendar(c: RuleBook, ts: pd.Series) -> tuple[pd.Series, pd.Series]:
    """day_of_week and hour_of_day of the UTC timestamp: derived when absent or empty, checked
    when present. Returns the derived (day, hour)."""
    derived_dow, derived_hour = ts.dt.day_of_week, ts.dt.hour
    ts_ok = ts.notna()
    for name, derived, lo, hi in (("day_of_week", derived_dow, 0, 6),
                                  ("hour_of_day", derived_hour, 0, 23)):
        t = c.col(name)
        given = t != ""
        v = pd.to_numeric(t, errors="coerce")
        integral = v.notna() & (v == v.round())
        c.rule(f"{name} integer", given & ~integral,
               lambda i, t=t, name=name: f"{name}: {t.iat[i]!r} is not an integer")
        c.rule(f"{name} in {lo}..{hi}", integral & ((v < lo) | (v > hi)),
               lambda i, t=t, name=name, lo=lo, hi=hi:
                   f"{name}: {t.iat[i]} is not in {lo}..{hi}")
        if name == "day_of_week":
            def msg(i, t=t):
                d = int(derived_dow.iat[i])
                return (f"day_of_week: {t.iat[i]} does not match event_creation_date "
                        f"({WEEKDAYS[d]} UTC = {d}; Monday=0)")
        else:
            def msg(i, t=t):
                return (f"hour_of_day: {t.iat[i]} does not match event_creation_date "
                        f"(UTC hour {int(derived_hour.iat[i])})")
        c.rule(f"{name} matches timestamp",
               integral & (v >= lo) & (v <= hi) & ts_ok & (v != derived), msg)
    return derived_dow, derived_hour


def _ids(c: RuleBook) -> pd.Series:
    """original_event_id as given ('' when absent): a UUID when present."""
    given_id = c.col("original_event_id")
    c.rule("original_event_id is a UUID", (given_id != "") & ~given_id.str.match(UUID_RE),
           lambda i: f"original_event_id: {given_id.iat[i]!r} is not a UUID")
    return given_id


def _normalise(c: RuleBook, ok: np.ndarray, keys, ts: pd.Series, texts, values,
               calendar, given_id: pd.Series) -> pd.DataFrame:
    """The good rows as the exact text the loader COPYs: UTC timestamps, canonical ids
    (derived where absent), derived day and hour."""
    instrument, granularity, event_type = keys
    derived_dow, derived_hour = calendar
    ts_good = ts[ok]
    ts_iso = pd.Series(np.datetime_as_string(
        ts_good.dt.tz_convert(None).to_numpy().astype("datetime64[us]"), unit="us"),
        index=ts_good.index) + "Z"
    price6 = values["event_price_level"][ok].round(6).map("{:.6f}".format)
    ids = given_id[ok].str.lower()
    need = ids == ""
    if need.any():
        names = (instrument[ok][need] + "|" + granularity[ok][need] + "|" + ts_iso[need] + "|"
                 + price6[need])
        ids = ids.copy()
        ids[need] = event_ids(pa.array(names.tolist(), pa.string())).to_pylist()
    ids = ids.str.replace("-", "", regex=False)
    ids = (ids.str[:8] + "-" + ids.str[8:12] + "-" + ids.str[12:16] + "-" + ids.str[16:20] + "-"
           + ids.str[20:])
    return pd.DataFrame({
        "original_event_id": ids,
        "event_type": event_type[ok],
        "event_creation_date": ts_iso,
        "granularity": granularity[ok],
        "instrument": instrument[ok],
        "event_price_level": texts["event_price_level"][ok],
        "atr_at_event": texts["atr_at_event"][ok],
        "volume_at_event": texts["volume_at_event"][ok],
        "new_resistance_negative_rebound": texts["new_resistance_negative_rebound"][ok],
        "new_resistance_negative_rebound_in_atr":
            texts["new_resistance_negative_rebound_in_atr"][ok],
        "day_of_week": derived_dow[ok].astype(int).astype(str),
        "hour_of_day": derived_hour[ok].astype(int).astype(str),
        "ts": ts_good,
        "_line": c.f["_line"][ok],
    })



def _has_nul(s: pd.Series) -> bool:
    """Whether any value of a text column holds a NUL (a screen: one join, not a loop)."""
    if not (s.dtype == object or pd.api.types.is_string_dtype(s)):
        return False
    values = s.tolist()
    try:
        return "\x00" in "".join(values)
    except TypeError:  # not all str (Parquet objects, None): value by value
        return any(isinstance(v, str) and "\x00" in v for v in values)


def _nul_rows(f: pd.DataFrame) -> tuple[np.ndarray, list[Rejected]]:
    """Rows with a NUL byte in a field: refused by their own rule alone (the other rules'
    messages would quote the NUL), their raw record stored with the NUL escaped."""
    hits = {c: f[c].map(lambda v: isinstance(v, str) and "\x00" in v).to_numpy(dtype=bool)
            for c in f.columns if c != "_line" and _has_nul(f[c])}
    bad = np.zeros(len(f), dtype=bool)
    for mask in hits.values():
        bad |= mask
    rejected = []
    for i in np.flatnonzero(bad):
        cols = [c for c, mask in hits.items() if mask[i]]
        rejected.append(Rejected(int(f["_line"].iat[i]), storable(raw_record(f, i)),
                                 [f"{c}: holds a NUL byte (stored as {NUL_ESCAPE})"
                                  for c in cols], [NUL_BYTE]))
    return bad, rejected


def exact_validate(f: pd.DataFrame, assume_tz: str | None) -> tuple[pd.DataFrame, list[Rejected]]:
    """Every rule on every row of `f` with pandas: the good rows normalised, the bad ones
    with every reason (the order of the steps is the order of a row's reasons). A row with a
    NUL byte is refused by that rule alone (the fast path's patterns never match a NUL)."""
    nul, nul_rejected = _nul_rows(f)
    if nul.any():
        good, rejected = exact_validate(f[~nul], assume_tz)
        return good, sorted(rejected + nul_rejected, key=lambda r: r.line)
    c = RuleBook(f)
    keys = _keys(c)
    ts = _timestamps(c, assume_tz)
    texts, values = _numbers(c)
    calendar = _calendar(c, ts)
    given_id = _ids(c)
    bad = c.bad()
    return _normalise(c, ~bad, keys, ts, texts, values, calendar, given_id), c.rejected(bad)

