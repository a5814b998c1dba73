"""The landing-sensor path against `sr-platform load`, on the same files, into fresh databases.

    .venv/bin/python bench/sensor_bench.py [--years 1] [--instruments 28] [--repeats 1]

The files are `make run`'s sample (sr_platform.core.generate.write_event_files(dir, years=1,
instruments=28, seed=0): 28 files, ~46k rows, 112 (instrument, granularity) pairs). Each
repeat, alternately, on the same server:

  cli      `sr-platform load DIR` in a new process into a fresh migrated database (wall time,
           process start included); its in-process part (loader.load_paths) is shown too.
  sensor   a fresh migrated database and a fresh Dagster instance with PostgreSQL storage (as
           dagster.yaml configures it): one real tick of landing_zone_sensor
           (build_sensor_context on that instance), the dynamic partitions it requests added
           as the sensor daemon adds them, then the one run it requests executed in a new
           process by `dagster job execute` with the request's config and tags (the daemon's
           run worker likewise loads the code location in a new process and executes the run
           there). Until every partition of events, levels and features is materialized: the
           bench asserts the partitions materialized and that the three tables hold what the
           cli path's do, and the sensor's own interval (up to 30 s) is not counted.

It prints one table (medians over the repeats, min-max in brackets) with seconds, rows/s and
the ratio to the cli's wall time; the goal (issue 7, goal 4) is a ratio of at most 2.
"""

import argparse
import json
import os
import resource
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

