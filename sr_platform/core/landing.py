"""The landing directory: which event files are new since a cursor, and what they hold.

The cursor is bounded: it does not name every file ever seen. It holds
- `watermark`: the time (ns) SETTLE_NS before the previous scan began. A file whose change
  time (ctime: set by the kernel on every write, rename, copy or link, and never settable by
  users, unlike the mtime that `mv` and `cp -p` keep) is older than the watermark was in the
  directory at the previous scan and was examined then: it is not read again;
- `recent`: path -> signature (size and mtime) of the files changed since the watermark, so a
  file seen at the previous scan is not requested twice while its ctime is that recent;
- `dirs`: the directories that held event files at the previous scan. A directory not in it
  (moved in whole, with files whose ctimes are old) has all its files examined.
So each file is requested once; a file rewritten after its load gets a new ctime (and a new
signature) and is requested again as a new version. The cursor's size is bounded by the files
changed within SETTLE_NS of a scan and the directories holding event files, not by history.
SETTLE_NS covers a change made just before a scan and listed just after it, the kernel's
coarse clock, and modest clock skew of a network file system.
"""

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import loader
from .event_files import EventFileError
from .keys import Pair
from .settings import LANDING_DIR_ENV
from .text import printable

SETTLE_NS = 120 * 1_000_000_000
CURSOR_VERSION = 2


def signature(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def event_files(directory: Path) -> list[Path]:
    """Event files in the directory tree (see loader.find_event_files)."""
    return loader.find_event_files([directory]) if directory.is_dir() else []


def missing_reason(directory: Path) -> str | None:
    """Why `directory` cannot be the landing zone (it does not exist, or is not a directory),
    naming the variable that sets it; None when it is a directory."""
    if directory.is_dir():
        return None
    what = "is not a directory" if directory.exists() else "does not exist"
    return (f"the landing directory {printable(directory)} {what} (set by {LANDING_DIR_ENV}, "
            "default data/landing): create it or point the variable at the landing zone")


@dataclass
class Scan:
    new_files: dict[str, str]  # path -> signature
    pairs_by_file: dict[str, set[Pair]]
    refused: dict[str, str]  # path -> why it is not an event file
    cursor: str
    missing: str | None = None  # set when the directory is missing (nothing scanned)


@dataclass
class _Cursor:
    watermark: int | None = None  # None: every file is examined
    recent: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, text: str | None) -> "_Cursor":
        data = json.loads(text) if text else {}
        if data.get("v") != CURSOR_VERSION:  # none, or the first format: {path: signature}
            return cls(None, dict(data))
        return cls(data["watermark"], data["recent"], set(data["dirs"]))

    def dump(self) -> str:
        return json.dumps({"v": CURSOR_VERSION, "watermark": self.watermark,
                           "recent": self.recent, "dirs": sorted(self.dirs)}, sort_keys=True)


def _dirs_of(directory: Path, path: Path) -> list[str]:
    """The directories from `directory` down to `path`'s parent."""
    parents = [str(directory)]
    for part in path.relative_to(directory).parent.parts:
        parents.append(os.path.join(parents[-1], part))
    return parents


def scan(directory: Path, cursor: str | None, now_ns: int | None = None) -> Scan:
    """Files new or changed since the cursor (see the module's docstring), the pairs each
    holds, and the next cursor. A refused file (not an event file) is remembered like any
    other, so it is not read (nor reported) twice; a file that cannot even be stat'ed (a
    dangling link, a file gone meanwhile) has no signature to remember: it is reported on
    every scan until it is fixed or removed. A missing directory scans nothing, keeps the
    cursor and says why (`missing`)."""
    why = missing_reason(directory)
    if why:
        return Scan({}, {}, {}, cursor or "", missing=why)
    state = _Cursor.parse(cursor)
    began = time.time_ns() if now_ns is None else now_ns  # before the listing: see SETTLE_NS
    watermark = began - SETTLE_NS
    # a clock stepped back (below the cursor's watermark) lowers the bar: files changed since
    # are examined again (a repeated request loads nothing twice), rather than new files with
    # ctimes below a watermark from the future being skipped
    skip_below = None if state.watermark is None else min(state.watermark, watermark)
    nxt = _Cursor(watermark)
    new: dict[str, str] = {}
    pairs: dict[str, set[Pair]] = {}
    refused: dict[str, str] = {}
    for p in event_files(directory):
        dirs = _dirs_of(directory, p)
        nxt.dirs.update(dirs)
        try:
            st, lst = p.stat(), p.lstat()  # a link made now to an old file: the link's ctime
        except OSError as exc:
            refused[str(p)] = f"{printable(p)}: cannot read: {exc.strerror or exc}"
            continue
        sig = f"{st.st_size}:{st.st_mtime_ns}"
        changed = max(st.st_ctime_ns, lst.st_ctime_ns)
        if changed >= watermark:
            nxt.recent[str(p)] = sig
        if skip_below is not None and changed < skip_below and state.dirs.issuperset(dirs):
            continue  # in place and unchanged at the previous scan, which examined it
        if state.recent.get(str(p)) != sig:
            new[str(p)] = sig
    for path in new:
        try:
            pairs[path] = loader.file_pairs(Path(path))
        except EventFileError as exc:
            refused[path] = str(exc)
    return Scan(new, pairs, refused, nxt.dump())
