"""Reading event files (CSV, gzip-compressed CSV or Parquet) as a stream of raw, untyped
chunks with their line numbers, in bounded memory whatever the file's size.

Everything is read as text (CSV) or as stored (Parquet) and nothing is coerced here, so the
validator sees exactly what the file said and can quote it back in the quarantine.

`scan_event_file()` is the first, cheap pass: it hashes the file as stored, refuses a file
that is not UTF-8 CSV text or readable Parquet, and collects the (instrument, granularity)
pairs from those two columns only. `EventFile.chunks()` is the second pass, CHUNK_ROWS records
at a time.
"""

import codecs
import csv
import gzip
import hashlib
import io
import re
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .keys import GRANULARITIES, INSTRUMENT_RE, Pair
from .text import printable

REQUIRED = (
    "event_creation_date", "granularity", "instrument", "event_price_level", "atr_at_event",
    "new_resistance_negative_rebound", "new_resistance_negative_rebound_in_atr",
)
OPTIONAL = ("original_event_id", "event_type", "volume_at_event", "day_of_week", "hour_of_day")
IGNORED = ("created_at", "updated_at")  # database-managed: accepted in exports, never loaded
SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
PARQUET_SUFFIXES = (".parquet", ".pq")
CHUNK_ROWS = 50_000  # records read, validated and written at a time (tests make it small)
KEY_COLUMNS = ["instrument", "granularity"]
READ_BYTES = 1 << 22  # bytes read at a time when cutting a file into blocks of lines
ARROW_THREADS = False  # pyarrow's CSV parser on one core: the other one runs PostgreSQL
_INSTRUMENT = re.compile(INSTRUMENT_RE)


class EventFileError(ValueError):
    """The file is not an event file at all (or cannot be read); nothing of it is loaded."""

    def __init__(self, path: Path, problem: str, what: str = "not an event file") -> None:
        super().__init__(f"{printable(path)}: {what}: {problem}")  # safe to print or log
        self.path = path


@dataclass
class RawEvents:
    """One chunk of a file's records."""

    path: Path
    sha256: str
    frame: pd.DataFrame  # one column per file column, plus `_line`
    malformed: list[tuple[int, dict, str]]  # (line, raw record, reason) rows unparseable as CSV
    ignored_columns: list[str] = field(default_factory=list)  # not in the contract: not loaded


@dataclass
class FileScan:
    sha256: str  # of the file as stored (compressed, for .csv.gz)
    pairs: set[Pair]  # well-formed (instrument, granularity) pairs with at least one row
    ignored_columns: list[str]


def event_suffix(path: Path) -> str | None:
    """The event-file suffix the name ends with (.csv.gz counts as one), else None."""
    name = path.name.lower()
    return next((s for s in SUFFIXES if name.endswith(s)), None)


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


class _ObservedReader(io.RawIOBase):
    """A readable stream that shows every block read through it to `see` (hashing, UTF-8
    checking) on its way to the reader."""

    def __init__(self, inner: BinaryIO, see: Callable[[bytes], None]) -> None:
        self.inner, self.see = inner, see

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.inner.read(len(buf))
        self.see(data)
        buf[:len(data)] = data
        return len(data)


