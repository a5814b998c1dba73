"""Issue 14 items 4 and 2: errors a user can act on, and a first screen that tells the truth.

The CLI runs in-process (cli.main with capfd) against the test database, named by
SR_PLATFORM_DATABASE_URL as an external server would be."""

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest
import yaml

from sr_platform import cli
from sr_platform.core import db, settings

HEADER = ("event_creation_date,granularity,instrument,event_price_level,atr_at_event,"
          "new_resistance_negative_rebound,new_resistance_negative_rebound_in_atr\n")
BAD_ROWS = ("2026-01-05T10:00:00Z,H1,EUR_USD,1.2,0.001,-0.0005,-0.5\n"  # line 2: good
            "2026-01-05T11:00:00,H1,EUR_USD,1.2,0.001,-0.0005,-0.5\n"  # 3: no offset
            "2026-01-05T12:00:00Z,H1,EUR_USD,-1,0.001,-0.0005,-0.5\n"  # 4: price <= 0
            "2026-01-05T13:00:00,H1,EUR_USD,-2,0.001,-0.0005,-0.5\n")  # 5: both
NO_OFFSET = ("event_creation_date: '{}' has no UTC offset (write Z or +hh:mm, or load with "
             "--assume-tz)")


@pytest.fixture
def cli_db(clean_db, monkeypatch) -> str:
    monkeypatch.setenv(settings.DATABASE_URL_ENV, clean_db)
    return clean_db


def _jsonb(d: dict) -> str:
    """json.dumps of a dict in the key order JSONB keeps (shorter keys first)."""
    return json.dumps(dict(sorted(d.items(), key=lambda kv: (len(kv[0]), kv[0]))))


def _run(capfd, *argv: str) -> tuple[int, str, str]:
    try:
        rc = cli.main(list(argv))
    except SystemExit as exc:  # argparse
        rc = exc.code
    out = capfd.readouterr()
    return rc, out.out, out.err


# -- the quarantine from the CLI -------------------------------------------------------------

def test_load_summary_names_reasons_lines_and_the_rejected_command(cli_db, tmp_path, capfd):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + BAD_ROWS)
    rc, out, _ = _run(capfd, "load", str(path))
    assert rc == cli.EXIT_REJECTED
    tail = out.splitlines()[3:]
    assert tail == [
        "top reasons for rejected rows (all in table rejected_events):",
        "         2  event_creation_date has an offset",
        "            e.g. " + NO_OFFSET.format("2026-01-05T11:00:00"),
        "            first lines: bad.csv 3, 5",
        "         2  event_price_level > 0",
        "            e.g. event_price_level: -1 must be > 0",
        "            first lines: bad.csv 4, 5",
        "list them: sr-platform rejected [--file FILE] [--rule RULE] "
        "(or sr-platform rejected --help)",
        # the good row's pair is left derived (the ingest service)
        "derived: 1 pairs refreshed: levels 0 changed (0 breached in all), features 1 written",
    ]


