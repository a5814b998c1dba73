"""Vectorised validation of raw event frames: every rule the database enforces, in its terms.

Rows that break a rule are returned with every reason; good rows come back normalised to the
exact text the loader COPYs (UTC timestamps, ids, derived day/hour). Rules:

- required values present (the table's NOT NULLs); instrument ^[A-Z0-9][A-Z0-9_]{0,9}$;
  granularity in W, D, H4, H1; event_type ^[A-Za-z0-9_]{1,20}$ (default new_resistance)
- event_creation_date parses and carries an offset or Z (naive timestamps are refused unless
  the caller names the zone they are in: `assume_tz`)
- numbers parse and are finite; price and ATR > 0 at 6 decimals; rebound <= 0; values fit
  DECIMAL(18,6) / DECIMAL(18,2)
- day_of_week (Monday=0 ... Sunday=6) and hour_of_day (0-23) of the UTC timestamp: derived
  when absent or empty, checked when present
- original_event_id is a UUID when given; derived as UUIDv5(instrument|granularity|UTC
  timestamp|price at 6 dp) when absent or empty; an id repeated within a file is refused
"""

import hashlib
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd

from .event_files import RawEvents

GRANULARITIES = ("W", "D", "H4", "H1")
INSTRUMENT_RE = r"^[A-Z0-9][A-Z0-9_]{0,9}$"
EVENT_TYPE_RE = r"^[A-Za-z0-9_]{1,20}$"
UUID_RE = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
# an offset after a time of day (a date alone, 2026-03-04, ends in "-04" but has none)
OFFSET_RE = r"[T ]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"
DEC18_6_MAX = 1e12  # DECIMAL(18,6): 12 integer digits
DEC18_2_MAX = 1e16  # DECIMAL(18,2): 16 integer digits
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "sr-platform.new_resistance_events")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# the COPY column order
COPY_COLUMNS = (
    "original_event_id", "event_type", "event_creation_date", "granularity", "instrument",
    "event_price_level", "atr_at_event", "volume_at_event", "new_resistance_negative_rebound",
    "new_resistance_negative_rebound_in_atr", "day_of_week", "hour_of_day",
)
NUMERIC = {  # column: (required, DECIMAL bound)
    "event_price_level": (True, DEC18_6_MAX),
    "atr_at_event": (True, DEC18_6_MAX),
    "volume_at_event": (False, DEC18_2_MAX),
    "new_resistance_negative_rebound": (True, DEC18_6_MAX),
    "new_resistance_negative_rebound_in_atr": (True, DEC18_6_MAX),
}


@dataclass
class Rejected:
    line: int
    raw: dict
    reasons: list[str]  # full messages, quoting the bad value
    rules: list[str]  # the short names of the rules broken, for summaries


@dataclass
class Validated:
    good: pd.DataFrame  # COPY_COLUMNS as text + `ts` (datetime64 UTC) + `_line`
    rejected: list[Rejected] = field(default_factory=list)


def derive_event_id(instrument: str, granularity: str, ts_utc_iso: str, price_6dp: str) -> str:
    """UUIDv5 of the event's natural key; equal to uuid.uuid5(EVENT_ID_NAMESPACE, name)."""
    return _uuid5_many([f"{instrument}|{granularity}|{ts_utc_iso}|{price_6dp}"])[0]


def _uuid5_many(names: list[str]) -> list[str]:
    # uuid.uuid5 without building UUID objects: 3x faster on a million rows
    ns = EVENT_ID_NAMESPACE.bytes
    sha1 = hashlib.sha1
    out = []
    for name in names:
        h = bytearray(sha1(ns + name.encode()).digest()[:16])
        h[6] = (h[6] & 0x0F) | 0x50
        h[8] = (h[8] & 0x3F) | 0x80
        x = h.hex()
        out.append(f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}")
    return out


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


def _json_value(v):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    if isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def raw_record(frame: pd.DataFrame, i: int) -> dict:
    return {k: _json_value(v) for k, v in frame.iloc[i].items() if k != "_line"}


