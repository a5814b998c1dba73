"""Committed changes of events and level outcomes, in order, none missed (docs/realtime.md).

The database announces every committed change (sql/0009): a row of change_log with a gap-free
`seq` in commit order, and a NOTIFY on sr_events / sr_levels carrying the same fields as JSON.
A notification is only the wake-up: subscribe() LISTENs, then reads the log for rows after the
last seq it yielded, so a notification lost while disconnected costs nothing, and every change
is yielded exactly once, in seq order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from . import db

CHANNELS = {"events": "sr_events", "levels": "sr_levels"}  # channel -> NOTIFY channel
FETCH_ROWS = 1_000  # log rows read per query
HEARTBEAT_S = 5.0  # with no notification, read the log (and so check the connection) this often
BACKOFF_S = (0.1, 5.0)  # reconnect: first wait, longest wait (doubling)
_COLUMNS = ("seq", "channel", "op", "instrument", "granularity", "rows", "first", "last",
            "load_id", "breached", "tested")


@dataclass(frozen=True)
class Change:
    """One committed change of one (instrument, granularity): `rows` rows with
    event_creation_date from `first` to `last`. channel 'events' (op insert, update or
    delete) or 'levels' (op update; `breached`: levels that became breached, `tested`: levels
    whose test count rose). `load_id`: the load_log row of the load that made it, if any."""

    seq: int
    channel: str
    op: str
    instrument: str
    granularity: str
    rows: int
    first: datetime
    last: datetime
    load_id: int | None = None
    breached: int | None = None
    tested: int | None = None

    def to_json(self) -> dict:
        """The NOTIFY payload's keys (None values left out) plus `channel`; times ISO, UTC."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        for k in ("first", "last"):
            out[k] = _iso(out[k])
        return out

    @classmethod
    def from_payload(cls, channel: str, payload: str) -> Change:
        """A NOTIFY payload of sr_events / sr_levels (channel: 'events' or 'levels')."""
        d = json.loads(payload)
        d["first"], d["last"] = (datetime.fromisoformat(d[k]) for k in ("first", "last"))
        return cls(channel=channel, **d)


class ChangesPruned(RuntimeError):
    """The log no longer holds the changes after the requested seq (retention pruned them)."""


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _channels(channels: str | Iterable[str]) -> tuple[str, ...]:
    names = (channels,) if isinstance(channels, str) else tuple(channels)
    bad = [c for c in names if c not in CHANNELS]
    if bad or not names:
        raise ValueError(f"channels: expected some of {sorted(CHANNELS)}, got {names!r}")
    return tuple(sorted(set(names)))


def read_changes(conn: psycopg.Connection, after: int, channels: Iterable[str] = tuple(CHANNELS),
                 limit: int = FETCH_ROWS) -> list[Change]:
    """The logged changes with seq > `after` on `channels`, in seq order (at most `limit`)."""
    rows = conn.execute(sql.SQL(
        "SELECT {} FROM change_log WHERE seq > %s AND channel = ANY(%s) ORDER BY seq LIMIT %s"
    ).format(sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))),
        (after, list(channels), limit)).fetchall()
    return [Change(*r) for r in rows]


def last_seq(conn: psycopg.Connection) -> int:
    """The newest committed seq (0 before the first change), pruned or not."""
    return conn.execute("SELECT seq FROM change_seq").fetchone()[0]


def check_retained(conn: psycopg.Connection, after: int) -> None:
    """Raise ChangesPruned if changes after `after` were pruned from the log already."""
    oldest = conn.execute("SELECT min(seq) FROM change_log").fetchone()[0]
    if oldest is not None and oldest > after + 1:
        raise ChangesPruned(
            f"changes {after + 1} to {oldest - 1} were pruned from the change log (it keeps "
            f"SR_PLATFORM_RETENTION_CHANGE_LOG_DAYS days): resume from a full read instead")


def subscribe(channels: str | Iterable[str] = ("events", "levels"), since: int | None = None,
              url: str | None = None, *, role: str = db.READER_ROLE,
              heartbeat: float = HEARTBEAT_S,
              backoff: tuple[float, float] = BACKOFF_S) -> Iterator[Change]:
    """Every committed change on `channels` after seq `since` (None: from now on), each exactly
    once, in seq order, forever. Its own connection (as the reader by default); LISTEN first,
    then the log from `since` (a replay), then live. A lost connection or server is retried
    with a doubling back-off, resuming after the last seq yielded. Raises ChangesPruned when
    the log no longer holds the changes after `since` (or after the last one yielded)."""
    names = _channels(channels)
    last = since
    wait = backoff[0]
    while True:
        try:
            with db.connect(url, role=role, autocommit=True) as conn:
                for name in names:  # before reading the log: nothing committed after is missed
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNELS[name])))
                if last is None:
                    last = last_seq(conn)
                check_retained(conn, last)
                wait = backoff[0]
                while True:
                    # every channel's rows, so `last` also passes the others' (a resume then
                    # never reports a pruned gap that held none of this subscription's changes)
                    batch = read_changes(conn, last)
                    for change in batch:
                        last = change.seq
                        if change.channel in names:
                            yield change
                    if len(batch) == FETCH_ROWS:
                        continue
                    # any notification (or none within `heartbeat`): read the log again
                    for _ in conn.notifies(timeout=heartbeat, stop_after=1):
                        pass
                    for _ in conn.notifies(timeout=0):  # the rest of a burst: one read
                        pass
        except psycopg.OperationalError:
            time.sleep(wait)
            wait = min(wait * 2, backoff[1])
