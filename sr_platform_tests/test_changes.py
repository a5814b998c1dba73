"""Migration 0009 and sr_platform.core.changes: every committed change of events and level
outcomes is logged with a gap-free seq and announced on sr_events / sr_levels, with real
listeners on the real server."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sr_platform.core import changes, db, generate, levels, loader, migrate, retention
from sr_platform.core.changes import Change
from sr_platform.core.localpg import LocalCluster

from .conftest import PG15_BIN, insert_event
from .test_loader import cli, row, scalar, write_csv
from .test_migrations import schema_dump

T13 = datetime(2026, 3, 4, 13, 0, tzinfo=UTC)
WAIT_S = 60  # how long a listener waits for what it expects (never asserted on)


def new_instrument() -> str:
    """A pair no other test made (the session database keeps its partitions)."""
    return f"C{uuid.uuid4().hex[:7].upper()}"


def seq_now(url: str) -> int:
    return scalar(url, "SELECT seq FROM change_seq")


def at(hour: int, day: int = 4) -> str:
    return f"2026-03-{day:02d}T{hour:02d}:00:00Z"


class Listener:
    """A LISTEN connection on both channels (as the reader: any role may listen)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(db.libpq_url(db.role_url(url, db.READER_ROLE)),
                                    autocommit=True)
        self.conn.execute("LISTEN sr_events")
        self.conn.execute("LISTEN sr_levels")

    def take(self, n: int) -> list[tuple[str, dict]]:
        got = [(note.channel, note.payload) for note in
               self.conn.notifies(timeout=WAIT_S, stop_after=n)]
        assert len(got) == n, got
        for _, payload in got:
            assert len(payload.encode()) < 8000
        return [(channel, json.loads(payload)) for channel, payload in got]

    def assert_quiet(self) -> None:
        """Nothing else was announced: a marker committed now is the next notification
        (notifications arrive in commit order)."""
        pair = (new_instrument(), "H1")
        with admin(self.url) as conn:
            conn.execute("SELECT ensure_partition(%s, %s)", pair)
            insert_event(conn, instrument=pair[0])
        [(channel, payload)] = self.take(1)
        assert (channel, payload["instrument"], payload["rows"]) == ("sr_events", pair[0], 1)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def listener(clean_db):
    ear = Listener(clean_db)
    yield ear
    ear.close()


def admin(url: str) -> psycopg.Connection:
    return psycopg.connect(db.libpq_url(url), autocommit=True)


def as_writer(url: str) -> psycopg.Connection:
    conn = admin(url)
    conn.execute("SET ROLE sr_writer")
    return conn


def event(seq, instrument, op="insert", rows=1, first="2026-03-04T13:00:00Z", last=None,
          **extra) -> dict:
    return {"seq": seq, "op": op, "instrument": instrument, "granularity": "H1",
            "rows": rows, "first": first, "last": last or first, **extra}


def copy_hours(conn: psycopg.Connection, table: str, inst: str, hours) -> None:
    """COPY one H1 event per hour of 2026-03-04 (a Wednesday) into `table`."""
    with conn.cursor().copy(
            f"COPY {table} (event_creation_date, granularity, instrument, event_price_level, "
            "atr_at_event, new_resistance_negative_rebound, "
            "new_resistance_negative_rebound_in_atr, day_of_week, hour_of_day) FROM STDIN") as cp:
        for h in hours:
            cp.write_row((at(h), "H1", inst, "1.1", "0.0015", "-0.00075", "-0.5", 2, h))


# -- announced by the database ---------------------------------------------------------------

def test_single_insert_announces_its_pair_on_commit(listener, clean_db):
    inst, base = new_instrument(), seq_now(clean_db)
    with as_writer(clean_db) as conn:
        conn.execute("SELECT ensure_partition(%s, 'H1')", (inst,))
        insert_event(conn, instrument=inst)
    [(channel, payload)] = listener.take(1)
    assert (channel, payload) == ("sr_events", event(base + 1, inst))
    assert Change.from_payload("events", json.dumps(payload)) == Change(
        base + 1, "events", "insert", inst, "H1", 1, T13, T13)
    log = scalar(clean_db, "SELECT row(seq, channel, op, instrument, granularity, rows, first, "
                           "last, load_id, breached, tested)::text FROM change_log "
                           "WHERE seq = %s", (base + 1,))
    assert log == (f"({base + 1},events,insert,{inst},H1,1,\"2026-03-04 13:00:00+00\","
                   "\"2026-03-04 13:00:00+00\",,,)")
    listener.assert_quiet()