BIN = Path(sys.executable).parent
TABLES = ("new_resistance_events", "support_and_resistance_master", "event_features")
GOAL = 2.0


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


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cli(url: str, landing: Path) -> tuple[float, float, float]:
    """(wall seconds of `sr-platform load`, seconds of its loads as it reports them, its CPU
    seconds)."""
    env = dict(os.environ, SR_PLATFORM_DATABASE_URL=db.role_url(url, db.WRITER_ROLE))
    cpu = children_cpu()
    t = time.perf_counter()
    out = subprocess.run([str(BIN / "sr-platform"), "load", str(landing)], env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t
    cpu = children_cpu() - cpu
    if out.returncode not in (0, 2):  # 2: some rows were rejected (quarantined)
        raise SystemExit(f"sr-platform load failed:\n{out.stdout}\n{out.stderr}")
    total = next(line for line in out.stdout.splitlines() if line.startswith("total"))
    return wall, float(total.rsplit(",", 1)[1].split()[0]), cpu


def run_sensor(server: str, url: str, landing: Path, home: Path,
               run_log: Path) -> dict[str, float]:
    """Seconds of the tick, of the run (in a new process) and of both."""
    import dagster as dg

    storage_name, storage = fresh_db(server, "bench_dagster", owner=db.DAGSTER_ROLE,
                                     migrated=False)
    env = {"DAGSTER_HOME": str(home), "SR_PLATFORM_LANDING_DIR": str(landing),
           "SR_PLATFORM_DATABASE_URL": db.role_url(url, db.WRITER_ROLE),
           "SR_PLATFORM_DAGSTER_STORAGE_URL": db.sqlalchemy_url(
               db.role_url(storage, db.DAGSTER_ROLE), "psycopg2")}
    os.environ.update(env)
    try:
        from sr_platform.events.resources import LandingZone
        from sr_platform.events.sensors import landing_zone_sensor

        with dg.DagsterInstance.get() as instance:
            t0 = time.perf_counter()
            result = landing_zone_sensor(dg.build_sensor_context(
                instance=instance, resources={"landing_zone": LandingZone(path=str(landing))}))
            for add in result.dynamic_partitions_requests:
                instance.add_dynamic_partitions(add.partitions_def_name, add.partition_keys)
            tick = time.perf_counter() - t0
            (request,) = result.run_requests
            config = home / "run_config.json"
            config.write_text(json.dumps(request.run_config))
            cpu = children_cpu()
            t1 = time.perf_counter()
            with open(run_log, "w") as log:
                done = subprocess.run(
                    [str(BIN / "dagster"), "job", "execute", "-m", "sr_platform.definitions",
                     "-j", "ingest_landing_files", "-c", str(config),
                     "--tags", json.dumps(request.tags)],
                    env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
            run = time.perf_counter() - t1
            cpu = children_cpu() - cpu
            if done.returncode:
                raise SystemExit(f"the run failed, see {run_log}")
            # every pair the files hold (the tick's pre-scan), for each of the three assets
            expected = {k for keys in request.run_config["ops"]["ingest_files"]["config"][
                "partitions_by_file"].values() for k in keys}
            for key in TABLES:
                done = instance.get_materialized_partitions(dg.AssetKey(key))
                assert done == expected, (key, len(done), len(expected))
        return {"tick": tick, "run": run, "total": tick + run, "partitions": len(expected),
                "cpu": cpu}
    finally:
        db.drop_database(server, storage_name)


def fmt(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:7.2f}" + (f" [{min(values):.2f}-{max(values):.2f}]" if len(values) > 1
                            else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--years", type=float, default=1)
    ap.add_argument("--instruments", type=int, default=28)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--run-log", type=Path,
                    default=Path(tempfile.gettempdir()) / "sensor_bench_run.log",
                    help="where the run's output goes (Dagster's event log lines)")
    args = ap.parse_args()
    server = db.database_url("postgres", role=db.ADMIN_ROLE)
    with tempfile.TemporaryDirectory(prefix="sensor_bench_") as tmp:
        landing = Path(tmp) / "landing"
        write_event_files(landing, years=args.years, instruments=args.instruments,
                          seed=args.seed)
        files = loader.find_event_files([landing])
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        shutil.copy(settings.PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
        cli_wall, cli_load, cli_cpu, sensor = [], [], [], []
        rows = partitions = None
        for _ in range(args.repeats):
            for path in ("cli", "sensor"):
                name, url = fresh_db(server, "bench_" + path)
                try:
                    if path == "cli":
                        wall, load, cpu = run_cli(url, landing)
                        cli_wall.append(wall)
                        cli_load.append(load)
                        cli_cpu.append(cpu)
                        want = counts(url)
                    else:
                        s = run_sensor(server, url, landing, home, args.run_log)
                        sensor.append(s)
                        got = counts(url)
                        # the cli writes events and levels; the sensor path also features
                        assert got == {**want, "event_features": want["new_resistance_events"]
                                       }, (got, want)
                        rows, partitions = got["new_resistance_events"], s["partitions"]
                finally:
                    db.drop_database(server, name)
    base = statistics.median(cli_wall)
    print(f"\n{len(files)} files, {rows:,} rows, {partitions} partitions; "
          f"{args.repeats} repeat(s), median [min-max]\n")
    print(f"{'path':<58} {'seconds':>22} {'rows/s':>9} {'x cli':>6}")
    table = [
        ("cli: `sr-platform load DIR` (new process, wall)", cli_wall),
        ("cli: its loads alone (loader.load_paths, as it reports)", cli_load),
        ("sensor: one tick (scan + request + dynamic partitions)", [s["tick"] for s in sensor]),
        ("sensor: its one run (`dagster job execute`, new process)",
         [s["run"] for s in sensor]),
        ("sensor path: files landed -> every partition materialized",
         [s["total"] for s in sensor]),
    ]
    for label, values in table:
        med = statistics.median(values)
        print(f"{label:<58} {fmt(values):>22} {rows / med:>9,.0f} {med / base:>6.2f}")
    cpu = statistics.median(s["cpu"] for s in sensor)
    print(f"\nCPU seconds (user + system) of the process: cli {statistics.median(cli_cpu):.1f}, "
          f"sensor's run {cpu:.1f} (the run also refreshes levels and features, which the cli "
          "does not; the server's CPU is not counted)")
    ratio = statistics.median([s["total"] for s in sensor]) / base
    print(f"\ngoal 4 (sensor path <= {GOAL:g}x the cli): {ratio:.2f}x, "
          f"{'met' if ratio <= GOAL else 'missed'}")


if __name__ == "__main__":
    main()
