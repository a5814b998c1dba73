"""Scale-out by instrument across PostgreSQL servers with postgres_fdw.

What PostgreSQL does not allow: a foreign table as a partition of a partitioned table that has
a unique index ("cannot create foreign partition of partitioned table ... contains indexes that
are unique"). All three of our partitioned tables have primary keys (and the levels' foreign
key and the loader's dedupe need them), so an instrument's leaves cannot simply be foreign
tables on another server.

What works, and is tested: a shard is a whole sr-platform database on another server (same
migrations, same roles) that owns some instruments. Loads and retention for those instruments
run against the shard's URL with the same code. The home database sees every shard through
postgres_fdw: `add_shard` imports the shard's three tables into schema `shard_<name>` and
(re)creates the read views `all_events`, `all_levels` and `all_features` as UNION ALL of the
local table and every shard's. A query by instrument through a view is pruned on both sides:
the local partitioned table prunes to the instrument's leaf (or to nothing), and the filter is
sent to each shard in its Remote SQL, where that server prunes its own partitions.

Setting up a shard is administration (foreign servers and user mappings need the superuser or
the extension's owner), so it runs on the home database's administrator URL.
"""

import re

import psycopg
from psycopg import sql

from . import db

TABLES = {"all_events": "new_resistance_events", "all_levels": "support_and_resistance_master",
          "all_features": "event_features"}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


class ShardError(ValueError):
    pass


def _shards(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT srvname::text FROM pg_foreign_server WHERE srvname LIKE 'shard\\_%' "
        "ORDER BY 1")]


def add_shard(home_admin_url: str, name: str, host: str, port: int, dbname: str,
              reader_user: str, reader_password: str) -> None:
    """Register the shard `name` and rebuild the read views. The shard is read as its reader
    login role; home's readers and writers (and owner) read through that mapping."""
    if not NAME_RE.match(name):
        raise ShardError(f"invalid shard name {name!r}: must match {NAME_RE.pattern}")
    server, schema = f"shard_{name}", f"shard_{name}"
    with psycopg.connect(db.libpq_url(home_admin_url), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
        conn.execute(sql.SQL(
            "CREATE SERVER IF NOT EXISTS {} FOREIGN DATA WRAPPER postgres_fdw OPTIONS "
            "(host {}, port {}, dbname {}, fetch_size '10000')").format(
            sql.Identifier(server), sql.Literal(host), sql.Literal(str(port)),
            sql.Literal(dbname)))
        for role in (db.LOGIN_OF[db.READER_ROLE], db.LOGIN_OF[db.WRITER_ROLE],
                     db.LOGIN_OF[db.OWNER_ROLE]):
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL(
                    "CREATE USER MAPPING IF NOT EXISTS FOR {} SERVER {} OPTIONS "
                    "(user {}, password {})").format(
                    sql.Identifier(role), sql.Identifier(server), sql.Literal(reader_user),
                    sql.Literal(reader_password)))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION sr_owner").format(
            sql.Identifier(schema)))
        conn.execute(sql.SQL("GRANT USAGE ON FOREIGN SERVER {} TO sr_owner").format(
            sql.Identifier(server)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO sr_reader").format(
            sql.Identifier(schema)))
    # the foreign tables and views belong to the owner, like every other object
    owner = db.role_url(home_admin_url, db.OWNER_ROLE)
    with db.connect(owner, role=db.OWNER_ROLE) as conn:
        existing = {r[0] for r in conn.execute(
            "SELECT relname::text FROM pg_class WHERE relnamespace = %s::regnamespace",
            (schema,))}
        missing = [t for t in TABLES.values() if t not in existing]
        if missing:
            conn.execute(sql.SQL("IMPORT FOREIGN SCHEMA public LIMIT TO ({}) FROM SERVER {} "
                                 "INTO {}").format(
                sql.SQL(", ").join(map(sql.Identifier, missing)), sql.Identifier(server),
                sql.Identifier(schema)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO sr_reader").format(
            sql.Identifier(schema)))
        rebuild_views(conn)


def rebuild_views(conn: psycopg.Connection) -> None:
    """all_events / all_levels / all_features: the local table UNION ALL every shard's."""
    shards = _shards(conn)
    for view, table in TABLES.items():
        parts = [sql.SQL("SELECT * FROM public.{}").format(sql.Identifier(table))]
        parts += [sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(s), sql.Identifier(table))
                  for s in shards]
        conn.execute(sql.SQL("CREATE OR REPLACE VIEW public.{} AS {}").format(
            sql.Identifier(view), sql.SQL(" UNION ALL ").join(parts)))
        conn.execute(sql.SQL("GRANT SELECT ON public.{} TO sr_reader").format(
            sql.Identifier(view)))