def test_copy_into_a_leaf_and_inserts_coalesce_per_pair_per_transaction(listener, clean_db):
    a, b, base = new_instrument(), new_instrument(), seq_now(clean_db)
    with as_writer(clean_db) as conn:
        for inst in (a, b):
            conn.execute("SELECT ensure_partition(%s, 'H1')", (inst,))
        with conn.transaction():
            # COPY straight into the leaf (no tuple routing), by direct SQL
            leaf = loader.leaf_name("new_resistance_events", (a, "H1"))
            copy_hours(conn, leaf, a, (14, 15, 16))
            insert_event(conn, instrument=a)  # 13:00, through the root
            insert_event(conn, instrument=b, event_creation_date=datetime(2026, 3, 5, 9,
                                                                          tzinfo=UTC))
        copy_hours(conn, leaf, a, (20,))  # a COPY of its own: its own change
        conn.execute("RESET ROLE")  # TRUNCATE is the owner's
        conn.execute(f"TRUNCATE {leaf} CASCADE")  # with its levels
    assert listener.take(4) == [
        ("sr_events", event(base + 1, a, rows=4, first=at(13), last=at(16))),
        ("sr_events", event(base + 2, b, first="2026-03-05T09:00:00Z")),
        ("sr_events", event(base + 3, a, first=at(20))),
        ("sr_events", event(base + 4, a, op="delete", rows=5, first=at(13), last=at(20))),
    ]
    listener.assert_quiet()


def test_rollback_announces_nothing_and_consumes_no_seq(listener, clean_db):
    inst, base = new_instrument(), seq_now(clean_db)
    with as_writer(clean_db) as conn:
        conn.execute("SELECT ensure_partition(%s, 'H1')", (inst,))
        conn.execute("BEGIN")
        insert_event(conn, instrument=inst)
        conn.execute("ROLLBACK")
        with conn.transaction():
            try:
                with conn.transaction():  # a savepoint rolled back inside a committed one
                    insert_event(conn, instrument=inst, event_creation_date=T13.replace(hour=9))
                    raise RuntimeError
            except RuntimeError:
                pass
            insert_event(conn, instrument=inst, event_creation_date=T13.replace(hour=10))
    assert listener.take(1) == [("sr_events", event(base + 1, inst, first=at(10)))]
    assert seq_now(clean_db) == base + 1
    listener.assert_quiet()


def test_cli_load_announces_each_pair_once_with_its_load_id(listener, clean_db, tmp_path):
    inst, base = new_instrument(), seq_now(clean_db)
    # no level changes: the second H1 event is far below the first (not a test, no breach)
    first = write_csv(tmp_path / "first.csv", [
        row(13, instrument=inst, event_price_level="1.200000"),
        row(14, instrument=inst, event_price_level="1.100000"),
        row(0, instrument=inst, granularity="D", event_price_level="1.300000")])
    env = dict(os.environ, SR_PLATFORM_DATABASE_URL=clean_db)
    assert subprocess.run(cli() + ["load", str(first)], env=env, capture_output=True).returncode \
        == 0
    load1 = scalar(clean_db, "SELECT id FROM load_log WHERE source = %s", (str(first.resolve()),))
    # new pairs: staged, attached, announced by attach_staged_partitions() in pair order
    assert listener.take(2) == [
        ("sr_events", {**event(base + 1, inst, first=at(0)), "granularity": "D",
                       "load_id": load1}),
        ("sr_events", event(base + 2, inst, rows=2, first=at(13), last=at(14),
                            load_id=load1))]
    second = write_csv(tmp_path / "second.csv", [
        row(15, instrument=inst, event_price_level="1.000000"),
        row(16, instrument=inst, event_price_level="0.900000")])
    assert subprocess.run(cli() + ["load", str(second)], env=env, capture_output=True
                          ).returncode == 0
    load2 = scalar(clean_db, "SELECT id FROM load_log WHERE source = %s",
                   (str(second.resolve()),))
    # an existing pair: COPY into its leaf, one change
    assert listener.take(1) == [("sr_events", event(base + 3, inst, rows=2, first=at(15),
                                                    last=at(16), load_id=load2))]
    listener.assert_quiet()


