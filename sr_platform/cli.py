"""`sr-platform`: the command-line face over sr_platform.core."""

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url

# backup, migrate (alembic) and catalog are imported by the commands that use them: alembic
# alone is 0.35 s of every `sr-platform load`'s start
from .core import db, landing, loader, settings
from .core.load_summary import load_summary_lines
from .core.text import printable


def _db_start(args) -> int:
    if settings.external_database_url():
        print(f"{settings.DATABASE_URL_ENV} is set: nothing local to start")
        return 0
    cluster = db.local_cluster()
    cluster.start()
    db.ensure_database(cluster.url(), settings.APP_DATABASE, owner=db.OWNER_ROLE)
    print(f"PostgreSQL running on 127.0.0.1:{cluster.port} (data in {cluster.data_dir})")
    return 0


def _db_stop(args) -> int:
    if settings.external_database_url():
        print(f"{settings.DATABASE_URL_ENV} is set: nothing local to stop")
        return 0
    db.local_cluster().stop()
    print("PostgreSQL stopped")
    return 0


def _db_status(args) -> int:
    from .core import migrate
    from .core.catalog import schema_summary
    external = settings.external_database_url()
    if external:
        u = make_url(external)
        print(f"database: external ({settings.DATABASE_URL_ENV}) {u.host}:{u.port}/{u.database}")
        try:
            s = schema_summary(db.database_url(role=db.READER_ROLE))  # a read: as the reader
        except Exception as exc:  # noqa: BLE001 - status reports, never raises
            print(f"state:    unreachable ({exc.__class__.__name__}: {exc})")
            return 1
        print(f"version:  PostgreSQL {s.server_version}\nrevision: {s.revision}")
        return 0
    st = db.local_cluster().status()
    runs_as = f"{st.service_user} (we are root; PostgreSQL refuses to run as root)" \
        if st.service_user else "the current user"
    print(f"database: local cluster\ndata:     {st.data_dir}\nruntime:  {st.runtime_dir}\n"
          f"runs as:  {runs_as}\nport:     {st.port} (127.0.0.1 only)\n"
          f"auth:     scram-sha-256; passwords in {st.passfile} (0600)\n"
          f"version:  {st.version}\nbinaries: {st.bin_dir}\nlog:      {st.log_file}\n"
          f"state:    {'up' if st.running else 'down'}")
    if st.running:
        print(f"revision: {migrate.current(db.database_url())}")
    return EXIT_OK if st.running else EXIT_DOWN


def _db_url(args) -> int:
    url = db.database_url(args.database, role=ROLE_CHOICES[args.role])
    print(db.sqlalchemy_url(url, args.driver) if args.driver else url)
    return 0


def _db_upgrade(args) -> int:
    from .core import backup, migrate
    if args.backup_first:
        b = backup.take_backup(root=args.settings.backup_dir,
                               dagster_url=args.settings.database.dagster_storage_url)
        print(f"backup {b.id} {b.path} (restore with `sr-platform restore {b.id} --into NAME`)")
    owner = db.database_url(role=db.OWNER_ROLE)  # SR_PLATFORM_OWNER_URL where set
    migrate.upgrade(owner, args.revision)
    print(f"at revision {migrate.current(owner)}")
    return 0


def _db_downgrade(args) -> int:
    from .core import backup, migrate
    if args.backup_first:
        b = backup.take_backup(root=args.settings.backup_dir,
                               dagster_url=args.settings.database.dagster_storage_url)
        print(f"backup {b.id} {b.path} (restore with `sr-platform restore {b.id} --into NAME`)")
    owner = db.database_url(role=db.OWNER_ROLE)
    migrate.downgrade(owner, args.revision, allow_data_loss=args.allow_data_loss)
    print(f"at revision {migrate.current(owner)}")
    return 0


def _db_current(args) -> int:
    from .core import migrate
    rev = migrate.current(db.database_url(role=db.OWNER_ROLE))
    print(f"{rev} (head)" if rev == migrate.head() else str(rev))
    return 0


def _db_history(args) -> int:
    from .core import migrate
    for rev, down, doc in migrate.history():
        print(f"{down or 'base'} -> {rev}: {doc}")
    return 0


ROLE_CHOICES = {"writer": db.WRITER_ROLE, "reader": db.READER_ROLE, "owner": db.OWNER_ROLE,
                "admin": db.ADMIN_ROLE}
