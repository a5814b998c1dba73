"""The ingest service: the whole unit of work of a load, the same for `sr-platform load`, the
landing sensor's run and the partitioned assets.

For a set of files: load each ONCE (whole, one transaction per file: loader.load_file), then
for every (instrument, granularity) the files touched, refresh what is derived from the events
(level outcomes: levels.refresh_levels; features: features.refresh_features) and measure the
pair (PairStats). So no face can leave a pair's levels or features older than its events.

A pair's refresh starts as soon as the last file holding it is loaded (when the caller knows
which files hold which pairs: the landing sensor's pre-scan), in a small thread pool, while
later files load; or, with `overlap=False` (the landing run: its events are queryable
sooner), once every file is committed. `Ingest.pairs()` yields each pair's report as its
refresh finishes, so a face can report progress (Dagster writes a materialization per
partition meanwhile).
"""

import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from . import db, loader
from .catalog import catch_all_rows
from .features import refresh_features
from .keys import EVENTS, FEATURES, LEVELS, Pair, leaf_name
from .levels import refresh_levels
from .reading import existing_pairs

PAIR_WORKERS = 2  # pairs refreshed at once, while the next files load

# a row whose stored rebound in ATR is not its rebound over its ATR; stored values are rounded
# to 6 dp: allow for the rounding of all three
REBOUND_MISMATCH = sql.SQL(
    "abs(new_resistance_negative_rebound_in_atr - new_resistance_negative_rebound / "
    "atr_at_event) > 0.000001 + 0.000001 * (1 + abs(new_resistance_negative_rebound / "
    "atr_at_event)) / atr_at_event")




@dataclass
class PairStats:
    """One pair's leaves as they are after a load: rows and bytes, and of the events leaf the
    rows written by the given load transactions and the rows whose rebound does not match."""

    events_rows: int
    events_bytes: int
    written: int
    mismatched: int
    levels_rows: int
    levels_bytes: int
    features_rows: int
    features_bytes: int


def pair_stats(conn: psycopg.Connection, pair: Pair, xids: Iterable[str] = ()) -> PairStats:
    leaf = {t: leaf_name(t, pair) for t in (EVENTS, LEVELS, FEATURES)}
    row = conn.execute(sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE xmin = ANY(%(xids)s::xid[])), "
        "count(*) FILTER (WHERE {mismatch}), pg_total_relation_size(%(events)s::regclass), "
        "(SELECT count(*) FROM {levels}), pg_total_relation_size(%(levels)s::regclass), "
        "(SELECT count(*) FROM {features}), pg_total_relation_size(%(features)s::regclass) "
        "FROM {events}").format(
            mismatch=REBOUND_MISMATCH, events=sql.Identifier(leaf[EVENTS]),
            levels=sql.Identifier(leaf[LEVELS]), features=sql.Identifier(leaf[FEATURES])),
        {"xids": list(xids), "events": leaf[EVENTS], "levels": leaf[LEVELS],
         "features": leaf[FEATURES]}).fetchone()
    rows, written, mismatched, events_bytes, lv_rows, lv_bytes, ft_rows, ft_bytes = row
    return PairStats(rows, events_bytes, written, mismatched, lv_rows, lv_bytes, ft_rows,
                     ft_bytes)


@dataclass
class PairLoad:
    """What one ingest's loads did to one (instrument, granularity)."""

    pair: Pair
    files: list[str] = field(default_factory=list)  # loaded files holding the pair
    loaded: int = 0
    rejected_by_file: dict[str, int] = field(default_factory=dict)
    xids: list[str] = field(default_factory=list)  # the load transactions of those files


@dataclass
class PairReport:
    """A pair after its loads and refresh: `levels` and `features` are what refresh_levels and
    refresh_features returned (None: not refreshed, derive=False)."""

    load: PairLoad
    stats: PairStats
    levels: dict | None = None
    features: dict | None = None

    @property
    def pair(self) -> Pair:
        return self.load.pair


class Connections:
    """A reader (autocommit) and a writer connection per worker thread, all closed at the end:
    two new connections per pair cost more than a small pair's refresh."""

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


def refresh_pair(url: str, pair_load: PairLoad, conns: Connections | None = None,
                 derive: bool = True) -> PairReport:
    """Levels, features and statistics of one pair."""
    own = conns is None
    conns = conns or Connections(url)
    try:
        levels = features = None
        if derive:
            writer = conns.get(db.WRITER_ROLE)
            levels = refresh_levels(url, pair_load.pair, writer)
            features = refresh_features(url, pair_load.pair, writer)
        stats = pair_stats(conns.get(), pair_load.pair, pair_load.xids)
        return PairReport(pair_load, stats, levels, features)
    finally:
        if own:
            conns.close()