def test_level_breaches_and_tests_are_announced_on_sr_levels(listener, clean_db, tmp_path):
    inst, base = new_instrument(), seq_now(clean_db)
    # ATR 0.0015: the band is 0.000375 below a level. 13:00 at 1.1000 is tested by 14:00 at
    # 1.0998, then 15:00 at 1.1010 breaches both; 15:00's level stays active.
    path = write_csv(tmp_path / "levels.csv", [
        row(13, instrument=inst, event_price_level="1.100000"),
        row(14, instrument=inst, event_price_level="1.099800"),
        row(15, instrument=inst, event_price_level="1.101000")])
    result = loader.load_file(path, clean_db)
    assert listener.take(1) == [("sr_events", event(base + 1, inst, rows=3, first=at(13),
                                                    last=at(15), load_id=result.log_id))]
    assert levels.refresh_levels(clean_db, (inst, "H1"))["changed"] == 2
    assert listener.take(1) == [("sr_levels", {**event(base + 2, inst, op="update", rows=2,
                                                       first=at(13), last=at(14)),
                                               "breached": 2, "tested": 1})]
    assert levels.refresh_levels(clean_db, (inst, "H1"))["changed"] == 0  # nothing changed
    listener.assert_quiet()
    it = changes.subscribe("levels", since=base, url=clean_db)  # the events change skipped
    assert next(it) == Change(base + 2, "levels", "update", inst, "H1", 2, T13,
                              T13.replace(hour=14), breached=2, tested=1)
    it.close()


def test_retention_delete_is_announced_per_batch(listener, clean_db, tmp_path):
    inst, base = new_instrument(), seq_now(clean_db)
    stamps = ["2023-01-02T10:00:00Z", "2023-01-02T11:00:00Z", "2023-01-03T10:00:00Z",
              "2026-01-02T10:00:00Z"]
    path = write_csv(tmp_path / "old.csv", [dict(row(instrument=inst), event_creation_date=ts)
                                            for ts in stamps])
    loader.load_file(path, clean_db)
    listener.take(1)
    report = retention.prune(clean_db, as_of=datetime(2026, 6, 1, tzinfo=UTC), batch_rows=2)
    assert report.rows[retention.EVENTS] == 3
    assert listener.take(2) == [
        ("sr_events", event(base + 2, inst, op="delete", rows=2, first=stamps[0],
                            last=stamps[1])),
        ("sr_events", event(base + 3, inst, op="delete", rows=1, first=stamps[2]))]
    listener.assert_quiet()


def test_a_load_touching_every_pair_sends_one_small_payload_per_pair(listener, clean_db,
                                                                     tmp_path):
    base = seq_now(clean_db)
    paths = generate.write_event_files(tmp_path, years=0.5, instruments=28, seed=7)
    frame = generate.generate_events(years=0.5, instruments=28, seed=7)
    pairs = sorted(set(zip(frame["instrument"], frame["granularity"], strict=True)))
    assert len(pairs) == 112
    results = loader.load_paths(paths, clean_db)
    assert sum(r.loaded for r in results) == len(frame)
    got = listener.take(len(pairs))
    assert sorted((p["instrument"], p["granularity"]) for _, p in got) == pairs
    assert [p["seq"] for _, p in got] == list(range(base + 1, base + 1 + len(pairs)))
    assert sum(p["rows"] for _, p in got) == len(frame)
    listener.assert_quiet()
    # the longest payload there can be (every field at its widest) is far below 8,000 bytes
    worst = scalar(clean_db, "SELECT octet_length(change_payload(ROW(9223372036854775807, "
                             "'levels', 'delete', 'ABCDEFGHIJ', 'H4', 9223372036854775807, "
                             "'2026-03-04 13:00:00.123456+00', '2026-03-04 13:00:00.123456+00', "
                             "9223372036854775807, 2147483647, 2147483647, now())::change_log))")
    assert worst < 400