def test_rejected_lists_file_line_rule_reason_and_raw_row(cli_db, tmp_path, capfd):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + BAD_ROWS)
    _run(capfd, "load", str(path))
    source = str(path.resolve())
    raw = {3: {"event_creation_date": "2026-01-05T11:00:00", "event_price_level": "1.2"},
           4: {"event_creation_date": "2026-01-05T12:00:00Z", "event_price_level": "-1"},
           5: {"event_creation_date": "2026-01-05T13:00:00", "event_price_level": "-2"}}
    for r in raw.values():
        r.update({"granularity": "H1", "instrument": "EUR_USD", "atr_at_event": "0.001",
                  "new_resistance_negative_rebound": "-0.0005",
                  "new_resistance_negative_rebound_in_atr": "-0.5"})
    rc, out, _ = _run(capfd, "rejected", "--file", str(path), "--format", "json")
    assert rc == 0
    assert json.loads(out) == [
        {"file": source, "line": 3, "rule": "event_creation_date has an offset",
         "reason": NO_OFFSET.format("2026-01-05T11:00:00"), "raw": raw[3]},
        {"file": source, "line": 4, "rule": "event_price_level > 0",
         "reason": "event_price_level: -1 must be > 0", "raw": raw[4]},
        {"file": source, "line": 5, "rule": "event_creation_date has an offset",
         "reason": NO_OFFSET.format("2026-01-05T13:00:00"), "raw": raw[5]},
        {"file": source, "line": 5, "rule": "event_price_level > 0",
         "reason": "event_price_level: -2 must be > 0", "raw": raw[5]},
    ]
    # by rule, by the file's name alone, as a table
    rc, out, _ = _run(capfd, "rejected", "--file", "bad.csv", "--rule",
                      "event_price_level > 0")
    assert rc == 0
    assert out.splitlines() == [
        f"{source}:4  [event_price_level > 0]  event_price_level: -1 must be > 0",
        f"    raw: {_jsonb(raw[4])}",
        f"{source}:5  [event_price_level > 0]  event_price_level: -2 must be > 0",
        f"    raw: {_jsonb(raw[5])}",
        "2 rejected rows, 2 reasons",
    ]
    rc, out, _ = _run(capfd, "rejected", "--limit", "1", "--format", "csv")
    assert out.splitlines() == [
        "file,line,rule,reason,raw",
        f"{source},3,event_creation_date has an offset,"
        f"\"{NO_OFFSET.format('2026-01-05T11:00:00')}\","
        f"\"{_jsonb(raw[3]).replace(chr(34), chr(34) * 2)}\""]
    rc, out, _ = _run(capfd, "rejected", "--since", "2999-01-01")
    assert (rc, out) == (0, "0 rejected rows, 0 reasons\n")
    rc, _, err = _run(capfd, "rejected", "--rule", "no such rule")
    assert rc == cli.EXIT_USAGE
    assert "argument --rule: unknown rule 'no such rule'; expected one the load summary " \
           "names, e.g. 'event_creation_date has an offset'" in err


def _validated_reasons(rows: list[dict], assume_tz: str | None = None,
                       malformed: list | None = None) -> list[tuple[str, str]]:
    from sr_platform.core.event_files import RawEvents
    from sr_platform.core.validate import validate

    frame = pd.DataFrame(rows).fillna("").astype(str)
    frame["_line"] = range(2, 2 + len(frame))
    checked = validate(RawEvents(Path("x.csv"), "0" * 64, frame, malformed or []), assume_tz)
    return [pair for r in checked.rejected for pair in zip(r.rules, r.reasons, strict=True)]


GOOD = {"event_creation_date": "2026-01-05T10:00:00Z", "instrument": "EUR_USD",
        "granularity": "H1", "event_price_level": "1", "atr_at_event": "1",
        "new_resistance_negative_rebound": "-1", "new_resistance_negative_rebound_in_atr": "-1",
        "volume_at_event": "", "day_of_week": "", "hour_of_day": "", "event_type": "",
        "original_event_id": ""}


def test_every_rule_is_recognised_from_its_stored_reason():
    """`rejected --rule` finds rows by the shape of their reasons: every rule the loader counts
    classifies back from a reason it produced."""
    from sr_platform.core import loader, quarantine

    empty = dict.fromkeys(GOOD, "")
    bad = dict(GOOD, event_creation_date="nope", instrument="eur", granularity="M",
               event_type="a b", event_price_level="x", atr_at_event="1e30",
               new_resistance_negative_rebound="1", new_resistance_negative_rebound_in_atr="inf",
               volume_at_event="1e30", day_of_week="1.5", hour_of_day="99",
               original_event_id="not-a-uuid")
    naive = dict(GOOD, event_creation_date="2026-01-05T10:00:00", event_price_level="-1",
                 atr_at_event="0")
    numbers = dict(GOOD, event_price_level="1e300", atr_at_event="abc",
                   new_resistance_negative_rebound="1e300", day_of_week="9", hour_of_day="x",
                   new_resistance_negative_rebound_in_atr="nan")
    more = dict(GOOD, new_resistance_negative_rebound="y", volume_at_event="z",
                new_resistance_negative_rebound_in_atr="1e30")
    mismatch = dict(GOOD, day_of_week="3", hour_of_day="4")
    pairs = _validated_reasons([empty, bad, naive, numbers, more, mismatch, GOOD, GOOD],
                               malformed=[(9, {}, "expected 7 fields, saw 8")])
    pairs += _validated_reasons([dict(GOOD, event_creation_date="2026-03-29T02:30:00")],
                                assume_tz="Europe/Berlin")
    pairs.append((loader.ID_USED, loader.id_used_reason(
        "EUR_USD", "H1", datetime(2026, 1, 5, tzinfo=UTC))))
    for rule, reason in pairs:
        assert quarantine.rule_of(reason) == rule, (rule, reason)
    missing = set(quarantine.RULE_PATTERNS) - {rule for rule, _ in pairs}
    assert missing == set()


