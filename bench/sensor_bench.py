"""Landing to queryable: files dropped into the landing zone of a running `dagster dev`,
against `sr-platform load` of the same files, in the same run (issue 16, section 4).

    .venv/bin/python bench/sensor_bench.py [--years 1] [--instruments 28] [--repeats 3]

The files are `make run`'s sample (sr_platform.core.generate.write_event_files(dir, years=1,
instruments=28, seed=0): 28 files, ~46k rows, 112 (instrument, granularity) pairs). Each
repeat, alternately, on the same server:

  cli      `sr-platform load DIR` in a new process into a fresh migrated database (wall time,
           process start included): the baseline.
  landing  a fresh migrated database and a fresh Dagster storage database (dagster.yaml as
           `make run` uses it), `dagster dev -m sr_platform.definitions` on them (webserver,
           daemon, code server), an empty landing zone. A one-event file lands first and
           is loaded (a running `make run` has loaded its sample: the daemon has launched a
           run before; `--cold` skips it and measures the first run after the start). Then
           the bench waits a random part of the sensor's period (files land at any phase of
           it), then moves the 28 files in (written beside it in a directory, which is
           renamed in: one rename, so one tick sees every file). From that moment
           (`landed`), a reader connection polls count(*) of new_resistance_events every
           50 ms: `queryable` is when all rows are visible. Then it waits for
           event_features to hold a row per event, and for Dagster to show every partition
           of the three event assets materialized; the run's own timestamps (created by the
           tick, started, ended) split the time.

It prints one table (medians over the repeats, min-max in brackets) with seconds from
`landed` and the ratio to the cli's wall time; the goal (issue 16, section 4) is landed ->
queryable within 2x the cli.
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sr_platform.core import db, loader, migrate, settings  # noqa: E402
from sr_platform.core.generate import write_event_files  # noqa: E402
from sr_platform_tests.dagster_dev import (  # noqa: E402
    dagster_dev,
    sensor_ticks,
    stripped_environment,
)

BIN = Path(sys.executable).parent
TABLES = ("new_resistance_events", "support_and_resistance_master", "event_features")
LOCATION = "sr_platform.definitions"
SENSOR = "landing_zone_sensor"
GOAL = 2.0
POLL = 0.05  # the reader's count(*) poll
# one event of an instrument the sample does not have: the run before the measured one
WARM_UP = ("event_creation_date,granularity,instrument,event_price_level,atr_at_event,"
           "new_resistance_negative_rebound,new_resistance_negative_rebound_in_atr\n"
           "2026-01-05T10:00:00Z,H1,ZZ_WARMUP,1.2,0.001,-0.0005,-0.5\n")
WARM_UP_KEY = "H1|ZZ_WARMUP"


def fresh_db(server: str, prefix: str, owner: str = db.OWNER_ROLE,
             migrated: bool = True) -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server, name, owner=owner)
    url = db.with_database(server, name)
    if migrated:
        migrate.upgrade(url)
    return name, url


def counts(url: str) -> dict[str, int]:
    with db.connect(url, role=db.READER_ROLE) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def run_cli(url: str, landing: Path) -> float:
    """Wall seconds of `sr-platform load DIR` (a new process, as a user runs it)."""
    env = dict(os.environ, SR_PLATFORM_DATABASE_URL=db.role_url(url, db.WRITER_ROLE))
    t = time.perf_counter()
    out = subprocess.run([str(BIN / "sr-platform"), "load", str(landing)], env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t
    if out.returncode not in (0, 2):  # 2: some rows were rejected (quarantined)
        raise SystemExit(f"sr-platform load failed:\n{out.stdout}\n{out.stderr}")
    return wall


def sensor_period() -> float:
    """Seconds between two evaluations of the landing sensor by the daemon: its minimum
    interval, but not less than the daemon's sensor loop (5 s in dagster 1.13)."""
    from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME

    from sr_platform.events.sensors import landing_zone_sensor

    return max(landing_zone_sensor.minimum_interval_seconds or 0, MIN_INTERVAL_LOOP_TIME)


def wait_until(what: str, test, timeout: float, poll: float) -> float:
    """time.time() when `test()` first holds."""
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(poll)
    return time.time()


