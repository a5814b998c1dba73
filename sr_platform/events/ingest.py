"""The ingest_landing_files job (its one op: ingest_files): one run per landing-sensor tick.

The run loads each of the tick's files ONCE (whole, one transaction per file, the loader that
`sr-platform load` uses), then refreshes the levels and features of every (instrument,
granularity) the files hold and reports each of those partitions as materialized for
new_resistance_events, support_and_resistance_master and event_features, as a run of the
partitioned assets would. Per-partition work (levels, features, the partition's statistics)
runs in a small thread pool, and starts for a partition as soon as the last file holding it is
loaded (the sensor's pre-scan says which files hold which partitions), while later files load.

The events asset's checks are reported once per run, over all its partitions (see _checks).
The run holds a pooled connection to Dagster's storage while it reports
(_hold_storage_connections).

Backfills and single-partition runs still go through the partitioned assets (load_events job):
both paths use the same loader, deduplicate by original_event_id and are idempotent.
"""

import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psycopg
from psycopg import sql

from ..core import db, landing, loader
from ..core.catalog import catch_all_rows
from ..core.features import refresh_features
from ..core.keys import Pair
from ..core.levels import refresh_levels
from ..resources import PostgresResource
from .assets import (
    CHECK_CATCH_ALL,
    CHECK_COUNTS,
    CHECK_REBOUND,
    CHECK_REJECTED,
    OUTAGE_RETRIES,
    OUTAGE_RETRY_SECONDS,
    REBOUND_MISMATCH,
    event_features,
    new_resistance_events,
    support_and_resistance_master,
)
from .partitions import event_partitions, instruments, partition_key
from .resources import LandingZone

PAIR_WORKERS = 2  # partitions refreshed at once, while the next files load


class IngestConfig(dg.Config):
    files: list[str] = []  # empty (a launch by hand): every event file in the landing zone
    # the partition keys each file holds (the sensor's pre-scan); a partition is refreshed as
    # soon as its last file is loaded. Without it, partitions are those the files loaded rows
    # for, refreshed after the last file.
    partitions_by_file: dict[str, list[str]] = {}


@dataclass
class _Partition:
    """What this run's loads did to one (instrument, granularity)."""

    pair: Pair
    files: list[str] = field(default_factory=list)  # loaded files holding the partition
    loaded: int = 0
    rejected_by_file: dict[str, int] = field(default_factory=dict)
    xids: list[str] = field(default_factory=list)  # the load transactions of those files


@dataclass
class _Report:
    part: _Partition
    levels: dict
    features: dict
    events_rows: int
    events_bytes: int
    written: int  # rows of the events leaf written by this run's load transactions
    mismatched: int
    levels_rows: int
    levels_bytes: int
    features_bytes: int


def _pair_of(key: str) -> Pair:
    keys = event_partitions.get_partition_key_from_str(key).keys_by_dimension
    return keys["instrument"], keys["granularity"]


class _Connections:
    """A reader (autocommit) and a writer connection per worker thread (db.connect's), all
    closed at the end: two new connections per partition cost more than a small partition's
    refresh."""

    def __init__(self, url: str) -> None:
        self.url, self.local, self.lock, self.stack = url, threading.local(), \
            threading.Lock(), ExitStack()

    def get(self, role: str = db.READER_ROLE) -> psycopg.Connection:
        conn = getattr(self.local, role, None)
        if conn is None or conn.closed or conn.broken:
            with self.lock:
                conn = self.stack.enter_context(db.connect(
                    self.url, role=role, autocommit=role == db.READER_ROLE))
            setattr(self.local, role, conn)
        return conn

    def close(self) -> None:
        self.stack.close()