def test_retention_prunes_the_change_log_after_7_days(clean_db):
    inst, base = new_instrument(), seq_now(clean_db)
    with as_writer(clean_db) as conn:
        conn.execute("SELECT ensure_partition(%s, 'H1')", (inst,))
    _insert_hours(clean_db, inst, (1, 2, 3))
    as_of = datetime.now(UTC).replace(microsecond=0)
    cutoff = as_of - timedelta(days=7)
    with admin(clean_db) as conn:
        conn.execute("UPDATE change_log SET created_at = %s WHERE seq <= %s",
                     (cutoff - timedelta(seconds=1), base + 2))
        conn.execute("UPDATE change_log SET created_at = %s WHERE seq = %s",
                     (cutoff, base + 3))  # exactly at the cutoff: stays
    assert retention.Policy().change_log_days == 7
    report = retention.prune(clean_db, as_of=as_of)
    assert report.rows["change_log"] == base + 2
    assert scalar(clean_db, "SELECT min(seq) FROM change_log") == base + 3
    with pytest.raises(changes.ChangesPruned, match=f"changes 1 to {base + 2} were pruned"):
        next(changes.subscribe(since=0, url=clean_db))
    it = changes.subscribe(since=base + 2, url=clean_db)
    assert next(it).seq == base + 3
    it.close()


# -- subscribe --------------------------------------------------------------------------------

def take(it, n: int) -> list[Change]:
    """The next n changes of a subscription (in this thread: its generator is suspended, its
    connection idle, between calls)."""
    return [next(it) for _ in range(n)]


def _insert_hours(url: str, inst: str, hours) -> None:
    with as_writer(url) as conn:
        for h in hours:  # one transaction each: one change each
            insert_event(conn, instrument=inst, event_creation_date=T13.replace(hour=h))


def test_subscribe_replays_then_goes_live_with_typed_changes(clean_db):
    inst, base = new_instrument(), seq_now(clean_db)
    with as_writer(clean_db) as conn:
        conn.execute("SELECT ensure_partition(%s, 'H1')", (inst,))
    _insert_hours(clean_db, inst, (1, 2))
    it = changes.subscribe(("events",), since=base, url=clean_db)
    replayed = take(it, 2)
    _insert_hours(clean_db, inst, (3,))
    live = take(it, 1)
    it.close()
    assert replayed + live == [
        Change(base + h, "events", "insert", inst, "H1", 1, T13.replace(hour=h),
               T13.replace(hour=h)) for h in (1, 2, 3)]
    assert live[0].to_json() == {"seq": base + 3, "channel": "events", "op": "insert",
                                 "instrument": inst, "granularity": "H1", "rows": 1,
                                 "first": at(3), "last": at(3)}


def test_subscribe_resumes_exactly_after_its_backend_is_terminated(clean_db):
    """Its connection killed by the server (pg_terminate_backend as a superuser) while it
    waits between changes; the changes committed meanwhile (their NOTIFY lost with it) are
    yielded after it reconnects, each once, in order."""
    inst, base = new_instrument(), seq_now(clean_db)
    with as_writer(clean_db) as conn:
        conn.execute("SELECT ensure_partition(%s, 'H1')", (inst,))
    it = changes.subscribe("events", since=base, url=clean_db, backoff=(0.05, 0.2))
    _insert_hours(clean_db, inst, (1,))
    seen = take(it, 1)
    for rounds in range(3):
        with admin(clean_db) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND query LIKE '%%FROM change_log%%'").fetchone()[0]
        assert killed == 1
        _insert_hours(clean_db, inst, (2 + 2 * rounds, 3 + 2 * rounds))
        seen += take(it, 2)
    it.close()
    assert [c.seq for c in seen] == list(range(base + 1, base + 8))
    assert [c.first.hour for c in seen] == list(range(1, 8))


SUBSCRIBER = """
import sys
from sr_platform.core.changes import subscribe
for c in subscribe(("events",), since=int(sys.argv[1]), url=sys.argv[2]):
    print(c.seq, c.instrument, c.first.hour, flush=True)
"""


class Lines:
    """A subprocess's stdout lines, read by a thread."""

    def __init__(self, args: list[str], env: dict | None = None) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.q.put(line.rstrip("\n"))

    def take(self, n: int) -> list[str]:
        try:
            return [self.q.get(timeout=WAIT_S) for _ in range(n)]
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(self.proc.stderr.read()) from None


def test_a_killed_subscriber_restarted_from_its_last_seq_misses_nothing(clean_db):
    inst, base = new_instrument(), seq_now(clean_db)
    with as_writer(clean_db) as conn:
        conn.execute("SELECT ensure_partition(%s, 'H1')", (inst,))
    sub = Lines([sys.executable, "-c", SUBSCRIBER, str(base), clean_db])
    _insert_hours(clean_db, inst, (1, 2, 3))
    lines = sub.take(3)
    sub.proc.send_signal(signal.SIGKILL)
    sub.proc.wait()
    _insert_hours(clean_db, inst, (4, 5, 6))  # while no subscriber runs
    last = int(lines[-1].split()[0])
    sub = Lines([sys.executable, "-c", SUBSCRIBER, str(last), clean_db])
    _insert_hours(clean_db, inst, (7, 8))
    lines += sub.take(5)
    sub.proc.kill()
    sub.proc.wait()
    assert lines == [f"{base + h} {inst} {h}" for h in range(1, 9)]


