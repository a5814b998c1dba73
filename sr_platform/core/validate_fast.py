"""The fast validation path: rows whose every value has a plain, common shape are checked and
normalised with pyarrow/numpy kernels, to the same text the exact path (validate_exact) gives.
Whatever does not fit a shape (whitespace to strip, other timestamp spellings, naive times,
exponents, more digits or decimals, upper-case or dash-less ids, nulls), and every fitting row
that breaks a value rule, is left to the exact path, which words the reasons."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .arrow_text import arrow_text, empty_text, matches
from .ids import event_ids
from .iso_dates import FAST_TS, US_PER_DAY, iso_text, parse_iso
from .keys import EVENT_COLUMNS, GRANULARITIES, INSTRUMENT_RE
from .validate_exact import NUMERIC

# Shapes the fast path decides by itself (RE2, anchored at both ends, ASCII only).
# at most 15 digits (a double holds them exactly), below 1e9 (far from every DECIMAL bound)
FAST_NUMBER = r"^-?[0-9]{1,9}(?:\.[0-9]{1,6})?$"
FAST_OPTIONAL_NUMBER = r"^(?:-?[0-9]{1,9}(?:\.[0-9]{1,6})?)?$"
FAST_SMALL_INT = r"^(?:[0-9]{1,2})?$"
FAST_EVENT_TYPE = r"^(?:[A-Za-z0-9_]{1,20})?$"
FAST_UUID = (r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
             r"[0-9a-fA-F]{12})?$")
REQUIRED_TEXT = ("event_creation_date", "granularity", "instrument", *[
    name for name, (required, _) in NUMERIC.items() if required])
_SMALL_INTS = pa.array([str(i) for i in range(24)], pa.string())


@dataclass
class _Fitting:
    """The rows that passed the fast path so far: their positions in the frame, their text
    columns, UTC microseconds, price, and derived day of week and hour."""

    rows: np.ndarray
    text: dict[str, pa.Array]
    us: np.ndarray
    price: np.ndarray
    dow: np.ndarray
    hour: np.ndarray

    def keep(self, good: np.ndarray) -> "_Fitting":
        taken = pa.array(np.flatnonzero(good))
        return _Fitting(self.rows[good], {k: v.take(taken) for k, v in self.text.items()},
                        self.us[good], self.price[good], self.dow[good], self.hour[good])


def fast_validate(f: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame | None] | None:
    """(positions of the rows decided good here, their normalised frame), or None when the
    columns are not all Arrow text (Parquet's typed columns: the exact path does those)."""
    text = _text_columns(f)
    if text is None:
        return None
    rows = np.flatnonzero(_shapes_fit(text))
    if not len(rows):
        return rows, None
    part = text if len(rows) == len(f) else {k: v.take(pa.array(rows))
                                              for k, v in text.items()}
    fitting = _value_rules(rows, part)
    if not len(fitting.rows):
        return fitting.rows, None
    return fitting.rows, _normalised(f, fitting)


def _text_columns(f: pd.DataFrame) -> dict[str, pa.Array] | None:
    """The event columns the frame has, as Arrow text; None when one is not Arrow text, a
    required one is missing, or the frame is empty."""
    text: dict[str, pa.Array] = {}
    for name in EVENT_COLUMNS:
        if name in f.columns:
            arr = arrow_text(f[name])
            if arr is None:
                return None
            text[name] = arr
    if len(f) == 0 or any(c not in text for c in REQUIRED_TEXT):
        return None
    return text


def _shapes_fit(text: dict[str, pa.Array]) -> np.ndarray:
    """The rows whose every value has a shape the fast path decides."""
    fit = matches(text["instrument"], INSTRUMENT_RE)
    fit &= pc.is_in(text["granularity"], value_set=pa.array(GRANULARITIES)).fill_null(
        False).to_numpy(zero_copy_only=False)
    fit &= matches(text["event_creation_date"], FAST_TS)
    for name, (required, _) in NUMERIC.items():
        if name in text:
            fit &= matches(text[name], FAST_NUMBER if required else FAST_OPTIONAL_NUMBER)
    for name, pattern in (("event_type", FAST_EVENT_TYPE), ("day_of_week", FAST_SMALL_INT),
                          ("hour_of_day", FAST_SMALL_INT), ("original_event_id", FAST_UUID)):
        if name in text:
            fit &= matches(text[name], pattern)
    return fit


def _value_rules(rows: np.ndarray, part: dict[str, pa.Array]) -> _Fitting:
    """The value rules, on the fitting rows; a row breaking one goes to the exact path."""
    us, good = parse_iso(part["event_creation_date"])
    price = pc.cast(part["event_price_level"], pa.float64()).to_numpy()
    good &= np.round(price, 6) > 0
    good &= np.round(pc.cast(part["atr_at_event"], pa.float64()).to_numpy(), 6) > 0
    good &= np.round(pc.cast(part["new_resistance_negative_rebound"], pa.float64()
                             ).to_numpy(), 6) <= 0
    days = us // US_PER_DAY
    dow, hour = (days + 3) % 7, us % US_PER_DAY // 3_600_000_000
    for name, derived in (("day_of_week", dow), ("hour_of_day", hour)):
        if name in part:
            given = part[name]
            empty = pc.equal(given, "").to_numpy(zero_copy_only=False)
            value = pc.cast(pc.if_else(empty, "0", given), pa.int64()).to_numpy()
            good &= empty | (value == derived)
    fitting = _Fitting(rows, part, us, price, dow, hour)
    return fitting if good.all() else fitting.keep(good)


def _price_6dp(value: np.ndarray) -> pa.Array:
    """'{:.6f}' of round(value, 6), for 0 <= value < 1e9."""
    units = np.rint(value * 1e6).astype(np.int64)
    whole, frac = np.divmod(units, 1_000_000)
    return pc.binary_join_element_wise(
        pc.cast(pa.array(whole), pa.string()),
        pc.utf8_lpad(pc.cast(pa.array(frac), pa.string()), 6, "0"), ".")


def _ids(part: dict[str, pa.Array], ts_iso: pa.Array, price: np.ndarray) -> pa.Array:
    """The rows' ids, lower-case; derived from the natural key where the file gave none."""
    m = len(ts_iso)
    given_id = part.get("original_event_id", empty_text(m))
    need = pc.equal(given_id, "")
    ids = pc.ascii_lower(given_id)
    if pc.any(need).as_py():
        pick = np.flatnonzero(need.to_numpy(zero_copy_only=False))
        taken = pa.array(pick)
        names = pc.binary_join_element_wise(
            part["instrument"].take(taken), part["granularity"].take(taken), ts_iso.take(taken),
            _price_6dp(price[pick]), "|")
        ids = pc.replace_with_mask(ids, need, event_ids(names))
    return ids


def _normalised(f: pd.DataFrame, fit: _Fitting) -> pd.DataFrame:
    """The good rows as the exact text the loader COPYs, plus `ts` and `_line`."""
    part, m = fit.text, len(fit.rows)
    ts_iso = iso_text(fit.us)
    event_type = part.get("event_type")
    event_type = (pc.if_else(pc.equal(event_type, ""), "new_resistance", event_type)
                  if event_type is not None else pa.array(["new_resistance"] * m))
    table = pa.table({
        "original_event_id": _ids(part, ts_iso, fit.price),
        "event_type": event_type,
        "event_creation_date": ts_iso,
        "granularity": part["granularity"],
        "instrument": part["instrument"],
        "event_price_level": part["event_price_level"],
        "atr_at_event": part["atr_at_event"],
        "volume_at_event": part.get("volume_at_event", empty_text(m)),
        "new_resistance_negative_rebound": part["new_resistance_negative_rebound"],
        "new_resistance_negative_rebound_in_atr": part["new_resistance_negative_rebound_in_atr"],
        "day_of_week": _SMALL_INTS.take(pa.array(fit.dow)),
        "hour_of_day": _SMALL_INTS.take(pa.array(fit.hour)),
    })
    good_frame = table.to_pandas()
    good_frame.index = f.index[fit.rows]
    good_frame["ts"] = pd.Series(fit.us.astype("datetime64[us]"), index=good_frame.index
                                 ).dt.tz_localize("UTC")
    good_frame["_line"] = f["_line"].to_numpy()[fit.rows]
    return good_frame