# -- exit codes ------------------------------------------------------------------------------

def test_usage_errors_exit_64_not_the_loads_2(capfd):
    rc, _, err = _run(capfd, "load")
    assert rc == 64
    assert err.splitlines()[-1] == "sr-platform load: error: the following arguments are " \
                                   "required: paths"
    assert _run(capfd, "no-such-command")[0] == 64
    assert _run(capfd, "prune", "--as-of")[0] == 64
    rc, _, err = _run(capfd, "recover", "--into", "/nonexistent")
    assert rc == 64
    assert err.splitlines()[-1] == "sr-platform: error: recover needs --to and --into " \
                                   "(or --stop DIR / --remove DIR)"


COMMANDS = ["db start", "db stop", "db status", "db url", "db upgrade", "db downgrade",
            "db current", "db history", "load", "rejected", "generate", "prune", "backup",
            "restore", "recover", "dev"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_lists_its_exit_codes_in_help(command, capfd):
    rc, out, _ = _run(capfd, *command.split(), "--help")
    assert rc == 0
    codes = out[out.index("exit codes:\n"):].splitlines()[1:]
    expected = {
        "load": ["0 every row loaded or already present",
                 "1 error, e.g. the database failed (the files it names were rolled back "
                 "whole; rerun them)",
                 "2 some rows were rejected (see `sr-platform rejected`); all other rows "
                 "loaded",
                 "3 some files are not event files (nothing of them loaded)",
                 "64 usage error (bad or missing arguments)"],
        "db status": ["0 the database is up", "1 external database unreachable",
                      "3 the local cluster is down", "64 usage error (bad or missing arguments)"],
        "backup": ["0 backup taken (and proven by a restore unless --no-verify)",
                   "1 error, or the proving restore did not match",
                   "64 usage error (bad or missing arguments)"],
    }.get(command, ["0 ok", "1 error (the message says what failed)",
                    "64 usage error (bad or missing arguments)"])
    assert [c.strip() for c in codes] == expected


def test_readme_lists_the_exit_codes():
    readme = " ".join((settings.PROJECT_ROOT / "README.md").read_text().split())
    assert "| 64 | usage error: a missing or bad argument (`sr-platform load` with no path, " \
           "an unknown time zone, a time without an offset) |" in readme
    assert "`sr-platform db status` exits 3 when the local cluster is down" in readme


# -- messages --------------------------------------------------------------------------------

def test_times_and_zones_are_refused_with_what_is_expected(capfd):
    example = "e.g. 2026-11-25T10:00:00Z, 2026-11-25T11:00:00+01:00, or 2026-11-25 " \
              "(midnight UTC)"
    rc, _, err = _run(capfd, "prune", "--as-of", "yesterday")
    assert rc == 64
    assert err.splitlines()[-1] == ("sr-platform prune: error: argument --as-of: 'yesterday' "
                                    f"is not an ISO 8601 time; expected {example}")
    rc, _, err = _run(capfd, "prune", "--as-of", "2027-01-01T10:00")
    assert rc == 64
    assert err.splitlines()[-1] == ("sr-platform prune: error: argument --as-of: "
                                    "'2027-01-01T10:00' has no UTC offset; add Z or +hh:mm, "
                                    f"{example}")
    rc, _, err = _run(capfd, "load", "x.csv", "--assume-tz", "Mars/Olympus")
    assert rc == 64
    assert err.splitlines()[-1] == (
        "sr-platform load: error: argument --assume-tz: 'Mars/Olympus' is not a known time "
        "zone; expected an IANA name, e.g. Europe/London, America/New_York or UTC")
    assert cli._parse_time("2027-01-01") == datetime(2027, 1, 1, tzinfo=UTC)
    assert cli._parse_time("2027-01-01T10:00:00+02:00") == datetime(2027, 1, 1, 8, tzinfo=UTC)


# -- prune output ----------------------------------------------------------------------------

EVENT_STAMPS = ["2024-11-19T09:00:00Z", "2024-12-01T23:00:00Z", "2024-12-02T00:00:00Z",
                "2025-06-02T10:00:00Z"]


def test_prune_dry_run_summarises_per_table_and_lists_leaves_with_verbose(cli_db, tmp_path,
                                                                          capfd):
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "".join(f"{ts},H1,PRUNE_T,1.2,0.001,-0.0005,-0.5\n"
                                     for ts in EVENT_STAMPS))
    assert _run(capfd, "load", str(path))[0] == 0
    with psycopg.connect(db.libpq_url(cli_db)) as conn:
        oldest_log = conn.execute("SELECT min(finished_at) FROM load_log").fetchone()[0]
    rc, out, _ = _run(capfd, "prune", "--as-of", "2026-12-02", "--dry-run")
    assert rc == 0
    lines = out.splitlines()
    assert lines[:-1] == [
        "retention as of 2026-12-02T00:00:00+00:00 (dry run: nothing changed):",
        "  table                          keeps rows from (cutoff)   would delete  "
        "oldest row that stays",
        "  new_resistance_events          2024-12-02T00:00:00+00:00             2  "
        "2024-12-02T00:00:00+00:00",
        "  support_and_resistance_master  2024-12-02T00:00:00+00:00             2  "
        "2024-12-02T00:00:00+00:00",
        # the load refreshed the pair's features (kept 5 years): all four stay
        "  event_features                 2021-12-02T00:00:00+00:00             0  "
        "2024-11-19T09:00:00+00:00",
        "  rejected_events                2025-12-02T00:00:00+00:00             0  - (none)",
        "  load_log                       2024-12-02T00:00:00+00:00             0  "
        f"{oldest_log.astimezone(UTC).isoformat()}",
        "  2 partitions affected (--verbose lists them)",
    ]
    assert re.fullmatch(r"  \d+\.\d\d s", lines[-1])
    rc, out, _ = _run(capfd, "prune", "--as-of", "2026-12-02", "--dry-run", "--verbose")
    assert out.splitlines()[7:9] == [
        "  would delete          2  new_resistance_events_h1_prune_t",
        "  would delete          2  support_and_resistance_master_h1_prune_t"]


