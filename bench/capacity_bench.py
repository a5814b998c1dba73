"""Capacity model inputs: bytes per row of every table and index, measured on loaded data, and
what 500 GB and 5 TB mean in rows, leaves and RAM.

    .venv/bin/python bench/capacity_bench.py [--years 1] [--instruments 28]

Loads generated events (every bar an event: about 228k rows per year for 28 instruments) with
the project's loader, computes every pair's levels and features, VACUUM ANALYZEs, then sums
heap, TOAST and each index over the partition tree (pg_partition_tree). Prints a table and
writes bench/results/capacity.md; docs/capacity.md quotes it.
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

from sr_platform.core import db, loader, migrate  # noqa: E402
from sr_platform.core.features import refresh_features  # noqa: E402
from sr_platform.core.generate import write_event_files  # noqa: E402
from sr_platform.core.levels import refresh_levels  # noqa: E402

TABLES = ("new_resistance_events", "support_and_resistance_master", "event_features",
          "event_id_registry")
END = datetime(2026, 11, 1, tzinfo=UTC)


def sizes(conn, table: str) -> list[dict]:
    if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is None:
        return []
    rows = conn.execute("SELECT count(*) FROM " + table).fetchone()[0]
    out = []
    heap = conn.execute(
        """SELECT coalesce(sum(pg_relation_size(relid, 'main')), 0),
                  coalesce(sum(pg_table_size(relid) - pg_relation_size(relid, 'main')), 0),
                  count(*) FILTER (WHERE isleaf)
           FROM pg_partition_tree(%s::regclass) WHERE isleaf""", (table,)).fetchone()
    if heap[2] == 0:  # not partitioned (the registry): the table itself
        heap = conn.execute(
            "SELECT pg_relation_size(%s::regclass, 'main'), pg_table_size(%s::regclass) - "
            "pg_relation_size(%s::regclass, 'main'), 1", (table, table, table)).fetchone()
    out.append({"table": table, "part": "heap", "bytes": heap[0], "rows": rows,
                "leaves": heap[2]})
    out.append({"table": table, "part": "toast+fsm+vm", "bytes": heap[1], "rows": rows,
                "leaves": heap[2]})
    for (index,) in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass "
            "ORDER BY 1", (table,)).fetchall():
        b = conn.execute("SELECT coalesce(sum(pg_relation_size(relid)), 0) FROM "
                         "pg_partition_tree(%s::regclass) WHERE isleaf", (index,)).fetchone()[0] \
            or conn.execute("SELECT pg_relation_size(%s::regclass)", (index,)).fetchone()[0]
        out.append({"table": table, "part": index, "bytes": b, "rows": rows, "leaves": heap[2]})
    fk = conn.execute(
        """SELECT coalesce(sum(pg_relation_size(i.indexrelid)), 0) FROM pg_partition_tree(%s)
           t JOIN pg_index i ON i.indrelid = t.relid WHERE t.isleaf AND NOT EXISTS (SELECT 1
           FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)""", (table,)).fetchone()[0]
    if fk:
        out.append({"table": table, "part": "leaf-only indexes", "bytes": fk, "rows": rows,
                    "leaves": heap[2]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--years", type=float, default=1.0)
    ap.add_argument("--instruments", type=int, default=28)
    args = ap.parse_args()
    server = db.database_url("postgres", role=db.ADMIN_ROLE)
    name = f"srbench_cap_{uuid.uuid4().hex[:8]}"
    db.ensure_database(server, name, owner=db.OWNER_ROLE)
    url = db.with_database(server, name)
    try:
        migrate.upgrade(url)
        with tempfile.TemporaryDirectory() as tmp:
            files = write_event_files(Path(tmp), years=args.years, instruments=args.instruments,
                                      seed=2, end=END, event_rate=1.0)
            t0 = time.perf_counter()
            results = loader.load_paths(files, url)
            load_s = time.perf_counter() - t0
        pairs = sorted({p for r in results for p in r.pairs})
        for p in pairs:
            refresh_levels(url, p)
            refresh_features(url, p)
        admin = db.libpq_url(db.role_url(url, db.ADMIN_ROLE))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            rows = [r for t in TABLES for r in sizes(conn, t)]
    finally:
        db.drop_database(server, name)
    df = pd.DataFrame(rows)
    df["bytes_per_row"] = (df["bytes"] / df["rows"]).round(1)
    total = df.groupby("table", sort=False)[["bytes"]].sum()
    total["rows"] = df.groupby("table", sort=False)["rows"].first()
    total["bytes_per_row"] = (total["bytes"] / total["rows"]).round(1)
    for frame in (df, total):
        frame["bytes"] = frame["bytes"].map(lambda v: f"{int(v):,}")
    text = (f"# Capacity inputs\n\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
            f"`bench/capacity_bench.py --years {args.years}`: {sum(r.loaded for r in results):,}"
            f" events loaded in {load_s:.1f} s, {len(pairs)} pairs\n\n"
            f"{df.to_markdown(index=False)}\n\nPer table:\n\n{total.to_markdown()}\n")
    print(text)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "capacity.md").write_text(text)


if __name__ == "__main__":
    main()
