"""The database side of one file's load transaction, chunk by chunk: skip the rows stored
already, quarantine the bad ones and the reused or repeated ids, COPY the rest into each
pair's leaves (events, then their level rows), and count what happened (LoadResult)."""

from collections import Counter
from collections.abc import Callable

import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from .copy_encoding import copy_frame
from .duplicate_ids import ID_USED, IdProbe, KnownId, id_used_reason
from .event_files import RawEvents
from .ids import level_ids
from .keys import EVENT_COLUMNS, EVENTS, LEVEL_COLUMNS, LEVELS, Pair, leaf_name
from .load_connection import SchemaFeatures
from .load_result import LoadResult
from .load_timing import PhaseTimer
from .partition_ddl import analyze_leaves, stale_leaves
from .rejections import DUPLICATE_IN_FILE, Rejected, Validated, duplicate_reason, raw_record

RULE_LINES_KEPT = 5  # first lines kept per rule broken, for the load summary


def quarantine(conn: psycopg.Connection, source: str, sha: str,
               rejected: list[Rejected]) -> None:
    """Store the bad rows in rejected_events (idempotent on (file hash, line))."""
    if not rejected:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO rejected_events (source, source_sha256, line_number, raw_record, "
            "reasons) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (source_sha256, line_number) DO NOTHING",
            [(source, sha, r.line, Jsonb(r.raw), r.reasons) for r in rejected])