class Ingest:
    """One ingest of `files`. Iterate `pairs()` (in the caller's thread) to run it: the loads
    run in a thread of their own, each pair's refresh in the pool once its last file is
    loaded. Afterwards `results` holds each file's LoadResult and `unassigned_rejected` the
    rejected rows that name no valid pair.

    `expected` maps a file to the pairs it holds (a pre-scan); without it a pair is refreshed
    after the last file. `derive=False` loads and measures only (the partitioned events asset:
    the levels and features assets refresh). `overlap=False` holds every refresh until the
    last file is committed: on a busy machine refreshes (and what the caller does with their
    reports) compete with the loads for CPU, so the events are queryable sooner and the
    derived data follows."""

    _DONE = object()

    def __init__(self, url: str, files: Iterable[Path],
                 expected: dict[str, set[Pair]] | None = None, *, origin: str | None = None,
                 derive: bool = True, assume_tz: str | None = None,
                 progress_factory: Callable[[Path, int], Callable[[int], None]] | None = None,
                 workers: int = PAIR_WORKERS, raise_on_outage: bool = False,
                 overlap: bool = True) -> None:
        self.url, self.files, self.origin, self.derive = url, list(files), origin, derive
        self.overlap = overlap
        self._held: list[Pair] = []  # pairs complete while loads go on (overlap=False)
        self.raise_on_outage = raise_on_outage
        self.expected = {str(f): set(ps) for f, ps in (expected or {}).items()}
        self.assume_tz, self.progress_factory, self.workers = assume_tz, progress_factory, \
            workers
        self.remaining = Counter(p for ps in self.expected.values() for p in ps)
        self.loads: dict[Pair, PairLoad] = {}
        self.results: list[loader.LoadResult] = []
        self.unassigned_rejected = 0
        self._submitted = 0
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()

    # -- the loads thread ----------------------------------------------------------------------
    def _load_all(self, pool: ThreadPoolExecutor, conns: Connections) -> None:
        try:
            with loader.one_connection(self.url) as connection:
                for path in self.files:
                    if self._stop.is_set():
                        break
                    r = self._load_one(path, connection)
                    self.results.append(r)
                    expected = self.expected.get(str(path), set())
                    if not r.error:
                        self.unassigned_rejected += self._record(conns.get(), r, expected)
                    for pair in expected:
                        self.remaining[pair] -= 1
                        if self.remaining[pair] == 0:
                            if self.overlap:
                                self._submit(pool, conns, pair)
                            else:
                                self._held.append(pair)
            for pair in self._held:
                self._submit(pool, conns, pair)
            # pairs no pre-scan announced (no `expected`, or a file that changed since)
            for pair in sorted(set(self.loads) - set(self.remaining)):
                self._submit(pool, conns, pair)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self._queue.put((self._DONE, exc))
        else:
            self._queue.put((self._DONE, None))

    def _load_one(self, path: Path, connection) -> loader.LoadResult:
        try:
            progress = self.progress_factory(path, 0) if self.progress_factory else None
        except OSError:  # the factory looks at the file; the load reports why it cannot
            progress = None
        try:
            return loader.load_file(path, self.url, assume_tz=self.assume_tz,
                                    progress=progress, connection=connection,
                                    origin=self.origin)
        except loader.EventFileError as exc:
            return loader.LoadResult(Path(path), error=str(exc))
        except psycopg.Error as exc:
            if self.raise_on_outage and isinstance(exc, psycopg.OperationalError):
                raise  # the server is gone: Dagster retries the whole run
            # a concurrent load claiming the same id first, a constraint: this file only
            return self._failed(path, exc)

    @staticmethod
    def _failed(path: Path, exc: BaseException) -> loader.LoadResult:
        return loader.LoadResult(Path(path), database_failed=True, error=(
            f"{path}: not loaded, a database error ended the load and the file's "
            f"transaction was rolled back (nothing of it stored; rerun to load it): "
            f"{exc.__class__.__name__}: {str(exc).strip()}"))

    def _record(self, conn: psycopg.Connection, r: loader.LoadResult,
                expected: set[Pair]) -> int:
        """Note what file `r` did to each pair it holds; returns its rejected rows that name no
        valid pair."""
        rejected: dict[Pair, int] = {}
        unassigned = 0
        if r.rejected and r.log_id is not None:
            for instrument, granularity, n in conn.execute(
                    "SELECT btrim(j.raw_record->>'instrument'), "
                    "btrim(j.raw_record->>'granularity'), count(*) FROM rejected_events j "
                    "WHERE j.source_sha256 = (SELECT source_sha256 FROM load_log WHERE id = %s) "
                    "GROUP BY 1, 2", (r.log_id,)):
                if (instrument, granularity) in expected or (instrument, granularity) in r.pairs:
                    rejected[(instrument, granularity)] = n
                else:
                    unassigned += n
        # every pair the file holds, new rows or not: a rerun after a load whose refresh was
        # cut off (kill -9 between the two) finds all its rows present and still refreshes
        for pair in expected | set(r.pairs) | set(r.held):
            part = self.loads.setdefault(pair, PairLoad(pair))
            part.files.append(r.path.name)
            part.loaded += r.pairs.get(pair, 0)
            if r.xid is not None:
                part.xids.append(r.xid)
            if pair in rejected:
                part.rejected_by_file[r.path.name] = rejected[pair]
        return unassigned

    def _submit(self, pool: ThreadPoolExecutor, conns: Connections, pair: Pair) -> None:
        part = self.loads.get(pair)
        if part is None or not part.files:  # no file holding it loaded: nothing to report
            return
        self._submitted += 1
        pool.submit(refresh_pair, self.url, part, conns, self.derive).add_done_callback(
            self._queue.put)

    # -- the caller's thread -------------------------------------------------------------------
    def pairs(self) -> Iterator[PairReport]:
        """Run the ingest; each pair's report as its refresh finishes. Raises what the loads
        or a refresh raised (after stopping the loads)."""
        conns = Connections(self.url)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="pair")
        thread = threading.Thread(target=self._load_all, args=(pool, conns), name="loads",
                                  daemon=True)
        try:
            thread.start()
            done, received = False, 0
            while not done or received < self._submitted:
                item = self._queue.get()
                if isinstance(item, tuple) and item[0] is self._DONE:
                    done = True
                    if item[1] is not None:
                        raise item[1]
                    continue
                received += 1
                yield item.result()
        finally:
            self._stop.set()
            thread.join()
            pool.shutdown(wait=True, cancel_futures=True)
            conns.close()

    def run(self) -> list[PairReport]:
        """Run it to the end; the pairs' reports in pair order."""
        return sorted(self.pairs(), key=lambda r: r.pair)


