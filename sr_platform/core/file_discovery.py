"""Which files a load reads: event files named, or found in named folders, and the
(instrument, granularity) pairs a file holds (a pre-scan of those two columns)."""

from collections.abc import Iterable
from pathlib import Path

from .event_files import event_suffix, scan_event_file
from .keys import Pair


def find_event_files(paths: Iterable[Path]) -> list[Path]:
    """Files named on the command line, and event files (by suffix: .csv, .csv.gz, .parquet,
    .pq) inside named folders; dot-files inside folders are skipped (files being written should
    be moved in when done)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            # symlinks too, dangling ones included: they are reported, not silently skipped
            out.extend(sorted(q for q in p.rglob("*") if (q.is_file() or q.is_symlink())
                              and event_suffix(q) and not q.name.startswith(".")))
        else:
            out.append(p)
    return out


def file_pairs(path: Path) -> set[Pair]:
    """The well-formed (instrument, granularity) pairs a file has rows for: a streaming pre-scan
    of two columns, not a validation (a pair whose rows are all bad still gets its run, which
    quarantines them). Raises EventFileError when the file is not an event file."""
    return scan_event_file(path)[1].pairs