class FileTransaction:
    """The database side of one file's load transaction, chunk by chunk."""

    def __init__(self, conn: psycopg.Connection, schema: SchemaFeatures, result: LoadResult,
                 pair: Pair | None, pairs: list[Pair], staged: set[Pair],
                 tuples: dict[Pair, float], source: str, sha256: str,
                 progress: Callable[[int], None] | None, timer: PhaseTimer,
                 trusted: set[Pair] | None = None) -> None:
        self.conn, self.schema, self.result, self.pair = conn, schema, result, pair
        self.timer, self.source, self.sha256, self.progress = timer, source, sha256, progress
        self.pairs, self.staged = pairs, staged
        # staged pairs whose rows skip the per-chunk id checks (see load_file); a file of new
        # pairs only (a backfill) skips them without looking at its rows' keys
        self.trusted = {f"{i}/{g}" for i, g in trusted or ()}
        self.all_trusted = bool(trusted) and set(pairs) <= set(trusted)
        # existing leaves: the planner's row estimate, and rows added since (ANALYZE policy)
        self.tuples = tuples
        self.pending: Counter = Counter()
        self.ids = IdProbe(conn, schema, pair, staged)

    def in_slice(self, r: Rejected) -> bool:
        return self.pair is None or (str(r.raw.get("instrument", "")).strip(),
                                     str(r.raw.get("granularity", "")).strip()) == self.pair

    def chunk(self, raw: RawEvents, checked: Validated) -> None:
        good, rejected = checked.good, list(checked.rejected)
        duplicate = pd.Series(False, index=good.index)
        to_check = good
        if self.all_trusted:
            to_check = good.iloc[:0]
        elif self.trusted and len(good):
            to_check = good[~(good["instrument"] + "/" + good["granularity"]
                              ).isin(self.trusted)]
        if len(to_check):
            good, duplicate = self._screen_known_ids(raw, good, to_check, rejected)
            self.timer("dedupe")
        if self.pair is not None:
            mine = (good["instrument"] == self.pair[0]) & (good["granularity"] == self.pair[1])
            good, duplicate = good[mine], duplicate[mine]
            self.result.ids.update(good["original_event_id"])
        fresh = good[~duplicate.to_numpy()]
        self._count(len(good), len(fresh), [r for r in rejected if self.in_slice(r)])
        if len(fresh):
            self.write(fresh)
        # quarantine every bad row of the file (also those of other slices: the insert is
        # idempotent, and rows with no valid pair belong to no slice)
        quarantine(self.conn, self.source, self.sha256, sorted(rejected, key=lambda r: r.line))
        self.timer("quarantine")

    def _screen_known_ids(self, raw: RawEvents, good: pd.DataFrame, to_check: pd.DataFrame,
                          rejected: list[Rejected]) -> tuple[pd.DataFrame, pd.Series]:
        """(the good rows left, which of them are stored already under the same key); rows
        repeating an earlier id of the file, or reusing an id stored under another key, are
        added to `rejected` and dropped."""
        known = self.ids.known(to_check)
        # already stored under the same key (a whole reload: every row), vectorised
        duplicate = good["_line"].isin([k.line for k in known if k.stored_same])
        conflicts = [k for k in known if not k.stored_same]
        if not conflicts:
            return good, duplicate
        by_line = pd.Series(good.index, index=good["_line"].to_numpy())
        raw_pos = pd.Series(range(len(raw.frame)), index=raw.frame["_line"].to_numpy())
        drop = []
        for k in conflicts:
            i = by_line[k.line]
            reason = self._conflict_reason(k, good.loc[i])
            if reason is not None:
                rejected.append(Rejected(k.line, raw_record(raw.frame, raw_pos[k.line]),
                                         [reason[1]], [reason[0]]))
                drop.append(i)
        if drop:
            good, duplicate = good.drop(index=drop), duplicate.drop(index=drop)
        return good, duplicate

    def _conflict_reason(self, k: KnownId, row: pd.Series) -> tuple[str, str] | None:
        """(rule, reason) of a row whose id the file repeats or the registry holds under
        another key; None for a reused id of a row outside this slice."""
        if k.first_line is not None:
            return DUPLICATE_IN_FILE, duplicate_reason(k.first_line, row["original_event_id"])
        if self.pair is None or (row["instrument"], row["granularity"]) == self.pair:
            return ID_USED, id_used_reason(k.instrument, k.granularity, k.ts)
        return None

    def _count(self, good: int, fresh: int, in_slice: list[Rejected]) -> None:
        result = self.result
        result.rows_read += good + len(in_slice)
        result.duplicates += good - fresh
        result.rejected += len(in_slice)
        for r in sorted(in_slice, key=lambda r: r.line):
            result.reasons.update(r.rules)
            for rule, reason in zip(r.rules, r.reasons, strict=True):
                result.rule_reasons.setdefault(rule, reason)
                if len(lines := result.rule_lines.setdefault(rule, [])) < RULE_LINES_KEPT:
                    lines.append(r.line)

    def write(self, fresh: pd.DataFrame) -> None:
        """COPY the rows into each pair's leaves: events, then (after ANALYZE where an
        existing events leaf grew materially, see stale_leaves) their level rows."""
        conn, result = self.conn, self.result
        groups = fresh.groupby(["instrument", "granularity"], sort=True).indices
        parts = {}
        for p, idx in groups.items():
            part = fresh.take(idx)
            parts[p] = part
            result.pairs[p] = result.pairs.get(p, 0) + len(part)
            copy_frame(conn, leaf_name(EVENTS, p), part, EVENT_COLUMNS, self.progress,
                       freeze=p in self.staged)
            if p not in self.staged:
                self.pending[p] += len(part)
        self.timer("copy events")
        stale = stale_leaves(self.tuples, self.pending)
        analyze_leaves(conn, stale)
        for p in stale:
            self.tuples[p] = max(self.tuples[p], 0) + self.pending.pop(p)
        self.timer("analyze")
        for p, part in parts.items():
            if p not in self.staged:  # a staged leaf's levels are written at attach
                self._copy_levels(p, part)
        self.timer("copy levels")
        result.loaded += len(fresh)

    def _copy_levels(self, p: Pair, part: pd.DataFrame) -> None:
        if self.schema.level_ids:
            copy_frame(self.conn, leaf_name(LEVELS, p),
                       part.assign(id=level_ids(part["original_event_id"])),
                       ("id", *LEVEL_COLUMNS))
        else:
            copy_frame(self.conn, leaf_name(LEVELS, p), part, LEVEL_COLUMNS)