def test_prune_takes_its_policy_from_the_settings_main_reads(cli_db, monkeypatch, capfd):
    """main() reads the settings once and hands the retention policy to core (which reads no
    environment): SR_PLATFORM_RETENTION_* still set the cutoffs."""
    monkeypatch.setenv("SR_PLATFORM_RETENTION_EVENTS_YEARS", "3")
    monkeypatch.setenv("SR_PLATFORM_RETENTION_REJECTED_DAYS", "30")
    rc, out, _ = _run(capfd, "prune", "--as-of", "2026-12-02", "--dry-run")
    assert rc == 0
    assert out.splitlines()[2:7] == [
        "  new_resistance_events          2023-12-02T00:00:00+00:00             0  - (none)",
        "  support_and_resistance_master  2023-12-02T00:00:00+00:00             0  - (none)",
        "  event_features                 2021-12-02T00:00:00+00:00             0  - (none)",
        "  rejected_events                2026-11-02T00:00:00+00:00             0  - (none)",
        "  load_log                       2024-12-02T00:00:00+00:00             0  - (none)"]


def test_a_setting_that_is_not_a_number_is_one_line_for_every_command(monkeypatch, capfd):
    monkeypatch.setenv("SR_PLATFORM_RETENTION_EVENTS_YEARS", "two")
    rc, _, err = _run(capfd, "db", "url")
    assert rc == 1
    assert err == ("sr-platform: error: SR_PLATFORM_RETENTION_EVENTS_YEARS='two': expected a "
                   "whole number\n")