# the events checks (names as the UI shows them)
CHECK_COUNTS = "loaded_equals_source_minus_rejected"
CHECK_CATCH_ALL = "no_rows_in_catch_all_partitions"
CHECK_REBOUND = "rebound_in_atr_matches_rebound_over_atr"
CHECK_REJECTED = "source_files_had_no_rejected_rows"
EVENTS_CHECKS = {  # name: description (shown in the UI)
    CHECK_COUNTS: "Each file's rows loaded equal its source rows minus the rejected and the "
                  "duplicate ones, and the rows each load stored in a partition, read back "
                  "from the table by the load's transaction, equal the loader's own count "
                  "(ERROR otherwise).",
    CHECK_CATCH_ALL: "No row in a NULL-guard partition, no DEFAULT partition (ERROR "
                     "otherwise).",
    CHECK_REBOUND: "Each row's rebound in ATR equals its rebound over its ATR, within the "
                   "6-decimal rounding (ERROR otherwise).",
    CHECK_REJECTED: "The source files had no rejected rows (WARN otherwise: see "
                    "`sr-platform rejected` and table rejected_events).",
}


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    metadata: dict
    warn_only: bool = False  # a WARN-severity check (else ERROR)


def events_checks(reports: list[PairReport], results: list[loader.LoadResult],
                  catch_all_counts: tuple[int, int], unassigned_rejected: int = 0,
                  key=str) -> list[CheckOutcome]:
    """The four events checks over one ingest (not per partition: one evaluation per
    partition would overwrite the last, hiding a failing partition behind the next passing
    one); each names the partitions that failed it, by `key(pair)`."""
    return [counts_check(reports, results, key), catch_all_check(catch_all_counts),
            rebound_check(reports, key),
            rejected_check(reports, results, unassigned_rejected, key)]


