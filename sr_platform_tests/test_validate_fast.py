"""The fast reading and validation paths (pyarrow blocks, vectorised rules) against the exact
ones they stand in for: same records, line numbers, good rows' text and rejections. No
database needed."""

import gzip
import uuid
from pathlib import Path

import pandas as pd
import pytest

from sr_platform.core import event_files, validate, validate_fast
from sr_platform.core.event_files import EventFile, EventFileError, RawEvents

HEADER = ("original_event_id,event_type,event_creation_date,granularity,instrument,"
          "event_price_level,atr_at_event,volume_at_event,new_resistance_negative_rebound,"
          "new_resistance_negative_rebound_in_atr,day_of_week,hour_of_day")
ID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"

# (event_creation_date, price, day_of_week, hour_of_day, original_event_id): good rows of
# shapes the fast path decides, and rows it must leave to the exact path (bad or unusual)
ROWS = [
    ("2025-06-01T23:30:00.5-05:00", "1.0842", "", "", ""),       # next UTC day, fraction
    ("2024-02-29T00:00:00Z", "1", "3", "0", ""),                  # leap day, checked day/hour
    ("2025-06-01T12:00:00+05:30", "0.000001", "", "6", ID.upper()),  # upper-case id
    ("2025-06-01T12:00:00.123456+00:00", "999999999.999999", "", "", ID.replace("-", "")),
    ("2023-02-29T00:00:00Z", "1", "", "", ""),                    # no such day
    ("2025-06-01T24:00:00Z", "1", "", "", ""),                    # hour 24
    ("2025-06-01T12:00:00", "1", "", "", ""),                     # naive
    ("2025-06-01T12:00:00.1234567Z", "1", "", "", ""),            # 7 decimals of a second
    ("2025-06-01 12:00:00z", "1", "", "", ""),                    # space, lower-case z
    ("2025-06-02T10:00:00Z", "0.0000004", "", "", ""),            # rounds to 0
    ("2025-06-02T10:00:00Z", "0.0000005", "", "", ""),            # rounds up to 0.000001
    ("2025-06-02T10:00:00Z", "1e12", "", "", ""),                 # out of DECIMAL range
    ("2025-06-02T10:00:00Z", "1000000000", "", "", ""),           # 10 digits: exact path
    ("2025-06-02T10:00:00Z", " 1.5 ", "0", "10", ""),             # spaces
    ("2025-06-02T10:00:00Z", "nan", "", "", ""),
    ("2025-06-02T10:00:00Z", "1.5", "1", "10", ""),               # wrong day
    ("2025-06-02T10:00:00Z", "1.5", "0", "9", ""),                # wrong hour
    ("2025-06-02T10:00:00Z", "1.5", "", "", ID),                  # same id as row 3: duplicate
    ("2025-06-02T10:00:00Z", "1.5", "", "", "not-a-uuid"),
]


def csv_text(rows=ROWS, newline="\n") -> str:
    lines = [HEADER] + [f"{i},,{ts},H1,EUR_USD,{price},0.0012,,-0.0004,-0.3,{dow},{hour}"
                        for ts, price, dow, hour, i in rows]
    return newline.join(lines) + newline


def exact(raw: RawEvents, assume_tz=None) -> validate.Validated:
    """validate() with the fast path off (object columns are left to the exact path)."""
    return validate.validate(RawEvents(raw.path, raw.sha256, raw.frame.astype(object),
                                       raw.malformed, raw.ignored_columns), assume_tz)


def as_lists(v: validate.Validated):
    cols = [*validate.COPY_COLUMNS, "_line"]
    return (v.good[cols].astype(object).values.tolist(), [str(t) for t in v.good["ts"]],
            [(r.line, r.raw, r.reasons, r.rules) for r in v.rejected])


@pytest.mark.parametrize("assume_tz", [None, "Europe/Berlin"])
def test_fast_validation_equals_the_exact_path(tmp_path, assume_tz):
    path = tmp_path / "mixed.csv"
    path.write_text(csv_text(), encoding="utf-8")
    f, _ = event_files.scan_event_file(path)
    (raw,) = f.chunks(1_000)
    fast = validate.validate(raw, assume_tz)
    assert as_lists(fast) == as_lists(exact(raw, assume_tz))
    good = fast.good.set_index("_line")
    assert good.index.tolist() == ([2, 3, 4, 9, 10, 14, 15] if assume_tz is None
                                   else [2, 3, 4, 8, 9, 10, 14, 15])
    assert good.loc[2, ["event_creation_date", "day_of_week", "hour_of_day"]].tolist() == [
        "2025-06-02T04:30:00.500000Z", "0", "4"]
    assert good.loc[2, "original_event_id"] == validate.derive_event_id(
        "EUR_USD", "H1", "2025-06-02T04:30:00.500000Z", "1.084200")
    assert good.loc[4, ["original_event_id", "event_creation_date"]].tolist() == [
        ID, "2025-06-01T06:30:00.000000Z"]
    # 7 decimals of a second: pandas parses them, the microseconds are kept
    assert good.loc[9, "event_creation_date"] == "2025-06-01T12:00:00.123456Z"
    by_line = {r.line: r.reasons for r in fast.rejected}
    assert by_line == {
        5: [f"original_event_id: duplicate of line 4 ({ID})"],  # the same id, without dashes
        6: ["event_creation_date: '2023-02-29T00:00:00Z' is not a valid ISO 8601 timestamp"],
        7: ["event_creation_date: '2025-06-01T24:00:00Z' is not a valid ISO 8601 timestamp"],
        **({8: ["event_creation_date: '2025-06-01T12:00:00' has no UTC offset (write Z or "
                "+hh:mm, or load with --assume-tz)"]} if assume_tz is None else {}),
        11: ["event_price_level: 0.0000004 must be > 0"],
        12: ["event_price_level: 0.0000005 must be > 0"],  # the double is below 5e-7
        13: ["event_price_level: 1e12 is out of range for its DECIMAL"],
        16: ["event_price_level: 'nan' is not a finite number"],
        17: ["day_of_week: 1 does not match event_creation_date (Monday UTC = 0; Monday=0)"],
        18: ["hour_of_day: 9 does not match event_creation_date (UTC hour 10)"],
        19: [f"original_event_id: duplicate of line 4 ({ID})"],
        20: ["original_event_id: 'not-a-uuid' is not a UUID"],
    }