def validate(raw: RawEvents, assume_tz: str | None = None) -> Validated:
    f = raw.frame
    n = len(f)
    # (rule name, mask, message or fn(i) -> message)
    problems: list[tuple[str, np.ndarray, object]] = []

    def rule(name: str, mask, message) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            problems.append((name, mask, message))

    def col(name: str) -> pd.Series:
        return _text(f[name]) if name in f.columns else pd.Series([""] * n, index=f.index)

    instrument, granularity = col("instrument"), col("granularity")
    event_type = col("event_type").replace("", "new_resistance")
    rule("instrument required", instrument == "", "instrument: required")
    rule("instrument format", (instrument != "") & ~instrument.str.match(INSTRUMENT_RE),
         lambda i: f"instrument: {instrument.iat[i]!r} does not match {INSTRUMENT_RE}")
    rule("granularity required", granularity == "", "granularity: required")
    rule("granularity in W/D/H4/H1", (granularity != "") & ~granularity.isin(GRANULARITIES),
         lambda i: f"granularity: {granularity.iat[i]!r} is not one of W, D, H4, H1")
    rule("event_type format", ~event_type.str.match(EVENT_TYPE_RE),
         lambda i: f"event_type: {event_type.iat[i]!r} does not match {EVENT_TYPE_RE}")

    # timestamps: parse the aware ones in UTC; naive ones are refused unless assume_tz names
    # their zone, and then a wall time that zone skips or repeats (DST) is refused too
    ts_raw = f["event_creation_date"] if "event_creation_date" in f.columns else col("x")
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
    rule("event_creation_date required", ts_missing, "event_creation_date: required")
    rule("event_creation_date parses", ts_bad,
         lambda i: f"event_creation_date: {_json_value(ts_raw.iat[i])!r} is not a valid "
                   "ISO 8601 timestamp")
    if assume_tz is None:
        rule("event_creation_date has an offset", naive & ~ts_bad,
             lambda i: f"event_creation_date: {_json_value(ts_raw.iat[i])!r} has no UTC offset "
                       "(write Z or +hh:mm, or load with --assume-tz)")
    rule("event_creation_date exists in --assume-tz", unzoned,
         lambda i: f"event_creation_date: {_json_value(ts_raw.iat[i])!r} does not exist or is "
                   f"ambiguous in {assume_tz} (a daylight-saving change)")
    ts_ok = ts.notna()

    # numbers
    texts: dict[str, pd.Series] = {}
    values: dict[str, pd.Series] = {}
    for name, (required, bound) in NUMERIC.items():
        t = col(name)
        v = pd.to_numeric(t, errors="coerce")
        texts[name], values[name] = t, v
        empty = t == ""
        if required:
            rule(f"{name} required", empty, f"{name}: required")
        finite = np.isfinite(v.to_numpy(dtype=float, na_value=np.nan))
        rule(f"{name} finite number", ~empty & ~finite,
             lambda i, t=t, name=name: f"{name}: {t.iat[i]!r} is not a finite number")
        rule(f"{name} fits DECIMAL", finite & _too_large(t, v, bound, finite),
             lambda i, t=t, name=name: f"{name}: {t.iat[i]} is out of range for its DECIMAL")
    for name in ("event_price_level", "atr_at_event"):
        v = values[name]
        rule(f"{name} > 0", v.notna() & (v.round(6) <= 0),
             lambda i, name=name: f"{name}: {texts[name].iat[i]} must be > 0")
    reb, reb_text = values["new_resistance_negative_rebound"], texts[
        "new_resistance_negative_rebound"]
    rule("new_resistance_negative_rebound <= 0", reb.notna() & (reb.round(6) > 0),
         lambda i: f"new_resistance_negative_rebound: {reb_text.iat[i]} must be <= 0")

    # day of week / hour of day: of the UTC timestamp; derived when absent
    derived_dow = ts.dt.day_of_week
    derived_hour = ts.dt.hour
    for name, derived, lo, hi in (("day_of_week", derived_dow, 0, 6),
                                  ("hour_of_day", derived_hour, 0, 23)):
        t = col(name)
        given = t != ""
        v = pd.to_numeric(t, errors="coerce")
        integral = v.notna() & (v == v.round())
        rule(f"{name} integer", given & ~integral,
             lambda i, t=t, name=name: f"{name}: {t.iat[i]!r} is not an integer")
        rule(f"{name} in {lo}..{hi}", integral & ((v < lo) | (v > hi)),
             lambda i, t=t, name=name, lo=lo, hi=hi: f"{name}: {t.iat[i]} is not in {lo}..{hi}")
        if name == "day_of_week":
            def msg(i, t=t):
                d = int(derived_dow.iat[i])
                return (f"day_of_week: {t.iat[i]} does not match event_creation_date "
                        f"({WEEKDAYS[d]} UTC = {d}; Monday=0)")
        else:
            def msg(i, t=t):
                return (f"hour_of_day: {t.iat[i]} does not match event_creation_date "
                        f"(UTC hour {int(derived_hour.iat[i])})")
        rule(f"{name} matches timestamp", integral & (v >= lo) & (v <= hi) & ts_ok & (v != derived),
             msg)

    # ids
    given_id = col("original_event_id")
    has_id = given_id != ""
    rule("original_event_id is a UUID", has_id & ~given_id.str.match(UUID_RE),
         lambda i: f"original_event_id: {given_id.iat[i]!r} is not a UUID")

    bad = np.zeros(n, dtype=bool)
    for _, mask, _ in problems:
        bad |= mask
    ok = ~bad

    # normalise the good rows
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
        ids[need] = _uuid5_many(names.tolist())
    ids = ids.str.replace("-", "", regex=False)
    ids = (ids.str[:8] + "-" + ids.str[8:12] + "-" + ids.str[12:16] + "-" + ids.str[16:20] + "-"
           + ids.str[20:])
    good = pd.DataFrame({
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
        "_line": f["_line"][ok],
    })

    # an id may appear once per file; later copies are refused, naming the first
    dup = good["original_event_id"].duplicated(keep="first")
    rejected: list[Rejected] = []
    if dup.any():
        first_line = good.drop_duplicates("original_event_id").set_index(
            "original_event_id")["_line"]
        for idx in np.flatnonzero(dup.to_numpy()):
            row = good.iloc[idx]
            pos = f.index.get_loc(good.index[idx])
            rejected.append(Rejected(int(row["_line"]), raw_record(f, pos), [
                f"original_event_id: duplicate of line {int(first_line[row['original_event_id']])}"
                f" ({row['original_event_id']})"], ["original_event_id unique in file"]))
        good = good[~dup]

    for i in np.flatnonzero(bad):
        hits = [(name, m) for name, mask, m in problems if mask[i]]
        rejected.append(Rejected(int(f["_line"].iat[i]), raw_record(f, i),
                                 [m if isinstance(m, str) else m(i) for _, m in hits],
                                 [name for name, _ in hits]))
    for line, rec, reason in raw.malformed:
        rejected.append(Rejected(line, rec, [f"csv: {reason}"], ["csv field count"]))
    rejected.sort(key=lambda r: r.line)
    return Validated(good.reset_index(drop=True), rejected)

