"""Restore time against data size (issue 13 item 5): is it linear?

    SR_PLATFORM_HOME=.sr_platform-bench SR_PLATFORM_WAL_ARCHIVE=off \
        .venv/bin/python bench/restore_bench.py [--sizes 500000,2000000,5000000]

For each size, a new database on the local cluster is filled with that many events over 28
instruments x 4 granularities (bench/query_data.py: server-side generation, levels and the id
registry as the loader would leave them), backed up (backup.take_backup), and restored into a
new database by backup.restore (pre-data, data, ANALYZE, post-data). Up to --baseline-max
events, the same dump is also restored the way it was before (one pg_restore
--single-transaction, no ANALYZE: each leaf's foreign key validated without statistics), side
by side, with a 900 s cap. Prints a table (events/s of restore, seconds, ratio) and writes
bench/results/restore.md.
"""

import argparse
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import query_data  # noqa: E402

from sr_platform.core import backup, db, migrate, procs  # noqa: E402


def _baseline_restore(dump: Path, url: str, into: str, cap: float) -> float | None:
    """The restore before issue 13: one transaction, statistics-free FK validation."""
    db.ensure_database(url, into, owner=db.OWNER_ROLE)
    target = db.role_url(db.with_database(url, into), db.OWNER_ROLE)
    with tempfile.TemporaryDirectory() as work:
        pg_restore = backup._tool("pg_restore", target)
        listing, _ = backup._restore_list(pg_restore, dump, Path(work))
        conninfo, env = db.tool_target(target)
        t0 = time.perf_counter()
        try:
            proc = procs.run([pg_restore, "--exit-on-error",
                              "--single-transaction", "--no-comments", "--use-list",
                              str(listing), str(dump), f"--dbname={conninfo}"], env=env,
                             timeout=cap)
        except Exception:  # noqa: BLE001 - the cap: report as not finished
            return None
        finally:
            db.drop_database(url, into)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        return time.perf_counter() - t0


def _fill(url: str, size: int, shape: str) -> int:
    if shape == "server":
        return query_data.fill(url, years=1.0, rows_per_year=size)["rows"]
    from sr_platform.core import loader
    from sr_platform.core.generate import write_event_files

    with tempfile.TemporaryDirectory() as tmp:  # ~228k events a year at event_rate 1.0
        files = write_event_files(Path(tmp), years=size / 228_000, seed=3, event_rate=1.0)
        return sum(r.loaded for r in loader.load_paths(files, url))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="500000,2000000,5000000")
    ap.add_argument("--baseline-max", type=int, default=500_000)
    ap.add_argument("--cap", type=float, default=900.0)
    ap.add_argument("--shape", choices=["server", "loader"], default="server",
                    help="server: rows generated in SQL (query_data.fill); loader: event files "
                         "(generate, every bar an event) loaded by the loader, as the issue's "
                         "probe did")
    args = ap.parse_args()
    server = db.database_url("postgres", role=db.ADMIN_ROLE)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        name = f"srbench_rs_{uuid.uuid4().hex[:8]}"
        db.ensure_database(server, name, owner=db.OWNER_ROLE)
        url = db.with_database(server, name)
        try:
            migrate.upgrade(url)
            filled = _fill(url, size, args.shape)
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                b = backup.take_backup(url, root=Path(tmp), include_dagster=False)
                dump_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                counts = backup.restore(b.id, f"{name}_new", url, root=Path(tmp))
                new_s = time.perf_counter() - t0
                db.drop_database(server, f"{name}_new")
                assert counts == b.row_counts
                base_s = _baseline_restore(b.path / "sr_platform.dump", url, f"{name}_old",
                                           args.cap) if size <= args.baseline_max else None
            row = {"events": filled, "dump MB": b.bytes / 1e6, "backup s": dump_s,
                   "restore s": new_s, "restore events/s": filled / new_s,
                   "before s": base_s, "speed-up": base_s / new_s if base_s else None}
            rows.append(row)
            print(row, flush=True)
        finally:
            db.drop_database(server, name)
    lines = ["| events | dump MB | backup s | restore s | restore events/s | µs per event | "
             "before (one transaction, no ANALYZE) s | speed-up |", "|" + "---|" * 8]
    for r in rows:
        before = f"{r['before s']:.1f}" if r["before s"] else (
            "not run" if r["events"] > args.baseline_max else f"> {args.cap:.0f} (capped)")
        speedup = f"{r['speed-up']:.1f}x" if r["speed-up"] else "-"
        lines.append(f"| {r['events']:,} | {r['dump MB']:.0f} | {r['backup s']:.1f} | "
                     f"{r['restore s']:.1f} | {r['restore events/s']:,.0f} | "
                     f"{1e6 * r['restore s'] / r['events']:.1f} | {before} | {speedup} |")
    text = (f"# Restore time against size\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
            f"`bench/restore_bench.py --sizes {args.sizes} --shape {args.shape}`\n\n"
            + "\n".join(lines) + "\n")
    print(text)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "restore.md").write_text(text)


if __name__ == "__main__":
    main()
