"""Partition maintenance: every known pair has every leaf in every table, stale leaves are
analyzed, and a per-leaf report. Idempotent, and safe while loads run (ensure_partition
serialises on its advisory lock; ANALYZE takes a lock that does not block reads or writes)."""

from dataclasses import dataclass, field

from psycopg import sql

from . import db

STALE_FRACTION = 0.1  # rows changed since the last ANALYZE, as a share of the live rows


@dataclass
class MaintenanceReport:
    pairs: int
    leaves_created: int
    analyzed: list[str] = field(default_factory=list)
    leaves: list[tuple] = field(default_factory=list)  # list_partitions() rows

    @property
    def rows(self) -> int:
        return sum(r[4] for r in self.leaves)

    @property
    def bytes(self) -> int:
        return sum(r[5] for r in self.leaves)


def run(url: str | None = None, extra_pairs: set[tuple[str, str]] | None = None
        ) -> MaintenanceReport:
    url = url or db.database_url()
    with db.connect(url, role=db.WRITER_ROLE, autocommit=True) as conn:
        pairs = {(i, g) for i, g in conn.execute(
            "SELECT DISTINCT instrument, granularity FROM list_partitions()")}
        pairs |= extra_pairs or set()
        created = sum(conn.execute("SELECT ensure_partition(%s, %s)", p).fetchone()[0]
                      for p in sorted(pairs))
    analyzed = []
    # ANALYZE belongs to the owner, so this step runs as sr_owner (backups dump as the owner
    # too; their verification and restores create databases as the administrator)
    with db.connect(url, role=db.OWNER_ROLE, autocommit=True) as conn:
        stale = conn.execute(
            """SELECT s.relname::text FROM pg_stat_user_tables s
               JOIN list_partitions() p ON p.partition_name = s.relname
               WHERE s.n_mod_since_analyze > 0 AND (s.last_analyze IS NULL AND
                     s.last_autoanalyze IS NULL OR s.n_mod_since_analyze > %s * s.n_live_tup)
               ORDER BY 1""", (STALE_FRACTION,)).fetchall()
        for (leaf,) in stale:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(leaf)))
            analyzed.append(leaf)
        leaves = conn.execute("SELECT * FROM list_partitions()").fetchall()
    return MaintenanceReport(len(pairs), created, analyzed, leaves)
