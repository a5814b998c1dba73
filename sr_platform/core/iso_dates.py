"""Date arithmetic on arrays: ISO 8601 timestamps of one fixed shape parsed to, and UTC
microseconds written as, text without a Python object per row (the fast validation path).
days_from_civil / civil_from_days are Howard Hinnant's proleptic Gregorian algorithms."""

import numpy as np
import pyarrow as pa

from .arrow_text import fixed_width_text, string_buffers

US_PER_DAY = 86_400_000_000
# the one shape parse_iso reads: YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+hh:mm|-hh:mm), years 1900-2199
FAST_TS = (r"^(?:19|20|21)[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
           r"(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})$")


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def civil_from_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (m <= 2), m, d


def parse_iso(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(microseconds since the epoch in UTC, valid) for values of the FAST_TS shape."""
    start, end, raw = string_buffers(arr)
    g = raw[start[:, None] + np.arange(19)].astype(np.int64) - 48
    year = g[:, 0] * 1000 + g[:, 1] * 100 + g[:, 2] * 10 + g[:, 3]
    month, day = g[:, 5] * 10 + g[:, 6], g[:, 8] * 10 + g[:, 9]
    hour, minute = g[:, 11] * 10 + g[:, 12], g[:, 14] * 10 + g[:, 15]
    second = g[:, 17] * 10 + g[:, 18]
    zulu = raw[end - 1] == ord("Z")
    digits = np.maximum(end - start - 19 - np.where(zulu, 1, 6) - 1, 0)
    k = np.arange(6)
    f = raw[np.minimum(start[:, None] + 20 + k, end[:, None] - 1)].astype(np.int64) - 48
    frac = np.where(k < digits[:, None], f, 0) @ (10 ** (5 - k))
    oh = (raw[end - 5].astype(np.int64) - 48) * 10 + raw[end - 4] - 48
    om = (raw[end - 2].astype(np.int64) - 48) * 10 + raw[end - 1] - 48
    sign = np.where(raw[end - 6] == ord("-"), -1, 1)
    offset = np.where(zulu, 0, sign * (oh * 60 + om))
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    dim = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 0, 12)]
    dim = dim + (leap & (month == 2))
    valid = ((month >= 1) & (month <= 12) & (day >= 1) & (day <= dim) & (hour <= 23)
             & (minute <= 59) & (second <= 59) & (zulu | ((oh <= 18) & (om <= 59))))
    seconds = (days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
               - offset * 60)
    return seconds * 1_000_000 + frac, valid


def iso_text(us: np.ndarray) -> pa.Array:
    """UTC microseconds as 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (np.datetime_as_string's text)."""
    days, rem = np.divmod(us, US_PER_DAY)
    y, m, d = civil_from_days(days)
    seconds, frac = np.divmod(rem, 1_000_000)
    out = np.empty((len(us), 27), np.uint8)
    out[:] = np.frombuffer(b"0000-00-00T00:00:00.000000Z", np.uint8)

    def put(col: int, width: int, v: np.ndarray) -> None:
        for j in range(width - 1, -1, -1):
            v, digit = np.divmod(v, 10)
            out[:, col + j] = 48 + digit

    put(0, 4, y)
    put(5, 2, m)
    put(8, 2, d)
    put(11, 2, seconds // 3600)
    put(14, 2, seconds // 60 % 60)
    put(17, 2, seconds % 60)
    put(20, 6, frac)
    return fixed_width_text(out)