def _refresh(url: str, conns: _Connections, part: _Partition) -> _Report:
    """Levels, features and statistics of one partition (in a worker thread)."""
    pair = part.pair
    writer = conns.get(db.WRITER_ROLE)
    levels = refresh_levels(url, pair, writer)
    features = refresh_features(url, pair, writer)
    leaf = {t: sql.Identifier(loader.leaf_name(t, pair)) for t in (
        "new_resistance_events", "support_and_resistance_master", "event_features")}
    row = conns.get().execute(sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE xmin = ANY(%(xids)s::xid[])), "
        "count(*) FILTER (WHERE {mismatch}), "
        "pg_total_relation_size(%(events)s::regclass), "
        "(SELECT count(*) FROM {levels}), pg_total_relation_size(%(levels)s::regclass), "
        "pg_total_relation_size(%(features)s::regclass) FROM {events}").format(
            mismatch=REBOUND_MISMATCH, events=leaf["new_resistance_events"],
            levels=leaf["support_and_resistance_master"]),
        {"xids": part.xids, "events": loader.leaf_name("new_resistance_events", pair),
         "levels": loader.leaf_name("support_and_resistance_master", pair),
         "features": loader.leaf_name("event_features", pair)}).fetchone()
    events_rows, written, mismatched, events_bytes, levels_rows, levels_bytes, features_bytes \
        = row
    return _Report(part, levels, features, events_rows=events_rows, events_bytes=events_bytes,
                   written=written, mismatched=mismatched, levels_rows=levels_rows,
                   levels_bytes=levels_bytes, features_bytes=features_bytes)


def _materializations(report: _Report) -> Iterator[dg.AssetMaterialization]:
    part, key = report.part, str(partition_key(*report.part.pair))
    yield dg.AssetMaterialization(
        new_resistance_events.key, partition=key, metadata={
            "rows_loaded": part.loaded, "rows_rejected": sum(part.rejected_by_file.values()),
            "partition_rows": report.events_rows, "partition_bytes": report.events_bytes,
            "files": len(part.files), "dagster/row_count": report.events_rows})
    lv = report.levels
    yield dg.AssetMaterialization(
        support_and_resistance_master.key, partition=key, metadata={
            "levels": report.levels_rows, "active": lv["active"], "breached": lv["breached"],
            "changed": lv["changed"], "partition_bytes": report.levels_bytes,
            "dagster/row_count": report.levels_rows, "seconds": round(lv["seconds"], 3)})
    ft = report.features
    yield dg.AssetMaterialization(
        event_features.key, partition=key, metadata={
            "rows": ft["rows"], "written": ft["written"],
            "partition_bytes": report.features_bytes, "dagster/row_count": ft["rows"]})


def _checks(reports: list[_Report], results: list[loader.LoadResult],
            catch_all: tuple[int, int], unassigned_rejected: int
            ) -> Iterator[dg.AssetCheckEvaluation]:
    """One evaluation per check for the whole run (the checks are not partitioned: one per
    partition would overwrite each other, hiding a failing partition behind the next passing
    one); each names the partitions that failed it."""
    key = new_resistance_events.key
    ok = [r for r in results if not r.error]
    counts_off = {str(partition_key(*r.part.pair)): {"loaded": r.part.loaded,
                                                     "written": r.written}
                  for r in reports if r.written != r.part.loaded}
    yield dg.AssetCheckEvaluation(
        asset_key=key, check_name=CHECK_COUNTS, passed=not counts_off, metadata={
            # the loader's own per-partition counts against the rows of each partition that
            # this run's load transactions wrote (xmin), read back from the tables
            "source_rows": sum(r.rows_read for r in ok),
            "rejected": sum(r.rejected for r in ok),
            "duplicate": sum(r.duplicates for r in ok),
            "loaded": sum(r.loaded for r in ok),
            "in_table_written_by_this_run": sum(r.written for r in reports),
            "partitions_checked": len(reports), "partitions_failing": counts_off})
    yield dg.AssetCheckEvaluation(
        asset_key=key, check_name=CHECK_CATCH_ALL, passed=catch_all == (0, 0),
        metadata={"default_partitions": catch_all[0], "rows_in_null_guards": catch_all[1]})
    mismatched = {str(partition_key(*r.part.pair)): r.mismatched
                  for r in reports if r.mismatched}
    yield dg.AssetCheckEvaluation(
        asset_key=key, check_name=CHECK_REBOUND, passed=not mismatched, metadata={
            "mismatched_rows": sum(mismatched.values()), "partitions_checked": len(reports),
            "partitions_failing": mismatched})
    rejected_by_file = {r.path.name: r.rejected for r in ok if r.rejected}
    yield dg.AssetCheckEvaluation(
        asset_key=key, check_name=CHECK_REJECTED, passed=not rejected_by_file,
        severity=dg.AssetCheckSeverity.WARN, metadata={
            "rejected_rows_by_file": rejected_by_file,
            "rejected_rows_by_partition": {
                str(partition_key(*r.part.pair)): sum(r.part.rejected_by_file.values())
                for r in reports if r.part.rejected_by_file},
            "rejected_rows_without_a_valid_partition": unassigned_rejected,
            "see": "table rejected_events"})