def run_landing(server: str, url: str, sample: Path, tmp: Path, want: dict[str, int],
                expected_keys: set[str], phase: float, warm_up: bool) -> dict[str, float]:
    """Seconds from the files' landing to each milestone (see the module's docstring)."""
    import dagster as dg

    storage_name, storage = fresh_db(server, "bench_dagster", owner=db.DAGSTER_ROLE,
                                     migrated=False)
    work = Path(tempfile.mkdtemp(prefix="landing_", dir=tmp))
    home, landing, staging = work / "dagster_home", work / "landing", work / ".staging" / "batch"
    for d in (home, landing, staging):
        d.mkdir(parents=True)
    shutil.copy(settings.PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    names = sorted(p.name for p in loader.find_event_files([sample]))
    for name in names:
        shutil.copy(sample / name, staging / name)
    storage_url = db.sqlalchemy_url(db.role_url(storage, db.DAGSTER_ROLE), "psycopg2")
    env = stripped_environment(
        DAGSTER_HOME=str(home), SR_PLATFORM_LANDING_DIR=str(landing),
        SR_PLATFORM_DATABASE_URL=db.role_url(url, db.WRITER_ROLE),
        SR_PLATFORM_DAGSTER_STORAGE_URL=storage_url,
        SR_PLATFORM_BACKUP_DIR=str(work / "backups"),
        SR_PLATFORM_ALERT_LOG=str(work / "alerts.log"))
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    os.environ["SR_PLATFORM_DAGSTER_STORAGE_URL"] = storage_url  # the instance read below
    try:
        with dagster_dev(["-m", LOCATION], env=env, cwd=work, timeout=300) as dev:
            wait_until("the landing sensor's first tick",
                       lambda: any(t["status"] == "SKIPPED"
                                   for t in sensor_ticks(dev.port, LOCATION, SENSOR)), 300, 0.5)
            if warm_up:  # a running `make run` has launched runs before (the sample's)
                (landing / "warm_up.csv").write_text(WARM_UP)
                with db.connect(url, role=db.READER_ROLE, autocommit=True) as reader:
                    wait_until("the warm-up file's run", lambda: reader.execute(
                        "SELECT count(*) FROM event_features").fetchone()[0] == 1, 600, 0.5)
                time.sleep(6)  # its run ends; the next tick has seen nothing new
            time.sleep(phase)
            landed = time.time()
            os.rename(staging, landing / staging.name)  # all at once: one tick sees them all
            with db.connect(url, role=db.READER_ROLE, autocommit=True) as reader:
                def rows(table: str) -> int:
                    return reader.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

                extra = 1 if warm_up else 0
                first = wait_until("the first rows", lambda: rows(TABLES[0]) > extra, 600, POLL)
                queryable = wait_until("every row", lambda: rows(TABLES[0]) ==
                                       want[TABLES[0]] + extra, 600, POLL)
                features = wait_until("the features rows", lambda: rows(TABLES[2]) ==
                                      want[TABLES[0]] + extra, 600, POLL)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                done: dict[str, float] = {}

                def materialized() -> bool:
                    for key in TABLES:
                        if key not in done and instance.get_materialized_partitions(
                                dg.AssetKey(key)) == expected_keys | (
                                    {WARM_UP_KEY} if warm_up else set()):
                            done[key] = time.time()
                    return len(done) == len(TABLES)

                wait_until("every partition materialized", materialized, 600, 0.25)
                record = instance.get_run_records(  # the newest: the 28 files'
                    dg.RunsFilter(job_name="ingest_landing_files"), limit=1)[0]
                ended = wait_until("the run's end", lambda: instance.get_run_record_by_id(
                    record.dagster_run.run_id).end_time is not None, 600, 0.25)
                record = instance.get_run_record_by_id(record.dagster_run.run_id)
                status = record.dagster_run.status
                if status != dg.DagsterRunStatus.SUCCESS:
                    raise SystemExit(f"the landing run ended {status}; see {work}")
                launch = instance.get_run_stats(record.dagster_run.run_id).launch_time
        got = counts(url)
        extra = 1 if warm_up else 0
        assert got == {t: want["new_resistance_events"] + extra for t in TABLES}, (got, want)
        return {"created": record.create_timestamp.timestamp() - landed,
                "launched": (launch or record.start_time) - landed,
                "started": record.start_time - landed, "first": first - landed,
                "queryable": queryable - landed, "features_rows": features - landed,
                **{f"mat_{k}": v - landed for k, v in done.items()},
                "ended": (record.end_time or ended) - landed}
    finally:
        db.drop_database(server, storage_name)
        shutil.rmtree(work, ignore_errors=True)


def fmt(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:6.2f}" + (f" [{min(values):.2f}-{max(values):.2f}]" if len(values) > 1
                            else "")