# -- recover ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(settings.external_database_url() is not None,
                    reason="PITR needs the local cluster")
def test_recover_prints_where_the_data_went_and_stops_and_removes_it(server_url, tmp_path,
                                                                     monkeypatch, capfd):
    from sr_platform.core import pitr

    monkeypatch.setenv("SR_PLATFORM_BACKUP_DIR", str(tmp_path / "backups"))
    pitr.take_base_backup()
    into = tmp_path / "recovered"
    # a whole second after the backup finished: truncated to the second, `to` could otherwise
    # fall before it ("no base backup finished before ...")
    time.sleep(1)
    to = datetime.now(UTC).replace(microsecond=0)
    rc, out, err = _run(capfd, "recover", "--to", to.isoformat(), "--into", str(into))
    assert rc == 0, err
    cluster = pitr.recovered_cluster(into)
    try:
        assert cluster.is_running()
        assert out.splitlines() == [
            f"recovered to {to.isoformat()} into a new cluster (the live one is untouched)",
            f"url:     {db.role_url(cluster.url(settings.APP_DATABASE), db.WRITER_ROLE)}",
            f"port:    {cluster.port} (127.0.0.1 only)",
            f"data:    {cluster.data_dir}",
            f"log:     {cluster.log_file}",
            f"stop:    sr-platform recover --stop {into.resolve()}",
            f"remove:  sr-platform recover --remove {into.resolve()}   (stops it, deletes its "
            "data)"]
        rc, out, _ = _run(capfd, "recover", "--stop", str(into))
        assert rc == 0 and not cluster.is_running()
        assert out == (f"stopped the recovered cluster of {into} (its data stays in "
                       f"{cluster.data_dir}; delete it with `sr-platform recover --remove "
                       f"{into}`)\n")
        rc, out, _ = _run(capfd, "recover", "--remove", str(into))
        assert rc == 0 and not cluster.data_dir.exists()
        assert out == (f"removed the recovered cluster of {into}: stopped; {cluster.runtime} "
                       "(data, log, WAL) and its passwords deleted\n")
    finally:
        cluster.remove()
    # the project's own cluster is never a recovered one
    rc, _, err = _run(capfd, "recover", "--stop", str(settings.state_dir()))
    assert rc == 1
    assert "is the project's own cluster, not a recovered one" in err


# -- make run, dev ---------------------------------------------------------------------------

def test_make_run_takes_a_port_and_dev_says_how_to_stop(capfd):
    # not make's own "Entering/Leaving directory" lines when the suite runs under make
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    out = subprocess.run(["make", "--no-print-directory", "-n", "run", "PORT=3100"],
                         cwd=settings.PROJECT_ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[-1].endswith("/sr-platform dev --host 127.0.0.1 --port 3100")
    rc, out, _ = _run(capfd, "dev", "--help")
    assert "Ctrl-C stops Dagster, PostgreSQL keeps running until `sr-platform db stop`" in \
        " ".join(out.split())
    readme = " ".join((settings.PROJECT_ROOT / "README.md").read_text().split())
    assert "make run PORT=3100" in readme
    assert "Ctrl-C stops Dagster; PostgreSQL keeps running until `make db-stop`" in readme


def test_the_console_shows_no_debug_events_but_they_are_stored(capfd):
    python_logs = yaml.safe_load((settings.PROJECT_ROOT / "dagster.yaml").read_text())[
        "python_logs"]
    parts = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.asset(partitions_def=parts)
    def quiet(context) -> None:
        context.log.info("a line the console shows")

    with dg.instance_for_test(overrides={"python_logs": python_logs}) as instance:
        for key in ("a", "b"):
            assert dg.materialize([quiet], partition_key=key, instance=instance).success
        assert instance.get_materialized_partitions(quiet.key) == {"a", "b"}
    err = capfd.readouterr().err
    assert err.count("a line the console shows") == 2
    assert "ASSET_MATERIALIZATION" not in err
    assert "STEP_SUCCESS" not in err


def test_loading_the_definitions_warns_nothing():
    """The warnings dagster raises while building this code location are silenced where they
    arise (definitions.py, for the one message), not by a global filter: a process with every
    warning shown prints none."""
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c",
         "import sr_platform.definitions as d; d.defs.get_repository_def()"],
        capture_output=True, text=True, check=True, cwd=settings.PROJECT_ROOT)
    assert proc.stderr == ""
    assert cli.dagster_command("dev", "-p", "3100") == [
        sys.executable, "-W", "ignore:Function `dev_command` is superseded", "-m", "dagster",
        "dev", "-p", "3100"]


