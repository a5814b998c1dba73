"""`sr-platform`: the command-line face over sr_platform.core."""

import argparse
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url

# backup, migrate (alembic) and catalog are imported by the commands that use them: alembic
# alone is 0.35 s of every `sr-platform load`'s start
from .core import db, landing, loader, settings


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
            s = schema_summary(external)
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
    return 0 if st.running else 3


def _db_url(args) -> int:
    url = db.database_url(args.database, role=ROLE_CHOICES[args.role])
    print(db.sqlalchemy_url(url, args.driver) if args.driver else url)
    return 0


def _db_upgrade(args) -> int:
    from .core import backup, migrate
    if args.backup_first:
        b = backup.take_backup()
        print(f"backup {b.id} {b.path} (restore with `sr-platform restore {b.id} --into NAME`)")
    migrate.upgrade(db.database_url(), args.revision)
    print(f"at revision {migrate.current(db.database_url())}")
    return 0


def _db_downgrade(args) -> int:
    from .core import backup, migrate
    if args.backup_first:
        b = backup.take_backup()
        print(f"backup {b.id} {b.path} (restore with `sr-platform restore {b.id} --into NAME`)")
    migrate.downgrade(db.database_url(), args.revision, allow_data_loss=args.allow_data_loss)
    print(f"at revision {migrate.current(db.database_url())}")
    return 0


def _db_current(args) -> int:
    from .core import migrate
    rev = migrate.current(db.database_url())
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