ROWS = [  # (key, label) of the landing path's milestones, seconds after the files landed
    ("created", "tick: the run requested (sensor wait + tick)"),
    ("launched", "run launched (queue + launch)"),
    ("started", "run started (worker process up, code loaded)"),
    ("first", "first rows visible to a reader"),
    ("queryable", "QUERYABLE: every row visible to a reader"),
    ("features_rows", "every event's features row written"),
    ("mat_new_resistance_events", "Dagster: every events partition materialized"),
    ("mat_support_and_resistance_master", "Dagster: every levels partition materialized"),
    ("mat_event_features", "Dagster: every features partition materialized"),
    ("ended", "run ended"),
]


def run(years: float = 1, instruments: int = 28, seed: int = 0, repeats: int = 3,
        cold: bool = False) -> dict:
    """The measurement on the current server (db.database_url's); returns the table's lines
    (`table`), the ratio and whether the goal is met (make bench's `landing` section)."""
    server = db.database_url("postgres", role=db.ADMIN_ROLE)
    period = sensor_period()
    phases = random.Random(seed)
    from sr_platform.events.partitions import partition_key

    with tempfile.TemporaryDirectory(prefix="sensor_bench_") as tmp:
        sample = Path(tmp) / "sample"
        write_event_files(sample, years=years, instruments=instruments, seed=seed)
        files = loader.find_event_files([sample])
        keys = {str(partition_key(*p)) for f in files for p in loader.file_pairs(f)}
        cli, landing = [], []
        want: dict[str, int] = {}
        for _ in range(repeats):
            for path in ("cli", "landing"):
                name, url = fresh_db(server, "bench_" + path)
                try:
                    if path == "cli":
                        cli.append(run_cli(url, sample))
                        want = counts(url)
                    else:
                        phase = phases.uniform(0, period)
                        landing.append(run_landing(server, url, sample, Path(tmp), want, keys,
                                                   phase, not cold) | {"phase": phase})
                finally:
                    db.drop_database(server, name)
    return _table(cli, landing, len(files), want["new_resistance_events"], len(keys), repeats,
                  period, cold)


def _table(cli: list[float], landing: list[dict], files: int, rows: int, partitions: int,
           repeats: int, period: float, cold: bool) -> dict:
    base = statistics.median(cli)
    when = "the first run after dagster dev starts" if cold else "after a first run"
    out = [f"{files} files, {rows:,} rows, {partitions} partitions; {repeats} repeat(s), "
           f"median [min-max]; landing sensor period {period:g} s (files land at a random "
           f"phase of it); {when}",
           "", "| seconds after the files land | seconds | x cli |", "| --- | ---: | ---: |",
           f"| cli: `sr-platform load DIR` (new process, wall) | {fmt(cli)} | 1.00 |"]
    for key, label in ROWS:
        values = [s[key] for s in landing]
        out.append(f"| landing: {label} | {fmt(values)} | "
                   f"{statistics.median(values) / base:.2f} |")
    lag = {k: statistics.median(s[k] - s["queryable"] for s in landing)
           for k in ("mat_support_and_resistance_master", "mat_event_features", "ended")}
    ratio = statistics.median(s["queryable"] for s in landing) / base
    out += ["", f"after queryable: levels partitions "
            f"+{lag['mat_support_and_resistance_master']:.2f} s, features partitions "
            f"+{lag['mat_event_features']:.2f} s, run end +{lag['ended']:.2f} s",
            f"goal (landed -> queryable <= {GOAL:g}x the cli): {ratio:.2f}x, "
            f"{'met' if ratio <= GOAL else 'missed'}"]
    return {"table": out, "ratio": ratio, "met": ratio <= GOAL}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--years", type=float, default=1)
    ap.add_argument("--instruments", type=int, default=28)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold", action="store_true",
                    help="measure the first run after `dagster dev` starts (by default one "
                         "small file is loaded first, as a running `make run` has loaded "
                         "its sample: the steady state)")
    args = ap.parse_args()
    res = run(args.years, args.instruments, args.seed, args.repeats, args.cold)
    print("\n" + "\n".join(res["table"]))


if __name__ == "__main__":
    main()
