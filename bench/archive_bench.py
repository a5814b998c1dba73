"""Retention archive benchmark: `prune --archive` throughput, and what the archive's durability
steps (file write + fsync, directory fsync, read-back of the ids) cost per batch.

    .venv/bin/python bench/archive_bench.py [--batch 10000] [--old RETENTION_PY]

A new database; ~203,000 events (5 instruments, every bar an event, 5 years ending 2024-01-01,
so 20 leaves of up to ~31,000 rows) loaded with the project's loader; then retention.prune as of
2026-06-01 with an archive in a temp directory. --old imports another retention.py instead (e.g.
`git show f932d0e:sr_platform/core/retention.py > /tmp/old.py`) to compare. Prints one line.
"""

import argparse
import importlib.util
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sr_platform.core import db, loader, migrate  # noqa: E402
from sr_platform.core import retention as current  # noqa: E402
from sr_platform.core.generate import write_event_files  # noqa: E402

STEPS = ("_write_durably", "_fsync_dir", "_check_ids")


def _module(path: str | None):
    if path is None:
        return current
    spec = importlib.util.spec_from_file_location("sr_platform.core.retention_old", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(real, name: str, spent: dict[str, float]):
    def wrap(*a, **k):
        t = time.perf_counter()
        try:
            return real(*a, **k)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
    return wrap


def _time_steps(retention, spent: dict[str, float]) -> None:
    for name in STEPS:
        if hasattr(retention, name):  # the old module has none of them
            setattr(retention, name, _timed(getattr(retention, name), name, spent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=current.BATCH_ROWS)
    ap.add_argument("--old", default=None, help="another retention.py to time instead")
    args = ap.parse_args()
    retention = _module(args.old)
    spent: dict[str, float] = {}
    _time_steps(retention, spent)
    cluster = db.local_cluster()
    cluster.start()
    server = cluster.url("postgres")
    name = f"srbench_arch_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server, name, owner=db.OWNER_ROLE)
    url = db.with_database(server, name)
    try:
        migrate.upgrade(url)
        with tempfile.TemporaryDirectory() as tmp:
            files = write_event_files(Path(tmp) / "gen", years=5, instruments=5, seed=1,
                                      event_rate=1.0, end=datetime(2024, 1, 1, tzinfo=UTC))
            loaded = sum(r.loaded for r in loader.load_paths(files, url))
            t0 = time.perf_counter()
            report = retention.prune(url, as_of=datetime(2026, 6, 1, tzinfo=UTC),
                                     archive_dir=Path(tmp) / "archive", batch_rows=args.batch)
            seconds = time.perf_counter() - t0
        n = report.rows[retention.EVENTS]
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in spent.items()) or "-"
        print(f"{'old' if args.old else 'new'} batch={args.batch}: loaded {loaded:,}, pruned {n:,} "
              f"events in {seconds:.2f} s = {n / seconds:,.0f} rows/s, {len(report.archived)} "
              f"files; archive steps: {steps}")
    finally:
        db.drop_database(server, name)


if __name__ == "__main__":
    main()
