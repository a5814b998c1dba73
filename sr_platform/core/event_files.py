"""Reading event files (CSV or Parquet) into raw, untyped frames with their line numbers.

Everything is read as text (CSV) or as stored (Parquet) and nothing is coerced here, so the
validator sees exactly what the file said and can quote it back in the quarantine.
"""

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

REQUIRED = (
    "event_creation_date", "granularity", "instrument", "event_price_level", "atr_at_event",
    "new_resistance_negative_rebound", "new_resistance_negative_rebound_in_atr",
)
OPTIONAL = ("original_event_id", "event_type", "volume_at_event", "day_of_week", "hour_of_day")
IGNORED = ("created_at", "updated_at")  # database-managed: accepted in exports, never loaded
SUFFIXES = (".csv", ".parquet", ".pq")


class EventFileError(ValueError):
    """The file is not an event file at all; nothing of it is loaded."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: not an event file: {problem}")
        self.path = path


@dataclass
class RawEvents:
    path: Path
    sha256: str
    frame: pd.DataFrame  # one column per file column, plus `_line`
    malformed: list[tuple[int, dict, str]]  # (line, raw record, reason) rows unparseable as CSV
    ignored_columns: list[str] = field(default_factory=list)  # not in the contract: not loaded


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_header(path: Path, columns: list[str]) -> list[str]:
    """Refuse a header without every required column, or with a column twice; return the
    columns the contract does not know (ignored, and reported, so good rows are not lost to an
    extra column)."""
    missing = [c for c in REQUIRED if c not in columns]
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing columns {', '.join(missing)}")
    if dupes:
        problems.append(f"repeated columns {', '.join(dupes)}")
    if problems:
        raise EventFileError(path, "; ".join(problems))
    return [c for c in columns if c not in REQUIRED + OPTIONAL + IGNORED]


def _record_lines(data: bytes) -> list[int]:
    """1-based numbers of the non-blank physical lines (the header's included)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [i + 1 for i, line in enumerate(lines) if line.strip(b"\r")]


def _read_csv_fast(data: bytes) -> pd.DataFrame | None:
    """pandas' C parser, when the file's shape proves it safe: every non-blank physical line one
    record with exactly the header's field count. Quoted fields, ragged or short lines and
    comma-only lines fail that proof (by counting) and go to the exact reader."""
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_filter=False,
                        skip_blank_lines=True, encoding="utf-8-sig", engine="c")
    lines = _record_lines(data)
    if (len(lines) != len(frame) + 1
            or data.count(b",") != (frame.shape[1] - 1) * (len(frame) + 1)):
        return None
    frame["_line"] = lines[1:]
    return frame


def _read_csv_exact(data: bytes) -> tuple[pd.DataFrame, list[tuple[int, dict, str]]]:
    """The csv module, record by record: each record keeps the physical line it starts on; a
    record with the wrong number of fields is set aside as malformed; blank lines are skipped."""
    rows, lines, malformed = [], [], []
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    header = next(reader)
    start = reader.line_num + 1
    for fields in reader:
        if not fields:  # a blank line
            start = reader.line_num + 1
            continue
        if len(fields) == len(header):
            rows.append(fields)
            lines.append(start)
        else:
            malformed.append((start, {"fields": fields},
                              f"expected {len(header)} fields, found {len(fields)}"))
        start = reader.line_num + 1
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    frame["_line"] = lines
    return frame, malformed


def _header(data: bytes) -> list[str]:
    return next(csv.reader(io.StringIO(data[:65536].decode("utf-8-sig", "replace")
                                       .split("\n", 1)[0])), [])


def read_event_file(path: Path) -> RawEvents:
    path = Path(path)
    if not path.is_file():
        raise EventFileError(path, "no such file")
    if path.stat().st_size == 0:
        raise EventFileError(path, "the file is empty")
    malformed: list[tuple[int, dict, str]] = []
    if path.suffix.lower() in (".parquet", ".pq"):
        digest = sha256_of(path)
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for junk
            raise EventFileError(path, f"unreadable Parquet ({exc.__class__.__name__})") from None
        ignored = _check_header(path, [str(c) for c in frame.columns])
        frame = frame.drop(columns=ignored).reset_index(drop=True)
        frame["_line"] = frame.index + 1  # Parquet has no lines: 1-based row number
        return RawEvents(path, digest, frame, malformed, ignored)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        if b"\x00" in data[:65536]:
            raise UnicodeDecodeError("utf-8", data[:1], 0, 1, "NUL byte")
        data.decode("utf-8")  # refuse non-UTF-8 files whole, before any parsing
        header = _header(data)
        if not any(h.strip() for h in header):
            raise EventFileError(path, "no header row (the first line is empty)")
        ignored = _check_header(path, [h.strip() for h in header])
        frame = None
        if b'"' not in data:
            try:
                frame = _read_csv_fast(data)
            except pd.errors.ParserError:
                frame = None
        if frame is None:
            frame, malformed = _read_csv_exact(data)
    except (UnicodeDecodeError, pd.errors.EmptyDataError, csv.Error, StopIteration) as exc:
        raise EventFileError(path, f"not UTF-8 CSV text ({exc.__class__.__name__})") from None
    frame.columns = [c.strip() if c != "_line" else c for c in frame.columns]
    return RawEvents(path, digest, frame.drop(columns=ignored), malformed, ignored)