def test_derived_ids_match_uuid5_on_a_generated_chunk(tmp_path):
    from sr_platform.core.generate import write_event_files
    path = write_event_files(tmp_path, years=0.05, instruments=1)[0]
    f, _ = event_files.scan_event_file(path)
    (raw,) = f.chunks(100_000)
    good = validate.validate(raw).good
    assert len(good) == len(raw.frame) > 20
    names = (good["instrument"] + "|" + good["granularity"] + "|" + good["event_creation_date"]
             + "|" + raw.frame["event_price_level"].astype(float).map("{:.6f}".format))
    assert good["original_event_id"].tolist() == [
        str(uuid.uuid5(validate.EVENT_ID_NAMESPACE, n)) for n in names]
    assert as_lists(validate.validate(raw)) == as_lists(exact(raw))


def chunks_of(path: Path, rows: int):
    f = EventFile(path)
    return [(len(c.frame), c.frame["_line"].tolist(), c.malformed,
             c.frame.drop(columns="_line").values.tolist()) for c in f.chunks(rows)]


def test_plain_blocks_keep_physical_lines_blanks_crlf_and_ragged(tmp_path, monkeypatch):
    lines = csv_text(ROWS[:6], "\r\n").split("\r\n")
    lines[3:3] = ["", "a,b"]  # a blank line, a ragged one
    path = tmp_path / "crlf.csv"
    path.write_bytes("\r\n".join(lines).encode())
    whole = chunks_of(path, 4)
    # physical lines 2-5 then 6-9; the blank line 4 is no record, the ragged 5 is malformed
    assert [(n, ln, m) for n, ln, m, _ in whole] == [
        (2, [2, 3], [(5, {"fields": ["a", "b"]}, "expected 12 fields, found 2")]),
        (4, [6, 7, 8, 9], [])]
    monkeypatch.setattr(event_files, "READ_BYTES", 5)  # pieces cut mid-line
    assert chunks_of(path, 4) == whole


def test_quotes_switch_to_the_csv_module_with_physical_line_numbers(tmp_path, monkeypatch):
    text = csv_text(ROWS[:4]) + ',,2025-06-02T10:00:00Z,H1,"EUR\nUSD",1,1,,0,0,,\n' + \
        csv_text(ROWS[:2]).split("\n", 1)[1]
    path = tmp_path / "quoted.csv"
    path.write_text(text, encoding="utf-8")
    got = chunks_of(path, 2)
    assert [ln for _, ln, *_ in got] == [[2, 3], [4, 5], [6, 8], [9]]
    assert got[2][3][0][4] == "EUR\nUSD"
    monkeypatch.setattr(event_files, "READ_BYTES", 7)
    assert chunks_of(path, 2) == got


def test_gzip_reads_like_plain_text(tmp_path):
    plain = tmp_path / "a.csv"
    plain.write_text(csv_text(), encoding="utf-8")
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert chunks_of(gz, 5) == chunks_of(plain, 5)


@pytest.mark.parametrize("junk", [b"\r", b"\xe9\xff"])
def test_a_lone_cr_or_latin1_byte_still_refuses_the_file(tmp_path, junk):
    data = csv_text().encode()
    path = tmp_path / "junk.csv"
    path.write_bytes(data[:400] + junk + data[400:])
    with pytest.raises(EventFileError) as exc:
        event_files.scan_event_file(path)
    assert str(exc.value).startswith(f"{path}: not an event file: not UTF-8 CSV text (")


def test_parquet_typed_columns_take_the_exact_path(tmp_path):
    from sr_platform.core.generate import write_event_files
    path = write_event_files(tmp_path, years=0.05, instruments=1, fmt="parquet")[0]
    f, _ = event_files.scan_event_file(path)
    (raw,) = f.chunks(100_000)
    assert validate_fast.fast_validate(raw.frame) is None
    assert as_lists(validate.validate(raw)) == as_lists(exact(raw))
    assert isinstance(raw.frame, pd.DataFrame)
