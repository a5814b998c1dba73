"""The landing directory: which event files are new since a cursor, and what they hold."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import loader
from .event_files import EventFileError
from .keys import Pair


def landing_dir() -> Path:
    return Path(os.environ.get("SR_PLATFORM_LANDING_DIR", "data/landing")).resolve()


def signature(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def event_files(directory: Path) -> list[Path]:
    """Event files in the directory tree (see loader.find_event_files)."""
    return loader.find_event_files([directory]) if directory.is_dir() else []


@dataclass
class Scan:
    new_files: dict[str, str]  # path -> signature
    pairs_by_file: dict[str, set[Pair]]
    refused: dict[str, str]  # path -> why it is not an event file
    cursor: str


def scan(directory: Path, cursor: str | None) -> Scan:
    """Files whose signature is not in the cursor, the pairs each holds, and the next cursor
    (which records every file seen, refused ones included, so none is read twice)."""
    seen: dict[str, str] = json.loads(cursor) if cursor else {}
    new: dict[str, str] = {}
    pairs: dict[str, set[Pair]] = {}
    refused: dict[str, str] = {}
    for p in event_files(directory):
        try:
            sig = signature(p)
        except OSError as exc:  # a dangling link, a file gone meanwhile: report, go on
            refused[str(p)] = f"{p}: cannot read: {exc.strerror or exc}"
            continue
        if seen.get(str(p)) != sig:
            new[str(p)] = sig
    for path in new:
        try:
            pairs[path] = loader.file_pairs(Path(path))
        except EventFileError as exc:
            refused[path] = str(exc)
    return Scan(new, pairs, refused, json.dumps({**seen, **new}, sort_keys=True))