EXIT_OK, EXIT_ERROR, EXIT_REJECTED, EXIT_NOT_EVENT_FILE = 0, 1, 2, 3
EXIT_DOWN = 3  # db status: the local cluster is not running
EXIT_USAGE = 64  # sysexits.h EX_USAGE: bad arguments (argparse's own 2 is the load's "rejected")


def _progress_factory(enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    def factory(path: Path, _total: int):
        if path.stat().st_size < 5_000_000:  # small files finish before a bar helps
            return None
        bar = tqdm(desc=printable(path.name), unit=" rows", unit_scale=True, leave=False)
        return bar.update

    return factory


def print_load_summary(results: list[loader.LoadResult], out=None) -> None:
    """The load summary table, as the landing run logs it (core/load_summary.py)."""
    print("\n".join(load_summary_lines(results)), file=out or sys.stdout)


def print_derived_summary(reports, out=None) -> None:
    """What the load left derived: every touched pair's levels and features refreshed."""
    out = out or sys.stdout
    if not reports:
        return
    changed = sum(r.levels["changed"] for r in reports)
    breached = sum(r.levels["breached"] for r in reports)
    features = sum(r.features["written"] for r in reports)
    print(f"derived: {len(reports)} pairs refreshed: levels {changed:,} changed "
          f"({breached:,} breached in all), features {features:,} written", file=out)


def _load(args) -> int:
    from .core import ingest

    files = loader.find_event_files(args.paths)
    if not files:
        print("sr-platform: error: no event files found", file=sys.stderr)
        return EXIT_ERROR
    run = ingest.Ingest(db.database_url(), files, origin="cli", assume_tz=args.assume_tz,
                        progress_factory=_progress_factory(sys.stderr.isatty()))
    reports = run.run()
    results = run.results
    print_load_summary(results)
    print_derived_summary(reports)
    if any(r.database_failed for r in results):
        return EXIT_ERROR
    if any(r.error for r in results):
        return EXIT_NOT_EVENT_FILE
    if any(r.rejected for r in results):
        return EXIT_REJECTED
    return EXIT_OK


def _generate(args) -> int:
    from .core.generate import write_event_files

    paths = write_event_files(Path(args.out), years=args.years, instruments=args.instruments,
                              seed=args.seed, event_rate=args.event_rate, fmt=args.format)
    print(f"wrote {len(paths)} files to {args.out}")
    return EXIT_OK


TIME_EXAMPLE = "e.g. 2026-11-25T10:00:00Z, 2026-11-25T11:00:00+01:00, or 2026-11-25 (midnight UTC)"


def _parse_time(text: str) -> datetime:
    """An ISO 8601 instant with Z or an offset; a bare date means its midnight UTC."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time; expected {TIME_EXAMPLE}") from None
    if t.tzinfo is None:
        if len(text.strip()) == 10:  # YYYY-MM-DD: a day, taken as its start in UTC
            return t.replace(tzinfo=UTC)
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset; add Z or +hh:mm, {TIME_EXAMPLE}")
    return t


def _time_zone(text: str) -> str:
    """An IANA time zone name, checked when the arguments are parsed."""
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a known time zone; expected an IANA name, e.g. Europe/London, "
            "America/New_York or UTC") from None
    return text


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1, e.g. 20")
    return n


def _rule(text: str) -> str:
    from .core.quarantine import RULE_PATTERNS

    if text not in RULE_PATTERNS:
        raise argparse.ArgumentTypeError(
            f"unknown rule {text!r}; expected one the load summary names, e.g. "
            f"'event_creation_date has an offset' (all: {', '.join(RULE_PATTERNS)})")
    return text


def _rejected(args) -> int:
    from .core import quarantine

    file = args.file
    if file is not None and Path(file).exists():
        file = str(Path(file).resolve())  # the loader stores the resolved path
    rows = quarantine.rejected_rows(file=file, rule=args.rule, since=args.since,
                                    limit=args.limit)
    fields = ("file", "line", "rule", "reason", "raw")
    if args.format == "json":
        print(json.dumps([{"file": r.file, "line": r.line, "rule": r.rule, "reason": r.reason,
                           "raw": r.raw} for r in rows], indent=1))
    elif args.format == "csv":
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(fields)
        for r in rows:
            w.writerow((r.file, r.line, r.rule, r.reason, json.dumps(r.raw)))
    else:
        for r in rows:
            print(f"{r.file}:{r.line}  [{r.rule}]  {r.reason}\n    raw: {json.dumps(r.raw)}")
        lines = len({(r.file, r.line) for r in rows})
        more = f" (at most {args.limit}; --limit N for more)" if lines == args.limit else ""
        print(f"{lines} rejected rows, {len(rows)} reasons{more}")
    return EXIT_OK


def _export(args) -> int:
    from .core import reading

    try:
        q = reading.Query.make(args.instrument, args.granularity, args.start, args.end)
        if args.out.suffix.lower() not in reading.EXPORT_SUFFIXES:
            raise ValueError(f"--out: {args.out.name!r} must end in .parquet or .csv")
    except ValueError as exc:
        raise UsageError(f"--{exc}") from None
    if args.out.exists() and not args.force:
        raise UsageError(f"--out: {args.out} exists; --force replaces it")
    rows = reading.export_events(q, args.out, db.database_url(role=db.READER_ROLE))
    print(f"exported {rows} events to {args.out} (reload with `sr-platform load {args.out}`)")
    return EXIT_OK


def _prune(args) -> int:
    from .core import retention

    report = retention.prune(as_of=args.as_of, dry_run=args.dry_run,
                             archive_dir=args.settings.backup_dir / "archive" if args.archive
                             else None, policy=args.settings.retention)
    cutoffs = dict(report.cutoffs)
    cutoffs.setdefault(retention.LEVELS, cutoffs[retention.EVENTS])  # levels go with events
    kept = retention.oldest_kept(db.database_url(role=db.READER_ROLE), cutoffs)
    verb = "would delete" if report.dry_run else "deleted"
    print(f"retention as of {report.as_of.isoformat()} "
          f"({'dry run: nothing changed' if report.dry_run else 'applied'}):")
    w = max(len(t) for t in report.rows)
    print(f"  {'table':<{w}}  {'keeps rows from (cutoff)':<25}  {verb:>12}  oldest row that stays")
    for table, n in report.rows.items():
        oldest = kept.get(table)
        print(f"  {table:<{w}}  {cutoffs[table].isoformat():<25}  {n:>12,}  "
              f"{oldest.isoformat() if oldest else '- (none)'}")
    if args.verbose:
        for lp in report.leaves:
            print(f"  {verb} {lp.rows:>10,}  {lp.partition}")
    elif report.leaves:
        print(f"  {len(report.leaves)} partitions affected (--verbose lists them)")
    for path in report.archived:
        print(f"  archived: {path}")
    print(f"  {report.seconds:.2f} s")
    return EXIT_OK


def _backup(args) -> int:
    from .core import backup, backup_cycle, pitr
    root = args.settings.backup_dir
    if args.action == "list":
        for line in backup.cleanup(root=root):
            print(f"removed {line} (left by a killed or failed run)")
        rows = [(b.id, "logical", b.created_at, b.bytes,
                 "yes" if b.verified and b.verified.get("ok") else
                 "FAILED" if b.verified else "no", str(b.path))
                for b in backup.list_backups(root)]
        rows += [(b.id, "physical", b.started_at, b.bytes, "pg_verifybackup", str(b.path))
                 for b in pitr.list_base_backups(root)]
        print(f"{'id':<20} {'kind':<9} {'created (UTC)':<20} {'bytes':>14} {'restored':<15} path")
        for bid, kind, created, size, verified, path in sorted(rows, key=lambda r: r[2]):
            print(f"{bid:<20} {kind:<9} {created:%Y-%m-%d %H:%M:%S} {size:>14,} {verified:<15} "
                  f"{path}")
        return EXIT_OK
    c = backup_cycle.run(root=root, verify=not args.no_verify,
                         dagster_url=args.settings.database.dagster_storage_url)
    for line in c.cleaned:
        print(f"removed {line} (left by a killed or failed run)")
    print(f"{c.logical.id} {c.logical.path}")
    if c.base is not None:
        print(f"{c.base.id} {c.base.path} (physical base backup)")
    if c.verification is not None:
        print(f"restored into a scratch database: {'ok' if c.ok else 'MISMATCH'} "
              f"({c.verification['restore_seconds']} s)")
    if c.rotated_logical or c.rotated_base:
        print(f"rotated out: {', '.join(c.rotated_logical) or '-'} (logical); "
              f"{', '.join(c.rotated_base) or '-'} (physical); WAL archive trimmed")
    return EXIT_OK if c.ok else EXIT_ERROR


def _restore(args) -> int:
    from .core import backup
    counts = backup.restore(args.backup_id, args.into, replace=args.replace,
                            root=args.settings.backup_dir)
    print(f"restored {args.backup_id} into database {args.into}: "
          + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    return EXIT_OK


def _recover(args) -> int:
    from .core import pitr

    if args.stop or args.remove:
        home = Path(args.stop or args.remove)
        cluster = pitr.recovered_cluster(home)
        if args.stop:
            cluster.stop()
            print(f"stopped the recovered cluster of {home} (its data stays in "
                  f"{cluster.data_dir}; delete it with `sr-platform recover --remove {home}`)")
        else:
            cluster.remove()
            print(f"removed the recovered cluster of {home}: stopped; {cluster.runtime} (data, "
                  "log, WAL) and its passwords deleted")
        return EXIT_OK
    if not (args.to and args.into):
        raise UsageError("recover needs --to and --into (or --stop DIR / --remove DIR)")
    url, cluster = pitr.recover(args.to, Path(args.into), args.port,
                                root=args.settings.backup_dir)
    home = cluster.home
    print(f"recovered to {args.to.isoformat()} into a new cluster (the live one is untouched)\n"
          f"url:     {url}\n"
          f"port:    {cluster.port} (127.0.0.1 only)\n"
          f"data:    {cluster.data_dir}\n"
          f"log:     {cluster.log_file}\n"
          f"stop:    sr-platform recover --stop {home}\n"
          f"remove:  sr-platform recover --remove {home}   (stops it, deletes its data)")
    return EXIT_OK


def _watch(args) -> int:
    """Print committed changes as they happen until Ctrl-C or SIGTERM (both exit 0)."""
    import signal
    import threading

    from .core.changes import subscribe

    def stop(signum, frame):
        # a clean stop closes the connection; if the interrupt lands inside psycopg and comes
        # back as a lost connection, subscribe would retry it: exit 0 regardless after 2 s
        # (every line is flushed as printed)
        timer = threading.Timer(2.0, os._exit, args=(EXIT_OK,))
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    channels = (args.channel,) if args.channel else ("events", "levels")
    try:
        for c in subscribe(channels, since=args.since):
            if args.json:
                line = json.dumps(c.to_json())
            else:
                d = c.to_json()
                extra = "".join(f" {k}={d[k]}" for k in ("load_id", "breached", "tested")
                                if k in d)
                line = (f"{c.seq} {c.channel} {c.op} {c.instrument} {c.granularity} "
                        f"rows={c.rows} {d['first']}..{d['last']}{extra}")
            print(line, flush=True)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `watch | head`: the reader left
        sys.stderr.close()
    return EXIT_OK


def _add_watch(sub) -> None:
    w = _add(sub, "watch", help="print committed changes of events and level outcomes as "
             "they happen (docs/realtime.md); Ctrl-C stops")
    w.add_argument("--since", type=int, default=None, metavar="SEQ",
                   help="first replay the logged changes after SEQ (default: from now)")
    w.add_argument("--channel", choices=["events", "levels"], default=None,
                   help="one channel only (default both)")
    w.add_argument("--json", action="store_true", help="one JSON object per line")
    w.set_defaults(fn=_watch)


def dev_environment() -> dict[str, str]:
    """Environment for Dagster processes: DAGSTER_HOME, the landing zone and the URL of
    Dagster's storage (as its own login role). The local cluster's URL is NOT put in
    SR_PLATFORM_DATABASE_URL: that variable means another server, where backup_job takes no
    physical base backup and recover is refused; Dagster finds the local cluster itself."""
    url = db.database_url()
    db.ensure_database(url, settings.DAGSTER_DATABASE, owner=db.DAGSTER_ROLE)
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(settings.PROJECT_ROOT))
    env["SR_PLATFORM_LANDING_DIR"] = str(settings.landing_dir())
    env.setdefault("SR_PLATFORM_DAGSTER_STORAGE_URL", db.sqlalchemy_url(
        db.role_url(db.with_database(url, settings.DAGSTER_DATABASE), db.DAGSTER_ROLE),
        "psycopg2"))
    return env


SAMPLE_YEARS, SAMPLE_INSTRUMENTS = 1.0, 28


def dagster_command(command: str, *args: str) -> list[str]:
    """argv of `dagster COMMAND ...`, in this Python, with the one warning the command itself
    raises silenced in its own process only: dagster 1.13 marks its `dev` and
    `asset materialize` commands superseded by the `dg` CLI (which `sr-platform dg` runs;
    `make run` keeps `dagster dev` with the project's workspace.yaml)."""
    function = {"dev": "dev_command", "asset": "asset_materialize_command"}[command]
    return [sys.executable, "-W", f"ignore:Function `{function}` is superseded",
            "-m", "dagster", command, *args]


def dev_setup(env: dict[str, str], years: float = SAMPLE_YEARS,
              instruments: int = SAMPLE_INSTRUMENTS) -> Path:
    """What `sr-platform dev` does before `dagster dev`: migrate, put a sample in the landing
    zone when it holds no event file, materialize the schema asset. Returns the landing zone.

    The sample is loaded one way only: by the landing sensor's run, through Dagster, so the
    first run and the first materializations a new user opens carry the sample's real counts
    (loading it here too made that run say "0 loaded, 45,956 duplicate")."""
    from .core import migrate

    migrate.upgrade(env.get(settings.DATABASE_URL_ENV) or db.database_url())
    sample = Path(env["SR_PLATFORM_LANDING_DIR"])
    if not landing.event_files(sample):
        from .core.generate import write_event_files

        write_event_files(sample, years=years, instruments=instruments, seed=0)
        print(f"generated a sample of {years:g} year of events for {instruments} instruments "
              f"in {sample}; the landing sensor loads it within a minute of the UI opening "
              "(Runs: ingest_landing_files)")
    subprocess.run(dagster_command("asset", "materialize", "-m", "sr_platform.definitions",
                                   "--select", "database_schema"), env=env, check=True)
    return sample


def _dev(args) -> int:
    """Start PostgreSQL, migrate, materialize the schema asset, then run `dagster dev`."""
    env = dev_environment()
    dev_setup(env)
    workspace = str(settings.PROJECT_ROOT / "workspace.yaml")
    print(f"Dagster UI: http://{args.host}:{args.port}\n"
          "stop: Ctrl-C stops Dagster; PostgreSQL keeps running (`sr-platform db stop` or "
          "`make db-stop` stops it)", flush=True)
    argv = dagster_command("dev", "-h", args.host, "-p", str(args.port), "-w", workspace)
    # what Dagster writes under DAGSTER_HOME (compute logs with op output, run history) is
    # private to our user, like everything else the platform writes
    os.umask(0o077)
    os.execve(argv[0], argv, env)


def _dg(args) -> int:
    """Dagster's `dg` CLI on this project (pyproject's [tool.dg]) with the environment `make run`
    gives Dagster: the project's DAGSTER_HOME, its storage URL and landing zone. `dg dev`
    first does what `sr-platform dev` does before serving (migrate, sample, schema asset)."""
    env = dev_environment()
    env.setdefault("VIRTUAL_ENV", sys.prefix)  # dg warns when no venv is active
    if args.dg_args[:1] == ["dev"]:
        dev_setup(env)
    dg = str(Path(sys.executable).with_name("dg"))
    os.umask(0o077)
    os.chdir(settings.PROJECT_ROOT)
    os.execve(dg, [dg, *args.dg_args], env)


class UsageError(Exception):
    """Arguments that parse but do not fit together: exit EXIT_USAGE."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits EXIT_USAGE (64), not 2: 2 means "rows rejected"."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


COMMON_CODES = (f"{EXIT_OK} ok", f"{EXIT_ERROR} error (the message says what failed)",
                f"{EXIT_USAGE} usage error (bad or missing arguments)")
EXIT_CODES = {  # command -> its own exit codes, besides COMMON_CODES
    "load": (f"{EXIT_OK} every row loaded or already present",
             f"{EXIT_ERROR} error, e.g. the database failed (the files it names were rolled "
             "back whole; rerun them)",
             f"{EXIT_REJECTED} some rows were rejected (see `sr-platform rejected`); all other "
             "rows loaded",
             f"{EXIT_NOT_EVENT_FILE} some files are not event files (nothing of them loaded)"),
    "db status": (f"{EXIT_OK} the database is up", f"{EXIT_ERROR} external database unreachable",
                  f"{EXIT_DOWN} the local cluster is down"),
    "export": (f"{EXIT_OK} the file is written (with no rows when nothing matched)",
               f"{EXIT_ERROR} error, e.g. the database is unreachable (no file left behind)"),
    "backup": (f"{EXIT_OK} backup taken (and proven by a restore unless --no-verify)",
               f"{EXIT_ERROR} error, or the proving restore did not match"),
}


def _epilog(command: str) -> str:
    codes = EXIT_CODES.get(command, ())
    numbers = {c.split()[0] for c in codes}
    rows = list(codes) + [c for c in COMMON_CODES if c.split()[0] not in numbers]
    return "exit codes:\n" + "\n".join(f"  {c}" for c in rows)


def _add(sub, name: str, command: str | None = None, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(name, epilog=_epilog(command or name),
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def _add_db_command(sub) -> None:
    dbp = _add(sub, "db", help="the database: local cluster and migrations")
    dbs = dbp.add_subparsers(dest="db_command", required=True)
    _add(dbs, "start", "db start", help="start the local cluster").set_defaults(fn=_db_start)
    _add(dbs, "stop", "db stop", help="stop the local cluster").set_defaults(fn=_db_stop)
    _add(dbs, "status", "db status",
         help="where the data lives, port, version, up/down").set_defaults(fn=_db_status)
    u = _add(dbs, "url", "db url", help="print the database URL")
    u.add_argument("--database", default=None, help="another database on the same server")
    u.add_argument("--driver", default=None, help="SQLAlchemy driver suffix, e.g. psycopg2")
    u.add_argument("--role", choices=list(ROLE_CHOICES), default="writer",
                   help="whose rights the URL carries (local cluster; default writer: loads). "
                   "reader for analysts, owner for migrations, admin for cluster work")
    u.set_defaults(fn=_db_url)
    up = _add(dbs, "upgrade", "db upgrade", help="migrate forward (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    up.add_argument("--backup-first", action="store_true",
                    help="take a logical backup before migrating")
    up.set_defaults(fn=_db_upgrade)
    down = _add(dbs, "downgrade", "db downgrade",
                help="migrate back to REV ('base' removes everything)")
    down.add_argument("revision")
    down.add_argument("--backup-first", action="store_true",
                      help="take a logical backup before migrating")
    down.add_argument("--allow-data-loss", action="store_true",
                      help="let a down step drop tables that hold rows (back up first)")
    down.set_defaults(fn=_db_downgrade)
    _add(dbs, "current", "db current",
         help="the database's revision").set_defaults(fn=_db_current)
    _add(dbs, "history", "db history",
         help="all revisions, oldest first").set_defaults(fn=_db_history)


def _add_load_command(sub) -> None:
    ld = _add(sub, "load", help="load event files (CSV/Parquet) or folders of them")
    ld.add_argument("paths", nargs="+", type=Path)
    ld.add_argument("--assume-tz", default=None, metavar="TZ", type=_time_zone,
                    help="IANA zone of timestamps written without an offset, e.g. "
                    "Europe/London (default: refuse them)")
    ld.set_defaults(fn=_load)


def _add_rejected_command(sub) -> None:
    rj = _add(sub, "rejected", help="list quarantined rows (table rejected_events): file, "
              "line, rule, reason, raw row; newest load first")
    rj.add_argument("--file", default=None, metavar="PATH",
                    help="only this file (its path, or its name)")
    rj.add_argument("--rule", default=None, metavar="RULE", type=_rule,
                    help="only rows breaking RULE, as the load summary names it "
                    "(e.g. 'event_creation_date has an offset')")
    rj.add_argument("--since", default=None, metavar="ISO8601", type=_parse_time,
                    help=f"only rows rejected at or after this time ({TIME_EXAMPLE})")
    rj.add_argument("--limit", default=100, metavar="N", type=_positive_int,
                    help="at most N rows (default 100)")
    rj.add_argument("--format", choices=["table", "csv", "json"], default="table")
    rj.set_defaults(fn=_rejected)


def _add_generate_command(sub) -> None:
    gen = _add(sub, "generate", help="write synthetic event files")
    gen.add_argument("--years", type=float, default=1.0)
    gen.add_argument("--instruments", type=int, default=28)
    gen.add_argument("--out", required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--event-rate", type=float, default=0.2,
                     help="share of bars that become events")
    gen.add_argument("--format", choices=["csv", "parquet"], default="csv")
    gen.set_defaults(fn=_generate)


def _add_export_command(sub) -> None:
    ex = _add(sub, "export", help="write events to an event file (Parquet or CSV) that "
              "`sr-platform load` reloads exactly")
    ex.add_argument("--instrument", action="append", metavar="NAME",
                    help="e.g. EUR_USD (repeat for more; default all)")
    ex.add_argument("--granularity", action="append", choices=["W", "D", "H4", "H1"],
                    help="repeat for more (default all)")
    ex.add_argument("--start", metavar="ISO8601", type=_parse_time,
                    help=f"events at or after this time ({TIME_EXAMPLE})")
    ex.add_argument("--end", metavar="ISO8601", type=_parse_time,
                    help="events before this time")
    ex.add_argument("--out", required=True, type=Path, metavar="FILE.parquet|FILE.csv")
    ex.add_argument("--force", action="store_true", help="replace --out if it exists")
    ex.set_defaults(fn=_export)


def _add_prune_command(sub) -> None:
    pr = _add(sub, "prune", help="apply the retention policy (2 y events, 5 y features)")
    pr.add_argument("--as-of", default=None, metavar="ISO8601", type=_parse_time,
                    help=f"prune as if it were this time (default now; {TIME_EXAMPLE})")
    pr.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    pr.add_argument("--archive", action="store_true",
                    help="write pruned events/features to Parquet under the backup directory")
    pr.add_argument("--verbose", action="store_true", help="also list every partition affected")
    pr.set_defaults(fn=_prune)


def _add_backup_command(sub) -> None:
    bk = _add(sub, "backup", help="take a backup (logical + physical on the local "
              "cluster), restore it into a scratch database to prove it; or list")
    bk.add_argument("action", nargs="?", choices=["list"], default=None)
    bk.add_argument("--no-verify", action="store_true", help="skip the proving restore")
    bk.set_defaults(fn=_backup)


def _add_restore_command(sub) -> None:
    rs = _add(sub, "restore", help="restore a logical backup into a new database")
    rs.add_argument("backup_id")
    rs.add_argument("--into", required=True, metavar="DBNAME")
    rs.add_argument("--replace", action="store_true",
                    help="drop and replace DBNAME if it exists")
    rs.set_defaults(fn=_restore)


def _add_recover_command(sub) -> None:
    rc = _add(sub, "recover", help="point-in-time recovery into a NEW local cluster; "
              "--stop/--remove DIR stop or delete a recovered one")
    rc.add_argument("--to", metavar="ISO8601", type=_parse_time,
                    help=f"the instant to recover to ({TIME_EXAMPLE})")
    rc.add_argument("--into", metavar="DIR", help="a new directory for the recovered cluster")
    rc.add_argument("--port", type=int, default=None)
    done = rc.add_mutually_exclusive_group()
    done.add_argument("--stop", metavar="DIR", help="stop the cluster recovered into DIR")
    done.add_argument("--remove", metavar="DIR",
                      help="stop the cluster recovered into DIR and delete its data")
    rc.set_defaults(fn=_recover)


def _add_dev_command(sub) -> None:
    dev = _add(sub, "dev", help="start everything and serve the Dagster UI (what `make run` "
               "runs)", description="Start PostgreSQL, migrate, put a sample in the landing "
               "zone (the landing sensor loads it), serve the Dagster UI. Ctrl-C stops Dagster, "
               "PostgreSQL keeps running until `sr-platform db stop`.")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000, help="the UI's port (default 3000)")
    dev.set_defaults(fn=_dev)


def _add_dg_command(sub) -> None:
    dgp = _add(sub, "dg", help="Dagster's dg CLI with the platform's environment, e.g. "
               "`sr-platform dg check defs`, `dg list defs`, `dg dev`")
    dgp.add_argument("dg_args", nargs=argparse.REMAINDER, metavar="ARGS")
    dgp.set_defaults(fn=_dg)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sr-platform", description=__doc__, epilog=_epilog(""),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_db_command, _add_load_command, _add_rejected_command,
                _add_generate_command, _add_export_command, _add_prune_command,
                _add_backup_command, _add_restore_command, _add_recover_command,
                _add_dev_command, _add_dg_command, _add_watch):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.settings = settings.from_env()  # read once; each command passes on what it needs
        return args.fn(args) or 0
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"sr-platform: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # one clear line for operators; tracebacks with SR_PLATFORM_DEBUG
        if os.environ.get("SR_PLATFORM_DEBUG"):
            raise
        print(f"sr-platform: error: {printable(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