class _Utf8Check:
    """Refuses non-UTF-8 text block by block (an incremental decoder keeps sequences cut at a
    block boundary). A NUL byte is valid UTF-8: a binary file is refused by its header line
    (_csv_header); a NUL inside a field is the row's fault, quarantined by the validator
    (rule nul_byte), not the file's."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")()

    def __call__(self, data: bytes) -> None:
        self.decoder.decode(data, final=not data)


class _LineBlocks:
    """A text stream cut into blocks of `rows` physical lines (b"\n"-terminated, as iterating
    the stream counts them; the last block may be shorter and unterminated), read in big
    pieces. `rest()` gives the lines after the last block handed out."""

    def __init__(self, fh: BinaryIO, rows: int) -> None:
        self.fh, self.rows = fh, rows
        self.piece, self.ends, self.at = b"", np.zeros(0, np.int64), 0  # unread: piece[at:]
        self.used = 0  # newlines of `ends` consumed

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        parts: list[bytes] = []
        lines = 0  # complete lines in parts
        while True:
            if self.used == len(self.ends):
                parts.append(self.piece[self.at:])
                self.piece = self.fh.read(READ_BYTES)
                if not self.piece:
                    tail = b"".join(parts)
                    if tail:
                        yield tail, lines + (not tail.endswith(b"\n"))
                    return
                self.at, self.used = 0, 0
                self.ends = np.flatnonzero(np.frombuffer(self.piece, np.uint8) == 10)
            take = min(self.rows - lines, len(self.ends) - self.used)
            self.used += take
            lines += take
            if lines == self.rows:
                end = int(self.ends[self.used - 1]) + 1
                parts.append(self.piece[self.at:end])
                self.at = end
                yield b"".join(parts), lines
                parts, lines = [], 0

    def rest(self) -> Iterator[bytes]:
        """The lines after the blocks handed out (call instead of iterating further)."""
        head = self.piece[self.at:]
        if head and not head.endswith(b"\n"):
            head += self.fh.readline()
        self.piece, self.at = b"", 0
        return chain(io.BytesIO(head), self.fh)


def _plain_block(data: bytes) -> bool:
    """Text the pyarrow path reads exactly as the csv module would: no quotes, no carriage
    return but in CRLF, no NUL, no byte order mark at the start."""
    return (b'"' not in data and b"\x00" not in data and not data.startswith(b"\xef\xbb\xbf")
            and data.count(b"\r") == data.count(b"\r\n"))


def _record_offsets(data: bytes) -> np.ndarray:
    """Offsets (0-based physical line numbers in the block) of the lines that are not blank
    ('' or a lone CR before the newline)."""
    buf = np.frombuffer(data, np.uint8)
    nl = np.flatnonzero(buf == 10)
    ends = nl if data.endswith(b"\n") or not data else np.append(nl, len(data))
    starts = np.concatenate([[0], nl + 1])[:len(ends)]
    length = ends - starts
    first = buf[np.minimum(starts, max(len(buf) - 1, 0))] if len(buf) else starts
    blank = (length == 0) | ((length == 1) & (first == 13))
    return np.flatnonzero(~blank)


class EventFile:
    """An event file, opened for streaming: its header is checked on construction."""

    def __init__(self, path: Path) -> None:
        self.path = path = Path(path)
        self.parquet = event_suffix(path) in PARQUET_SUFFIXES
        try:
            if not path.exists() and not path.is_symlink():
                raise EventFileError(path, "no such file")
            open(path, "rb").close()  # the OS's reason first: permission, dangling link, folder
            if path.stat().st_size == 0:
                raise EventFileError(path, "the file is empty")
            self.columns = self._parquet_columns() if self.parquet else self._csv_header()
        except OSError as exc:  # permission denied, a file that vanished, I/O errors
            raise EventFileError(path, exc.strerror or str(exc), "cannot read") from None
        self.ignored_columns = _check_header(path, self.columns)
        self.sha256 = ""  # set by scan_event_file()

    # -- opening --------------------------------------------------------------------------

    def _open(self, stack: ExitStack, see_raw=None, see_text=None) -> BinaryIO:
        """The file's text bytes (decompressed for .csv.gz), with the optional taps."""
        fh: BinaryIO = stack.enter_context(open(self.path, "rb"))
        if see_raw:
            fh = stack.enter_context(io.BufferedReader(_ObservedReader(fh, see_raw), 1 << 20))
        if event_suffix(self.path) == ".csv.gz":
            fh = stack.enter_context(gzip.GzipFile(fileobj=fh, mode="rb"))
        if see_text:
            fh = stack.enter_context(io.BufferedReader(_ObservedReader(fh, see_text), 1 << 20))
        return fh

    def _csv_header(self) -> list[str]:
        with ExitStack() as stack:
            try:
                first = self._open(stack).readline(1 << 20)
                if b"\x00" in first:  # a binary file
                    raise UnicodeDecodeError("utf-8", first[:1], 0, 1, "NUL byte")
                text = first.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise EventFileError(self.path, f"not UTF-8 CSV text ({exc.__class__.__name__})"
                                     ) from None
            except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
                raise EventFileError(self.path, f"unreadable gzip ({exc.__class__.__name__})"
                                     ) from None
        header = next(csv.reader([text.rstrip("\r\n")]), [])
        if not any(h.strip() for h in header):
            raise EventFileError(self.path, "no header row (the first line is empty)")
        return [h.strip() for h in header]

    def _parquet_columns(self) -> list[str]:
        try:
            names = pq.ParquetFile(self.path).schema_arrow.names
        except Exception as exc:  # pyarrow raises many types for junk
            raise EventFileError(self.path, f"unreadable Parquet ({exc.__class__.__name__})"
                                 ) from None
        # pandas' stored index is metadata, not a column of the file's contract
        return [str(c) for c in names if not str(c).startswith("__index_level_")]

    # -- reading --------------------------------------------------------------------------

    def chunks(self, rows: int | None = None, columns: list[str] | None = None,
               see_raw=None, see_text=None) -> Iterator[RawEvents]:
        """The file's records, `rows` (CHUNK_ROWS) at a time, with their physical line numbers
        (1-based row numbers for Parquet); `columns` restricts the frame to those."""
        rows = rows or CHUNK_ROWS
        keep = [c for c in self.columns if c not in self.ignored_columns
                and (columns is None or c in columns)]
        try:
            if self.parquet:
                yield from self._parquet_chunks(rows, keep, see_raw)
            else:
                yield from self._csv_chunks(rows, keep, see_raw, see_text)
        except UnicodeDecodeError as exc:
            raise EventFileError(self.path, f"not UTF-8 CSV text ({exc.__class__.__name__})"
                                 ) from None
        except csv.Error as exc:
            raise EventFileError(self.path, f"not UTF-8 CSV text ({exc.__class__.__name__})"
                                 ) from None
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise EventFileError(self.path, f"unreadable gzip ({exc.__class__.__name__})"
                                 ) from None
        except OSError as exc:
            raise EventFileError(self.path, exc.strerror or str(exc), "cannot read") from None

    def _raw(self, frame: pd.DataFrame, malformed: list) -> RawEvents:
        return RawEvents(self.path, self.sha256, frame, malformed, self.ignored_columns)

    def _parquet_chunks(self, rows: int, keep: list[str], see_raw) -> Iterator[RawEvents]:
        if see_raw:  # Parquet is read by column chunks, not front to back: hash it apart
            with open(self.path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    see_raw(block)
        try:
            pf = pq.ParquetFile(self.path)
            batches = pf.iter_batches(batch_size=rows, columns=keep)
            line = 1
            for batch in batches:
                frame = batch.to_pandas()
                frame["_line"] = range(line, line + len(frame))  # Parquet has no lines
                line += len(frame)
                yield self._raw(frame, [])
        except Exception as exc:
            raise EventFileError(self.path, f"unreadable Parquet ({exc.__class__.__name__})"
                                 ) from None

    def _csv_chunks(self, rows: int, keep: list[str], see_raw, see_text
                    ) -> Iterator[RawEvents]:
        """Blocks of `rows` physical lines go through pyarrow's CSV parser when the block is
        plain text (_pyarrow_block), else through pandas' C parser when the block proves safe
        (_pandas_block); from the first block with a quote on, the csv module reads the rest
        record by record (a quoted field may run across block boundaries)."""
        with ExitStack() as stack:
            fh = self._open(stack, see_raw, see_text)
            fh.readline()  # the header, already checked
            blocks = _LineBlocks(fh, rows)
            lineno = 2  # physical line number of the next line
            for data, count in blocks:
                if b'"' in data:
                    yield from self._csv_module_records(
                        chain(io.BytesIO(data), blocks.rest()), lineno, rows, keep)
                    break
                frame = self._pyarrow_block(data, lineno, keep)
                if frame is None:
                    block = io.BytesIO(data).readlines()
                    frame = self._pandas_block(data, block, lineno, keep)
                if frame is not None:
                    yield self._raw(frame, [])
                else:
                    yield from self._csv_module_records(iter(block), lineno, rows, keep)
                lineno += count
            if see_raw or see_text:  # pass every byte through the taps
                for _ in iter(lambda: fh.read(1 << 20), b""):
                    pass

    def _arrow(self, data: bytes, columns: list[str]) -> pa.Table:
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=self.columns, use_threads=ARROW_THREADS,
                                           block_size=max(1 << 20, len(data) // 8)),
            parse_options=pacsv.ParseOptions(quote_char=False, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(self.columns, pa.string()), include_columns=columns,
                strings_can_be_null=False, check_utf8=True))

    def _pyarrow_block(self, data: bytes, lineno: int, keep: list[str]) -> pd.DataFrame | None:
        """pyarrow's parser on a plain block (_plain_block) whose every non-blank line is one
        record of the header's field count, else None."""
        if not _plain_block(data):
            return None
        try:
            table = self._arrow(data, keep)
        except (pa.ArrowInvalid, ValueError):
            return None
        records = _record_offsets(data)
        if len(records) != table.num_rows or (
                data.count(b",") != (len(self.columns) - 1) * table.num_rows):
            return None
        frame = table.to_pandas()
        frame["_line"] = records + lineno
        return frame

    def _pandas_block(self, data: bytes, block: list[bytes], lineno: int, keep: list[str]
                    ) -> pd.DataFrame | None:
        """pandas' C parser, when the block's shape proves it safe: every non-blank physical
        line one record with exactly the header's field count. Ragged or short lines and
        comma-only lines fail that proof (by counting) and go to the csv module
        (_csv_module_records)."""
        n = len(self.columns)
        if b"\x00" in data:  # the C parser's handling of NUL is its own: the csv module's is exact
            return None
        try:
            frame = pd.read_csv(io.BytesIO(data), header=None, names=self.columns,
                                usecols=keep, index_col=False, dtype=str,
                                keep_default_na=False, na_filter=False, skip_blank_lines=True,
                                encoding="utf-8", engine="c")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError):
            return None
        records = [lineno + i for i, line in enumerate(block) if line.strip(b"\r\n")]
        if len(records) != len(frame) or data.count(b",") != (n - 1) * len(frame):
            return None
        frame["_line"] = records
        return frame

    def _csv_module_records(self, lines: Iterator[bytes], lineno: int, rows: int, keep: list[str]
               ) -> Iterator[RawEvents]:
        """The csv module, record by record: each record keeps the physical line it starts on;
        a record with the wrong number of fields is set aside as malformed; blank lines are
        skipped."""
        n = len(self.columns)
        reader = csv.reader(line.decode("utf-8") for line in lines)
        records: list[list[str]] = []
        numbers: list[int] = []
        malformed: list[tuple[int, dict, str]] = []
        start = lineno
        for fields in reader:
            if fields:
                if len(fields) == n:
                    records.append(fields)
                    numbers.append(start)
                else:
                    malformed.append((start, {"fields": fields},
                                      f"expected {n} fields, found {len(fields)}"))
                if len(records) + len(malformed) >= rows:
                    yield self._raw(self._frame(records, numbers, keep), malformed)
                    records, numbers, malformed = [], [], []
            start = lineno + reader.line_num
        if records or malformed:
            yield self._raw(self._frame(records, numbers, keep), malformed)

    def _frame(self, records: list[list[str]], numbers: list[int], keep: list[str]
               ) -> pd.DataFrame:
        frame = pd.DataFrame(records, columns=self.columns, dtype=str)[keep]
        frame["_line"] = numbers
        return frame


def _add_pairs(pairs: set[Pair], keys) -> None:
    for instrument, granularity in keys:
        i, g = str(instrument).strip(), str(granularity).strip()
        if g in GRANULARITIES and _INSTRUMENT.match(i):
            pairs.add((i, g))


def scan_event_file(path: Path) -> tuple[EventFile, FileScan]:
    """The first pass: check the header, hash the file as stored, refuse non-UTF-8 text, and
    collect the well-formed (instrument, granularity) pairs from those two columns only.
    Raises EventFileError when the file is not an event file."""
    f = EventFile(path)
    digest = hashlib.sha256()
    check = None if f.parquet else _Utf8Check()
    pairs: set[Pair] = set()
    for chunk in f.chunks(columns=KEY_COLUMNS, see_raw=digest.update, see_text=check):
        _add_pairs(pairs, chunk.frame[KEY_COLUMNS].drop_duplicates().itertuples(index=False))
    if check:
        try:
            check(b"")
        except UnicodeDecodeError as exc:
            raise EventFileError(f.path, f"not UTF-8 CSV text ({exc.__class__.__name__})"
                                 ) from None
    f.sha256 = digest.hexdigest()
    return f, FileScan(f.sha256, pairs, f.ignored_columns)