def counts_check(reports: list[PairReport], results: list[loader.LoadResult], key=str
                 ) -> CheckOutcome:
    """Each file's accounting (source = loaded + duplicate + rejected), and the loader's
    per-partition counts against the rows of each partition that the load transactions wrote
    (xmin), read back from the tables."""
    ok = [r for r in results if not r.error]
    counts_off = {key(r.pair): {"loaded": r.load.loaded, "written": r.stats.written}
                  for r in reports if r.stats.written != r.load.loaded}
    unbalanced = {r.path.name: {"source_rows": r.rows_read, "loaded": r.loaded,
                                "duplicate": r.duplicates, "rejected": r.rejected}
                  for r in ok if r.rows_read != r.loaded + r.duplicates + r.rejected}
    return CheckOutcome(CHECK_COUNTS, not counts_off and not unbalanced, {
        "source_rows": sum(r.rows_read for r in ok),
        "rejected": sum(r.rejected for r in ok),
        "duplicate": sum(r.duplicates for r in ok),
        "loaded": sum(r.loaded for r in ok),
        "in_table_written_by_this_run": sum(r.stats.written for r in reports),
        "partitions_checked": len(reports), "partitions_failing": counts_off,
        "files_failing": unbalanced})


def catch_all_check(catch_all_counts: tuple[int, int]) -> CheckOutcome:
    """`catch_all_counts`: (default partitions, rows in the NULL-guard partitions)."""
    return CheckOutcome(CHECK_CATCH_ALL, catch_all_counts == (0, 0), {
        "default_partitions": catch_all_counts[0],
        "rows_in_null_guards": catch_all_counts[1]})


def rebound_check(reports: list[PairReport], key=str) -> CheckOutcome:
    mismatched = {key(r.pair): r.stats.mismatched for r in reports if r.stats.mismatched}
    return CheckOutcome(CHECK_REBOUND, not mismatched, {
        "mismatched_rows": sum(mismatched.values()), "partitions_checked": len(reports),
        "partitions_failing": mismatched})


def rejected_check(reports: list[PairReport], results: list[loader.LoadResult],
                   unassigned_rejected: int = 0, key=str) -> CheckOutcome:
    rejected_by_file = {r.path.name: r.rejected for r in results if not r.error and r.rejected}
    return CheckOutcome(CHECK_REJECTED, not rejected_by_file, {
        "rejected_rows_by_file": rejected_by_file,
        "rejected_rows_by_partition": {key(r.pair): sum(r.load.rejected_by_file.values())
                                       for r in reports if r.load.rejected_by_file},
        "rejected_rows_without_a_valid_partition": unassigned_rejected,
        "see": "table rejected_events"}, warn_only=True)


@dataclass
class OutsideLoad:
    """A load_log row of a load made outside Dagster (origin cli, or NULL: the library)."""

    id: int
    origin: str | None
    source: str
    finished_at: object
    pairs: dict[Pair, int]


def loads_outside(conn: psycopg.Connection, after_id: int, limit: int = 1000
                  ) -> tuple[list[OutsideLoad], int]:
    """Loads after load_log id `after_id` not made by Dagster (oldest first, at most `limit`
    rows read), and the last id read (the next call's `after_id`). Loads from before
    migration 0008 have no pairs and are skipped."""
    rows = conn.execute(
        "SELECT id, origin, source, finished_at, pairs FROM load_log WHERE id > %s "
        "ORDER BY id LIMIT %s", (after_id, limit)).fetchall()
    last = rows[-1][0] if rows else after_id
    out = [OutsideLoad(i, origin, source, finished, {
               tuple(k.split("/", 1)): n for k, n in pairs.items()})
           for i, origin, source, finished, pairs in rows
           if origin != "dagster" and pairs]
    return out, last


def level_counts(conn: psycopg.Connection, pair: Pair) -> dict[str, int]:
    """{status: levels} of the pair (active, breached)."""
    return dict(conn.execute(sql.SQL("SELECT status, count(*) FROM {} GROUP BY 1").format(
        sql.Identifier(leaf_name(LEVELS, pair)))).fetchall())


def stored_reports(url: str, pairs: list[Pair] | None = None) -> list[PairReport]:
    """Reports of the pairs as stored (no load): their PairStats, for the checks of the
    database's state. `pairs` None: every pair that has an events leaf."""
    with db.connect(url, role=db.READER_ROLE, autocommit=True) as conn:
        if pairs is None:
            pairs = existing_pairs(conn, EVENTS)
        return [PairReport(PairLoad(p), pair_stats(conn, p)) for p in pairs]


def catch_all(url: str) -> tuple[int, int]:
    """(default partitions, rows in the NULL-guard partitions): (0, 0) when healthy."""
    with db.connect(url, role=db.READER_ROLE, autocommit=True) as conn:
        return catch_all_rows(conn)
