"""Reading event files (CSV or Parquet) into raw, untyped frames with their line numbers.

Everything is read as text (CSV) or as stored (Parquet) and nothing is coerced here, so the
validator sees exactly what the file said and can quote it back in the quarantine.
"""

import csv
import hashlib
from dataclasses import dataclass
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


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_header(path: Path, columns: list[str]) -> None:
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL + IGNORED]
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing columns {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown columns {', '.join(map(repr, unknown[:5]))}")
    if dupes:
        problems.append(f"repeated columns {', '.join(dupes)}")
    if problems:
        raise EventFileError(path, "; ".join(problems))


def _read_csv_strict(path: Path) -> pd.DataFrame:
    # skip_blank_lines=False keeps row i on physical line i + 2 (header on line 1)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                       skip_blank_lines=False, encoding="utf-8", engine="c")


def _read_csv_tolerant(path: Path) -> tuple[pd.DataFrame, list[tuple[int, dict, str]]]:
    """Slow path for files with ragged lines: every line with the wrong number of fields is
    set aside as malformed (with its line number) and the rest is kept."""
    rows, lines, malformed = [], [], []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        for fields in reader:
            line = reader.line_num
            if len(fields) == len(header) or not any(f.strip() for f in fields):
                rows.append(fields if len(fields) == len(header) else [""] * len(header))
                lines.append(line)
            else:
                malformed.append((line, {"fields": fields},
                                  f"expected {len(header)} fields, found {len(fields)}"))
    frame = pd.DataFrame(rows, columns=header, dtype=str)
    frame["_line"] = lines
    return frame, malformed


def read_event_file(path: Path) -> RawEvents:
    path = Path(path)
    if not path.is_file():
        raise EventFileError(path, "no such file")
    if path.stat().st_size == 0:
        raise EventFileError(path, "the file is empty")
    digest = sha256_of(path)
    malformed: list[tuple[int, dict, str]] = []
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for junk
            raise EventFileError(path, f"unreadable Parquet ({exc.__class__.__name__})") from None
        _check_header(path, list(frame.columns))
        frame = frame.reset_index(drop=True)
        frame["_line"] = frame.index + 1  # Parquet has no lines: 1-based row number
    else:
        try:
            with open(path, "rb") as fh:
                head = fh.read(4096)
            if b"\x00" in head:
                raise UnicodeDecodeError("utf-8", head, 0, 1, "NUL byte")
            try:
                frame = _read_csv_strict(path)
                frame["_line"] = frame.index + 2
            except pd.errors.ParserError:
                frame, malformed = _read_csv_tolerant(path)
        except (UnicodeDecodeError, pd.errors.EmptyDataError, csv.Error, StopIteration) as exc:
            raise EventFileError(path, f"not UTF-8 CSV text ({exc.__class__.__name__})") from None
        _check_header(path, [c for c in frame.columns if c != "_line"])
        # blank lines are not records
        data_cols = [c for c in frame.columns if c != "_line"]
        blank = (frame[data_cols] == "").all(axis=1)
        frame = frame[~blank].reset_index(drop=True)
    return RawEvents(path, digest, frame, malformed)