def _retry() -> dg.RetryRequested:
    # the database is unreachable or went away: nothing of the file being loaded was
    # committed, files loaded before are found present by the retry (loaded exactly once)
    return dg.RetryRequested(max_retries=OUTAGE_RETRIES, seconds_to_wait=OUTAGE_RETRY_SECONDS)


class _Loads:
    """The loads, in a thread of their own: each file once, in order; each partition handed
    to the refresh pool once the last file holding it is loaded. Dagster's events are written
    by the op's own thread meanwhile (each costs the event log a few round trips)."""

    DONE = object()

    def __init__(self, url: str, files: list[Path], expected: dict[str, set[Pair]],
                 pool: ThreadPoolExecutor, conns: _Connections) -> None:
        self.url, self.files, self.expected, self.pool, self.conns = (url, files, expected,
                                                                      pool, conns)
        self.remaining = Counter(p for pairs in expected.values() for p in pairs)
        self.parts: dict[Pair, _Partition] = {}
        self.results: list[loader.LoadResult] = []
        self.unassigned_rejected = 0
        self.submitted = 0
        self.queue: queue.Queue = queue.Queue()  # finished refreshes, then DONE
        self.stop = threading.Event()  # the op failed: load no further file

    def _submit(self, pair: Pair) -> None:
        part = self.parts.get(pair)
        if part is None or not part.files:  # no file holding it loaded: nothing to report
            return
        self.submitted += 1
        self.pool.submit(_refresh, self.url, self.conns, part).add_done_callback(
            self.queue.put)

    def run(self) -> None:
        try:
            with db.connect(self.url, role=db.READER_ROLE, autocommit=True) as conn:
                since = conn.execute("SELECT coalesce(max(id), 0) FROM load_log").fetchone()[0]
                for path in self.files:
                    if self.stop.is_set():
                        break
                    expected = self.expected.get(str(path), set())
                    try:
                        r = loader.load_file(path, self.url)
                    except loader.EventFileError as exc:
                        self.results.append(loader.LoadResult(path, error=str(exc)))
                    else:
                        self.results.append(r)
                        self.unassigned_rejected += _record(conn, since, r, expected,
                                                            self.parts)
                    for pair in expected:
                        self.remaining[pair] -= 1
                        if self.remaining[pair] == 0:
                            self._submit(pair)
            # partitions no pre-scan announced (a launch by hand, or a file that changed since)
            for pair in sorted(set(self.parts) - set(self.remaining)):
                self._submit(pair)
        except BaseException as exc:  # noqa: BLE001  (handed to the op's thread)
            self.queue.put((self.DONE, exc))
        else:
            self.queue.put((self.DONE, None))

    def reports(self) -> Iterator[_Report]:
        """Each partition's report as its refresh finishes; raises what the loads raised."""
        done, received = False, 0
        while not done or received < self.submitted:
            item = self.queue.get()
            if isinstance(item, tuple) and item[0] is self.DONE:
                done = True
                if item[1] is not None:
                    raise item[1]
                continue
            received += 1
            yield item.result()


def _hold_storage_connections(instance: dg.DagsterInstance) -> None:
    """Dagster's PostgreSQL storage opens a new connection for every write by default: two per
    materialization, ~20 ms each here (SCRAM authentication), more than the write itself. This
    run reports three materializations per partition, hundreds per tick, so its process holds
    a pooled connection instead, as dagster-webserver's does (statement_timeout 0: none, the
    run worker's default). No-op for other storages (SQLite in tests)."""
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=4)