# -- item 2: the first screen tells the truth ------------------------------------------------

@pytest.mark.slow  # ~40 s: a `dagster asset materialize` subprocess, then the ingest run
def test_dev_loads_the_sample_once_through_dagster(server_url, make_db, tmp_path, capfd):
    """The dev setup leaves the database empty and the sample in the landing zone; the landing
    sensor's run is the one load, and its materializations carry the sample's real counts."""
    from sr_platform.definitions import defs
    from sr_platform.events.jobs import ingest_landing_files_job
    from sr_platform.events.partitions import partition_key
    from sr_platform.events.resources import LandingZone
    from sr_platform.events.sensors import landing_zone_sensor
    from sr_platform.resources import PostgresResource

    url = make_db(server_url, migrated=False)
    landing = tmp_path / "landing"
    home = tmp_path / "dagster_home"  # the project's logging settings, storage in tmp_path
    home.mkdir()
    python_logs = yaml.safe_load((settings.PROJECT_ROOT / "dagster.yaml").read_text())[
        "python_logs"]
    (home / "dagster.yaml").write_text(yaml.safe_dump({"python_logs": python_logs}))
    env = dict(os.environ, **{settings.DATABASE_URL_ENV: url,
                                            "SR_PLATFORM_LANDING_DIR": str(landing),
                                            "DAGSTER_HOME": str(home)})
    assert cli.dev_setup(env, years=0.25, instruments=2) == landing
    console = capfd.readouterr()
    assert console.out.splitlines()[0] == (
        f"generated a sample of 0.25 year of events for 2 instruments in {landing}; the landing "
        "sensor loads it within a minute of the UI opening (Runs: ingest_landing_files)")
    # `dagster asset materialize` in its own process: quiet, no expected warning shown
    assert "Warning" not in console.err
    assert "ASSET_MATERIALIZATION" not in console.err
    files = sorted(landing.glob("*.csv"))
    in_files = sum(len(f.read_text().splitlines()) - 1 for f in files)
    per_pair = pd.concat([pd.read_csv(f) for f in files]).groupby(
        ["instrument", "granularity"]).size().to_dict()
    with psycopg.connect(db.libpq_url(url)) as conn:
        assert conn.execute("SELECT count(*) FROM new_resistance_events").fetchone()[0] == 0
    resources = {"postgres": PostgresResource(database_url=url),
                 "landing_zone": LandingZone(path=str(landing))}
    with dg.instance_for_test() as instance:
        tick = landing_zone_sensor(dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs))
        for add in tick.dynamic_partitions_requests:
            instance.add_dynamic_partitions(add.partitions_def_name, add.partition_keys)
        (req,) = tick.run_requests
        run = ingest_landing_files_job.execute_in_process(
            run_config=req.run_config, tags=req.tags, instance=instance, resources=resources)
        assert run.success
        loaded = {m.materialization.partition: m.materialization.metadata
                  for m in run.get_asset_materialization_events()
                  if m.materialization.asset_key.to_user_string() == "new_resistance_events"}
    # each partition's first materialization: every row of the sample loaded by this run
    assert {k: (m["rows_loaded"].value, m["partition_rows"].value) for k, m in loaded.items()} \
        == {str(partition_key(i, g)): (n, n) for (i, g), n in per_pair.items()}
    assert sum(per_pair.values()) == in_files
    with psycopg.connect(db.libpq_url(url)) as conn:
        assert conn.execute("SELECT count(*) FROM new_resistance_events").fetchone()[0] == \
            in_files