def _progress_factory(enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    def factory(path: Path, _total: int):
        if path.stat().st_size < 5_000_000:  # small files finish before a bar helps
            return None
        bar = tqdm(desc=path.name, unit=" rows", unit_scale=True, leave=False)
        return bar.update

    return factory


def print_load_summary(results: list[loader.LoadResult], out=sys.stdout) -> None:
    w = max([len(r.path.name) for r in results] + [5])
    print(f"{'file':<{w}} {'read':>10} {'loaded':>10} {'duplicate':>10} {'rejected':>9} "
          f"{'rows/s':>10}", file=out)
    for r in results:
        if r.error:
            print(f"{r.path.name:<{w}} {'not loaded: ' + r.error}", file=out)
            continue
        print(f"{r.path.name:<{w}} {r.rows_read:>10,} {r.loaded:>10,} {r.duplicates:>10,} "
              f"{r.rejected:>9,} {r.rows_per_second:>10,.0f}", file=out)
    ok = [r for r in results if not r.error]
    secs = sum(r.seconds for r in ok)
    read = sum(r.rows_read for r in ok)
    print(f"{'total':<{w}} {read:>10,} {sum(r.loaded for r in ok):>10,} "
          f"{sum(r.duplicates for r in ok):>10,} {sum(r.rejected for r in ok):>9,} "
          f"{(read / secs if secs else 0):>10,.0f}   ({len(results)} files, {secs:.1f} s)",
          file=out)
    for r in ok:
        if r.ignored_columns:
            print(f"note: {r.path.name}: ignored columns not in the contract: "
                  f"{', '.join(r.ignored_columns)}", file=out)
    reasons = sum((r.reasons for r in ok), Counter())
    if reasons:
        print("top reasons for rejected rows (all in table rejected_events):", file=out)
        for rule, count in reasons.most_common(8):
            print(f"  {count:>8,}  {rule}", file=out)


def _load(args) -> int:
    results = loader.load_paths(args.paths, assume_tz=args.assume_tz,
                                progress_factory=_progress_factory(sys.stderr.isatty()))
    if not results:
        print("sr-platform: error: no event files found", file=sys.stderr)
        return EXIT_ERROR
    print_load_summary(results)
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


def _parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (write Z or +hh:mm)")
    return t


def _prune(args) -> int:
    from .core import backup, retention

    report = retention.prune(as_of=_parse_time(args.as_of) if args.as_of else None,
                             dry_run=args.dry_run,
                             archive_dir=backup.backup_dir() / "archive" if args.archive
                             else None)
    verb = "would delete" if report.dry_run else "deleted"
    print(f"retention as of {report.as_of.isoformat()} ({'dry run' if report.dry_run else ''}"
          f"{'' if report.dry_run else 'applied'}):")
    for table, cutoff in report.cutoffs.items():
        print(f"  {table:<32} keeps rows from {cutoff.isoformat()}")
    for lp in report.leaves:
        print(f"  {verb} {lp.rows:>10,}  {lp.partition}")
    for table, n in report.rows.items():
        oldest = report.oldest.get(table)
        print(f"  {table:<32} {verb} {n:>10,}; oldest kept: "
              f"{oldest.isoformat() if oldest else '-'}")
    for path in report.archived:
        print(f"  archived: {path}")
    print(f"  {report.seconds:.2f} s")
    return EXIT_OK


def _backup(args) -> int:
    from .core import backup, backup_cycle, pitr
    if args.action == "list":
        for line in backup.cleanup():
            print(f"removed {line} (left by a killed or failed run)")
        rows = [(b.id, "logical", b.created_at, b.bytes,
                 "yes" if b.verified and b.verified.get("ok") else
                 "FAILED" if b.verified else "no", str(b.path))
                for b in backup.list_backups()]
        rows += [(b.id, "physical", b.started_at, b.bytes, "pg_verifybackup", str(b.path))
                 for b in pitr.list_base_backups()]
        print(f"{'id':<20} {'kind':<9} {'created (UTC)':<20} {'bytes':>14} {'restored':<15} path")
        for bid, kind, created, size, verified, path in sorted(rows, key=lambda r: r[2]):
            print(f"{bid:<20} {kind:<9} {created:%Y-%m-%d %H:%M:%S} {size:>14,} {verified:<15} "
                  f"{path}")
        return EXIT_OK
    c = backup_cycle.run(verify=not args.no_verify)
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
    counts = backup.restore(args.backup_id, args.into, replace=args.replace)
    print(f"restored {args.backup_id} into database {args.into}: "
          + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    return EXIT_OK


def _recover(args) -> int:
    from .core import pitr

    url, _ = pitr.recover(_parse_time(args.to), Path(args.into), args.port)
    print(url)
    return EXIT_OK


def dev_environment() -> dict[str, str]:
    """Environment for Dagster processes: DAGSTER_HOME, the landing zone and the URL of
    Dagster's storage (as its own login role). The local cluster's URL is NOT put in
    SR_PLATFORM_DATABASE_URL: that variable means another server, where backup_job takes no
    physical base backup and recover is refused; Dagster finds the local cluster itself."""
    url = db.database_url()
    db.ensure_database(url, settings.DAGSTER_DATABASE, owner=db.DAGSTER_ROLE)
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(settings.PROJECT_ROOT))
    env["SR_PLATFORM_LANDING_DIR"] = str(landing.landing_dir())
    env.setdefault("SR_PLATFORM_DAGSTER_STORAGE_URL", db.sqlalchemy_url(
        db.role_url(db.with_database(url, settings.DAGSTER_DATABASE), db.DAGSTER_ROLE),
        "psycopg2"))
    return env


def _dev(args) -> int:
    """Start PostgreSQL, migrate, materialize the schema asset, then run `dagster dev`."""
    from .core import migrate
    env = dev_environment()
    url = db.database_url()
    migrate.upgrade(url)
    sample = landing.landing_dir()
    if not landing.event_files(sample):
        from .core.generate import write_event_files

        write_event_files(sample, years=1, instruments=28, seed=0)
        print(f"generated a sample year of events for 28 instruments in {sample}")
    # straight into PostgreSQL so the data is there when the UI opens; the landing sensor then
    # materializes every partition in Dagster (finding the rows present) within minutes
    print_load_summary(loader.load_paths([sample], url))
    workspace = str(settings.PROJECT_ROOT / "workspace.yaml")
    subprocess.run(["dagster", "asset", "materialize", "-m", "sr_platform.definitions",
                    "--select", "database_schema"], env=env, check=True)
    print(f"Dagster UI: http://{args.host}:{args.port}", flush=True)
    os.execvpe("dagster", ["dagster", "dev", "-h", args.host, "-p", str(args.port),
                           "-w", workspace], env)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sr-platform", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    dbp = sub.add_parser("db", help="the database: local cluster and migrations")
    dbs = dbp.add_subparsers(dest="db_command", required=True)
    dbs.add_parser("start", help="start the local cluster").set_defaults(fn=_db_start)
    dbs.add_parser("stop", help="stop the local cluster").set_defaults(fn=_db_stop)
    dbs.add_parser("status", help="where the data lives, port, version, up/down").set_defaults(
        fn=_db_status)
    u = dbs.add_parser("url", help="print the database URL")
    u.add_argument("--database", default=None, help="another database on the same server")
    u.add_argument("--driver", default=None, help="SQLAlchemy driver suffix, e.g. psycopg2")
    u.add_argument("--role", choices=list(ROLE_CHOICES), default="writer",
                   help="whose rights the URL carries (local cluster; default writer: loads). "
                   "reader for analysts, owner for migrations, admin for cluster work")
    u.set_defaults(fn=_db_url)
    up = dbs.add_parser("upgrade", help="migrate forward (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    up.add_argument("--backup-first", action="store_true",
                    help="take a logical backup before migrating")
    up.set_defaults(fn=_db_upgrade)
    down = dbs.add_parser("downgrade", help="migrate back to REV ('base' removes everything)")
    down.add_argument("revision")
    down.add_argument("--backup-first", action="store_true",
                      help="take a logical backup before migrating")
    down.add_argument("--allow-data-loss", action="store_true",
                      help="let a down step drop tables that hold rows (back up first)")
    down.set_defaults(fn=_db_downgrade)
    dbs.add_parser("current", help="the database's revision").set_defaults(fn=_db_current)
    dbs.add_parser("history", help="all revisions, oldest first").set_defaults(fn=_db_history)

    ld = sub.add_parser("load", help="load event files (CSV/Parquet) or folders of them",
                        description="Exit codes: 0 all rows loaded or already present; "
                        "1 error, e.g. the database failed (the files it names were rolled "
                        "back whole; rerun them); 2 some rows were "
                        "rejected (see rejected_events); 3 some files are not event files.")
    ld.add_argument("paths", nargs="+", type=Path)
    ld.add_argument("--assume-tz", default=None, metavar="TZ",
                    help="zone of timestamps written without an offset (default: refuse them)")
    ld.set_defaults(fn=_load)

    gen = sub.add_parser("generate", help="write synthetic event files")
    gen.add_argument("--years", type=float, default=1.0)
    gen.add_argument("--instruments", type=int, default=28)
    gen.add_argument("--out", required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--event-rate", type=float, default=0.2,
                     help="share of bars that become events")
    gen.add_argument("--format", choices=["csv", "parquet"], default="csv")
    gen.set_defaults(fn=_generate)

    pr = sub.add_parser("prune", help="apply the retention policy (2 y events, 5 y features)")
    pr.add_argument("--as-of", default=None, metavar="ISO8601",
                    help="prune as if it were this time (default now)")
    pr.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    pr.add_argument("--archive", action="store_true",
                    help="write pruned events/features to Parquet under the backup directory")
    pr.set_defaults(fn=_prune)

    bk = sub.add_parser("backup", help="take a backup (logical + physical on the local "
                        "cluster), restore it into a scratch database to prove it; or list")
    bk.add_argument("action", nargs="?", choices=["list"], default=None)
    bk.add_argument("--no-verify", action="store_true", help="skip the proving restore")
    bk.set_defaults(fn=_backup)

    rs = sub.add_parser("restore", help="restore a logical backup into a new database")
    rs.add_argument("backup_id")
    rs.add_argument("--into", required=True, metavar="DBNAME")
    rs.add_argument("--replace", action="store_true",
                    help="drop and replace DBNAME if it exists")
    rs.set_defaults(fn=_restore)

    rc = sub.add_parser("recover", help="point-in-time recovery into a NEW local cluster")
    rc.add_argument("--to", required=True, metavar="ISO8601")
    rc.add_argument("--into", required=True, metavar="DIR")
    rc.add_argument("--port", type=int, default=None)
    rc.set_defaults(fn=_recover)

    dev = sub.add_parser("dev", help="start everything and serve the Dagster UI")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(fn=_dev)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except Exception as exc:  # one clear line for operators; tracebacks with SR_PLATFORM_DEBUG
        if os.environ.get("SR_PLATFORM_DEBUG"):
            raise
        print(f"sr-platform: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