@dg.op(
    name="ingest_files",
    out={},
    description="Loads each file once (one transaction per file), then refreshes the levels "
                "and features of every (instrument, granularity) the files hold and reports "
                "each partition as materialized for new_resistance_events, "
                "support_and_resistance_master and event_features, with the events' checks.",
)
def ingest_files(context: dg.OpExecutionContext, config: IngestConfig,
                 postgres: PostgresResource, landing_zone: LandingZone):
    url = postgres.url()
    started = time.perf_counter()
    files = [Path(f) for f in config.files] or landing.event_files(landing_zone.directory())
    expected = {str(f): {_pair_of(k) for k in config.partitions_by_file.get(str(f), [])}
                for f in files}
    _hold_storage_connections(context.instance)
    known = set(context.instance.get_dynamic_partitions(instruments.name))
    conns = _Connections(url)
    pool = ThreadPoolExecutor(PAIR_WORKERS, thread_name_prefix="partition")
    loads = _Loads(url, files, expected, pool, conns)
    thread = threading.Thread(target=loads.run, name="loads", daemon=True)
    reports: list[_Report] = []
    try:
        thread.start()
        for report in loads.reports():
            instrument = report.part.pair[0]
            if instrument not in known:  # rows of an instrument the sensor did not announce
                context.instance.add_dynamic_partitions(instruments.name, [instrument])
                known.add(instrument)
            reports.append(report)
            yield from _materializations(report)
        with db.connect(url, role=db.READER_ROLE) as conn:
            catch_all = catch_all_rows(conn)
    except psycopg.OperationalError as exc:
        raise _retry() from exc
    finally:
        loads.stop.set()
        thread.join()
        pool.shutdown(wait=True, cancel_futures=True)
        conns.close()
    reports.sort(key=lambda r: r.part.pair)
    results = loads.results
    yield from _checks(reports, results, catch_all, loads.unassigned_rejected)
    for r in results:
        if r.error:
            context.log.warning(r.error)
        elif r.ignored_columns:
            context.log.warning(f"{r.path.name}: ignored columns {r.ignored_columns}")
    context.log.info(_summary(results, len(reports), time.perf_counter() - started))


def _summary(results: list[loader.LoadResult], partitions: int, seconds: float) -> str:
    """The per-file table of `sr-platform load`, as one log message."""
    ok = [r for r in results if not r.error]
    read = sum(r.rows_read for r in ok)
    w = max([len(r.path.name) for r in results] + [5])
    lines = [f"{len(ok)} of {len(results)} files loaded, {partitions} partitions "
             f"materialized in {seconds:.1f} s ({read / seconds if seconds else 0:,.0f} rows/s)",
             f"{'file':<{w}} {'read':>9} {'loaded':>9} {'duplicate':>9} {'rejected':>8} "
             f"{'seconds':>7}"]
    for r in results:
        lines.append(f"{r.path.name:<{w}} not loaded: {r.error}" if r.error else
                     f"{r.path.name:<{w}} {r.rows_read:>9,} {r.loaded:>9,} {r.duplicates:>9,} "
                     f"{r.rejected:>8,} {r.seconds:>7.2f}")
    lines.append(f"{'total':<{w}} {read:>9,} {sum(r.loaded for r in ok):>9,} "
                 f"{sum(r.duplicates for r in ok):>9,} {sum(r.rejected for r in ok):>8,}")
    return "\n".join(lines)


def _record(conn: psycopg.Connection, since: int, r: loader.LoadResult, expected: set[Pair],
            parts: dict[Pair, _Partition]) -> int:
    """Note what file `r` did to each partition it holds; returns its rejected rows that name
    no valid partition."""
    source = str(r.path.resolve())
    # the load_log row of this load (written in the file's transaction: its xmin is that
    # transaction's, as are the xmins of the rows it stored)
    xid, sha = conn.execute(
        "SELECT xmin::text, source_sha256 FROM load_log WHERE id > %s AND source = %s "
        "AND instrument IS NULL AND (rows_read, rows_loaded, rows_duplicate, rows_rejected) "
        "= (%s, %s, %s, %s) ORDER BY id DESC LIMIT 1",
        (since, source, r.rows_read, r.loaded, r.duplicates, r.rejected)).fetchone() \
        or (None, None)  # not found: the counts check then fails for its partitions
    rejected: dict[Pair, int] = {}
    unassigned = 0
    if r.rejected and sha:
        for instrument, granularity, n in conn.execute(
                "SELECT btrim(raw_record->>'instrument'), btrim(raw_record->>'granularity'), "
                "count(*) FROM rejected_events WHERE source_sha256 = %s GROUP BY 1, 2", (sha,)):
            if (instrument, granularity) in expected or (instrument, granularity) in r.pairs:
                rejected[(instrument, granularity)] = n
            else:
                unassigned += n
    for pair in expected | set(r.pairs):
        part = parts.setdefault(pair, _Partition(pair))
        part.files.append(r.path.name)
        part.loaded += r.pairs.get(pair, 0)
        if xid is not None:
            part.xids.append(xid)
        if pair in rejected:
            part.rejected_by_file[r.path.name] = rejected[pair]
    return unassigned
