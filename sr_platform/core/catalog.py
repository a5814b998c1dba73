"""Read-only facts about the migrated database, shared by the CLI and the Dagster assets."""

from dataclasses import dataclass

from . import db
from .migrate import current


@dataclass
class SchemaSummary:
    revision: str | None
    server_version: str
    tables: list[str]
    leaf_partitions: int
    partitions: list[tuple]  # list_partitions() rows


def schema_summary(url: str) -> SchemaSummary:
    with db.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        tables = [r[0] for r in conn.execute(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                 AND c.relname <> 'alembic_version' ORDER BY 1""")]
        parts: list[tuple] = []
        if conn.execute("SELECT to_regproc('public.list_partitions')").fetchone()[0]:
            parts = conn.execute("SELECT * FROM list_partitions()").fetchall()
    return SchemaSummary(current(url), version, tables, len(parts), parts)


def catch_all_rows(conn) -> tuple[int, int]:
    """(default partitions, rows in the NULL-guard partitions); (0, 0) when healthy."""
    from psycopg import sql

    defaults = conn.execute(
        "SELECT count(*) FROM pg_partitioned_table WHERE partdefid <> 0").fetchone()[0]
    guards = [r[0] for r in conn.execute(
        r"""SELECT relname::text FROM pg_class WHERE relispartition AND relname LIKE '%\_\_null'
            AND relnamespace = 'public'::regnamespace""")]
    rows = sum(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(g))).fetchone()[0] for g in guards)
    return defaults, rows