@pytest.mark.slow
def test_subscribe_resumes_exactly_after_a_server_restart(tmp_path):
    """A throwaway PostgreSQL 15 cluster of its own (the session's server is shared): stopped
    and started again under a live subscriber."""
    if not (PG15_BIN / "postgres").exists():
        pytest.skip(f"PostgreSQL 15 server binaries not at {PG15_BIN}")
    cluster = LocalCluster(tmp_path / "pg", PG15_BIN)
    cluster.start()
    try:
        url = cluster.url("sr_platform")
        db.ensure_database(cluster.url("postgres"), "sr_platform", owner=db.OWNER_ROLE)
        migrate.upgrade(url)
        inst = new_instrument()
        with as_writer(url) as conn:
            conn.execute("SELECT ensure_partition(%s, 'H1')", (inst,))
        it = changes.subscribe("events", since=0, url=url, backoff=(0.05, 0.5))
        _insert_hours(url, inst, (1, 2))
        seen = take(it, 2)
        cluster.stop()
        cluster.start()
        _insert_hours(url, inst, (3, 4))
        seen += take(it, 2)  # its connection died with the server: it reconnects, resumes
        it.close()
        assert [(c.seq, c.first.hour) for c in seen] == [(h, h) for h in range(1, 5)]
    finally:
        cluster.remove()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_watch_json_lines_parse_back_and_a_signal_exits_0(clean_db, stop):
    inst, base = new_instrument(), seq_now(clean_db)
    with as_writer(clean_db) as conn:
        conn.execute("SELECT ensure_partition(%s, 'H1')", (inst,))
    _insert_hours(clean_db, inst, (1,))
    watch = Lines(cli() + ["watch", "--json", "--since", str(base), "--channel", "events"],
                  env=dict(os.environ, SR_PLATFORM_DATABASE_URL=clean_db))
    first = watch.take(1)
    _insert_hours(clean_db, inst, (2,))
    lines = first + watch.take(1)
    watch.proc.send_signal(stop)
    assert watch.proc.wait(timeout=WAIT_S) == 0
    assert [json.loads(line) for line in lines] == [
        {"seq": base + h, "channel": "events", "op": "insert", "instrument": inst,
         "granularity": "H1", "rows": 1, "first": at(h), "last": at(h)} for h in (1, 2)]


def test_watch_prints_one_line_per_change(clean_db):
    inst, base = new_instrument(), seq_now(clean_db)
    with as_writer(clean_db) as conn:
        conn.execute("SELECT ensure_partition(%s, 'H1')", (inst,))
    _insert_hours(clean_db, inst, (1,))
    watch = Lines(cli() + ["watch", "--since", str(base)],
                  env=dict(os.environ, SR_PLATFORM_DATABASE_URL=clean_db))
    assert watch.take(1) == [f"{base + 1} events insert {inst} H1 rows=1 {at(1)}..{at(1)}"]
    watch.proc.send_signal(signal.SIGINT)
    assert watch.proc.wait(timeout=WAIT_S) == 0


# -- the migration ----------------------------------------------------------------------------

def test_0009_down_restores_0008_exactly(any_server_url, make_db):
    url = make_db(any_server_url, migrated=False)
    migrate.upgrade(url, "0008")
    with admin(url) as conn:
        conn.execute("SELECT ensure_partition('EUR_USD', 'H1')")
        conn.execute("SELECT ensure_partition('GBP_USD', 'D')")
    at_0008 = schema_dump(url)
    migrate.upgrade(url)
    assert migrate.current(url) == "0009"
    with admin(url) as conn:
        conn.execute("SELECT ensure_partition('GBP_USD', 'H4')")  # a leaf made at 0009
    migrate.downgrade(url, "0008")
    with admin(url) as conn:
        conn.execute("DROP TABLE event_features_h4_gbp_usd, "
                     "support_and_resistance_master_h4_gbp_usd, new_resistance_events_h4_gbp_usd")
    assert schema_dump(url) == at_0008
