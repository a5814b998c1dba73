"""Versioned migrations: Alembic revisions that execute the SQL files under sql/.

Each revision runs `sql/NNNN_name.up.sql` on upgrade and `.down.sql` on downgrade. DDL runs as
`sr_owner` (SET LOCAL ROLE), so every object belongs to the owner role and not to whoever ran
the migration. A whole upgrade or downgrade is one transaction: it lands completely or not at
all. Concurrent callers serialise on an advisory lock.
"""

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from . import settings
from .db import OWNER_ROLE, database_url, engine, role_url

MIGRATIONS_DIR = settings.package_path("core", "migrations")  # env.py, script.py.mako, versions/
MIGRATION_LOCK = 7_004_001  # pg_advisory_xact_lock key


def run_sql(filename: str, as_owner: bool = True) -> None:
    """Execute one SQL file on the connection of the running migration (call from revisions)."""
    from alembic import op

    body = (settings.sql_dir() / filename).read_text()
    dbapi = op.get_bind().connection.dbapi_connection
    with dbapi.cursor() as cur:
        if as_owner:
            cur.execute(f"SET LOCAL ROLE {OWNER_ROLE}")
        cur.execute(body)  # no parameters: psycopg sends the whole file as one simple query
        cur.execute("RESET ROLE")


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def owner_url(url: str | None = None) -> str:
    """Where migrations connect: SR_PLATFORM_OWNER_URL for the platform's external database
    (also when `url` is its SR_PLATFORM_DATABASE_URL, the writer's: see db.role_url), the
    owner's login role where we hold its password (the local cluster); otherwise `url`'s
    user, and the DDL drops to sr_owner with SET LOCAL ROLE (run_sql)."""
    return role_url(url or database_url(role=OWNER_ROLE), OWNER_ROLE)


def _run(url: str | None, fn, *args, allow_data_loss: bool = False) -> None:
    eng = engine(owner_url(url))
    try:
        with eng.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            if allow_data_loss:
                conn.execute(text("SET LOCAL sr_platform.allow_data_loss = 'on'"))
            cfg = _config()
            cfg.attributes["connection"] = conn
            fn(cfg, *args)
            # alembic_version belongs to the migrating login (sr_owner's default privileges do
            # not reach it when that is a separate login role): the reader may read it
            conn.execute(text(
                "DO $$ BEGIN IF to_regclass('public.alembic_version') IS NOT NULL "
                "AND to_regrole('sr_reader') IS NOT NULL "
                "AND pg_has_role((SELECT tableowner FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename = 'alembic_version'), 'USAGE') THEN "
                "GRANT SELECT ON public.alembic_version TO sr_reader; END IF; END $$"))
    finally:
        eng.dispose()


def upgrade(url: str | None = None, revision: str = "head") -> None:
    _run(url, command.upgrade, revision)


def downgrade(url: str | None = None, revision: str = "-1", allow_data_loss: bool = False) -> None:
    _run(url, command.downgrade, revision, allow_data_loss=allow_data_loss)


def current(url: str | None = None) -> str | None:
    eng = engine(owner_url(url))
    try:
        with eng.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        eng.dispose()


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def history() -> list[tuple[str, str | None, str]]:
    """(revision, down_revision, description), oldest first."""
    script = ScriptDirectory.from_config(_config())
    revs = list(script.walk_revisions("base", "heads"))
    return [(r.revision, r.down_revision, r.doc) for r in reversed(revs)]
