"""The schema domain: one asset that brings the database to the head migration."""

import dagster as dg

from ..core import migrate
from ..core.catalog import schema_summary
from ..resources import PostgresResource


@dg.asset(
    group_name="schema",
    kinds={"postgres"},
    description="PostgreSQL schema at the head migration: partitioned events, levels, features "
    "and the rejected_events quarantine. Materializing runs `sr-platform db upgrade head`.",
)
def database_schema(context: dg.AssetExecutionContext,
                    postgres: PostgresResource) -> dg.MaterializeResult:
    url = postgres.url()
    before = migrate.current(url)
    migrate.upgrade(url)
    s = schema_summary(url)
    context.log.info(f"schema {before} -> {s.revision} on PostgreSQL {s.server_version}")
    return dg.MaterializeResult(metadata={
        "revision": s.revision,
        "previous_revision": str(before),
        "server_version": s.server_version,
        "tables": dg.MetadataValue.md("\n".join(f"- `{t}`" for t in s.tables)),
        "table_count": len(s.tables),
        "partition_count": s.leaf_partitions,
    })
