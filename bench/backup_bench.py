"""Backup, restore and recovery times and sizes on a year of generated data.

    .venv/bin/python bench/backup_bench.py [--years 1]

Loads `years` of events (every bar of 28 instruments an event, about 228k rows per year) into a
new database on the local cluster, then times: a logical backup (pg_dump of one snapshot +
manifest), its proving restore into a scratch database, a restore into a new database, a
physical base backup of the whole cluster (+ pg_verifybackup), and a point-in-time recovery to
a second after the load into a new cluster. Writes bench/results/backup.md.
"""

import argparse
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sr_platform.core import backup, db, loader, migrate, pitr  # noqa: E402
from sr_platform.core.generate import write_event_files  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--years", type=float, default=1.0)
    args = ap.parse_args()
    server = db.database_url("postgres", role=db.ADMIN_ROLE)
    name = f"srbench_bk_{uuid.uuid4().hex[:8]}"
    restored = f"{name}_restored"
    db.ensure_database(server, name, owner=db.OWNER_ROLE)
    url = db.with_database(server, name)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "backups"
        try:
            migrate.upgrade(url)
            files = write_event_files(Path(tmp) / "in", years=args.years, seed=3,
                                      event_rate=1.0, end=datetime(2026, 11, 1, tzinfo=UTC))
            loaded = sum(r.loaded for r in loader.load_paths(files, url))
            with psycopg.connect(db.libpq_url(url)) as conn:
                db_bytes = conn.execute("SELECT pg_database_size(current_database())"
                                        ).fetchone()[0]
            rows.append({"step": f"load {loaded:,} events (+ levels)", "seconds": None,
                         "bytes": db_bytes})
            t0 = time.perf_counter()
            b = backup.take_backup(url, root=root, include_dagster=False)
            rows.append({"step": "logical backup (pg_dump -Fc, one snapshot, manifest)",
                         "seconds": time.perf_counter() - t0, "bytes": b.bytes})
            t0 = time.perf_counter()
            ok = backup.verify(b.id, url, root=root)["ok"]
            rows.append({"step": f"proving restore into a scratch db (ok={ok})",
                         "seconds": time.perf_counter() - t0, "bytes": None})
            t0 = time.perf_counter()
            backup.restore(b.id, restored, url, root=root)
            rows.append({"step": "restore into a new database",
                         "seconds": time.perf_counter() - t0, "bytes": None})
            db.drop_database(server, restored)
            t0 = time.perf_counter()
            base = pitr.take_base_backup(root=root)
            rows.append({"step": "physical base backup of the cluster (+ pg_verifybackup)",
                         "seconds": time.perf_counter() - t0, "bytes": base.bytes})
            with psycopg.connect(db.libpq_url(url)) as conn:
                target = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            t0 = time.perf_counter()
            _, cluster = pitr.recover(target, Path(tmp) / "recovered", root=root)
            rows.append({"step": "point-in-time recovery into a new cluster (running)",
                         "seconds": time.perf_counter() - t0, "bytes": None})
            cluster.remove()
        finally:
            db.drop_database(server, name)
            db.drop_database(server, restored)
    df = pd.DataFrame(rows)
    df["seconds"] = df["seconds"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    df["bytes"] = df["bytes"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
    text = (f"# Backup and recovery\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
            f"`bench/backup_bench.py --years {args.years}`\n\n{df.to_markdown(index=False)}\n")
    print(text)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "backup.md").write_text(text)


if __name__ == "__main__":
    main()
