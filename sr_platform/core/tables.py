"""The table definitions the Python code relies on (column names, types, nullability).

The migrations own the real DDL; these SQLAlchemy `Table`s are the code's view of it:
the columns, types and nullability the loader, queries and features SQL rely on, checked against
the migrated database by `schema_drift()` so a migration that changes one fails a test instead
of a load. (They document; the COPY column lists are keys.EVENT_COLUMNS and keys.LEVEL_COLUMNS.)
"""

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    inspect,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP, UUID

metadata = MetaData()
TSTZ = TIMESTAMP(timezone=True)


def _audit() -> list[Column]:
    return [Column("created_at", TSTZ, nullable=True), Column("updated_at", TSTZ, nullable=True)]


events = Table(
    "new_resistance_events", metadata,
    Column("original_event_id", UUID, nullable=False),
    Column("event_type", String(20), nullable=False),
    Column("event_creation_date", TSTZ, nullable=False),
    Column("granularity", String(2), nullable=False),
    Column("instrument", String(10), nullable=False),
    Column("event_price_level", Numeric(18, 6), nullable=False),
    Column("atr_at_event", Numeric(18, 6), nullable=False),
    Column("volume_at_event", Numeric(18, 2), nullable=True),
    Column("new_resistance_negative_rebound", Numeric(18, 6), nullable=False),
    Column("new_resistance_negative_rebound_in_atr", Numeric(18, 6), nullable=False),
    Column("day_of_week", SmallInteger, nullable=False),
    Column("hour_of_day", SmallInteger, nullable=False),
    *_audit(),
)

levels = Table(
    "support_and_resistance_master", metadata,
    Column("id", UUID, nullable=False),
    Column("original_event_id", UUID, nullable=False),
    Column("event_type", String(20), nullable=False),
    Column("last_test_date", TSTZ, nullable=True),
    Column("test_count", Integer, nullable=True),
    Column("breach_date", TSTZ, nullable=True),
    Column("status", String(20), nullable=True),
    *_audit(),
    Column("instrument", String(10), nullable=False),
    Column("granularity", String(2), nullable=False),
    Column("event_creation_date", TSTZ, nullable=False),
)

features = Table(
    "event_features", metadata,
    Column("original_event_id", UUID, nullable=False),
    Column("instrument", String(10), nullable=False),
    Column("granularity", String(2), nullable=False),
    Column("event_creation_date", TSTZ, nullable=False),
    Column("event_type", String(20), nullable=False),
    Column("event_price_level", Numeric(18, 6), nullable=False),
    Column("atr_at_event", Numeric(18, 6), nullable=False),
    Column("atr_pct_of_price", Numeric(18, 8), nullable=False),
    Column("volume_at_event", Numeric(18, 2), nullable=True),
    Column("negative_rebound", Numeric(18, 6), nullable=False),
    Column("negative_rebound_in_atr", Numeric(18, 6), nullable=False),
    Column("day_of_week", SmallInteger, nullable=False),
    Column("hour_of_day", SmallInteger, nullable=False),
    Column("level_status", String(20), nullable=False),
    Column("level_test_count", Integer, nullable=False),
    Column("level_last_test_date", TSTZ, nullable=True),
    Column("level_breach_date", TSTZ, nullable=True),
    Column("hours_to_breach", Numeric(12, 2), nullable=True),
    Column("feature_version", SmallInteger, nullable=False),
    Column("computed_at", TSTZ, nullable=False),
    *_audit(),
)

rejected = Table(
    "rejected_events", metadata,
    Column("id", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("source_sha256", Text, nullable=False),
    Column("line_number", Integer, nullable=False),
    Column("raw_record", JSONB, nullable=False),
    Column("reasons", ARRAY(Text), nullable=False),
    Column("rejected_at", TSTZ, nullable=False),
    *_audit(),
)

load_log = Table(
    "load_log", metadata,
    Column("id", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("source_sha256", Text, nullable=False),
    Column("instrument", String(10), nullable=True),
    Column("granularity", String(2), nullable=True),
    Column("rows_read", Integer, nullable=False),
    Column("rows_loaded", Integer, nullable=False),
    Column("rows_duplicate", Integer, nullable=False),
    Column("rows_rejected", Integer, nullable=False),
    Column("started_at", TSTZ, nullable=False),
    Column("finished_at", TSTZ, nullable=False),
    *_audit(),
    Column("origin", Text, nullable=True),  # 0008
    Column("pairs", JSONB, nullable=True),  # 0008
)

registry = Table(
    "event_id_registry", metadata,
    Column("original_event_id", UUID, nullable=False),
    Column("instrument", String(10), nullable=False),
    Column("granularity", String(2), nullable=False),
    Column("event_creation_date", TSTZ, nullable=False),
)


def _type_sig(t) -> str:
    return t.compile(dialect=_pg_dialect())


def _pg_dialect():
    from sqlalchemy.dialects import postgresql

    return postgresql.dialect()


def schema_drift(conn: Connection, schema: str = "public") -> list[str]:
    """Differences between these definitions and the database, in column order; [] if none."""
    insp = inspect(conn)
    problems: list[str] = []
    for table in metadata.tables.values():
        if not insp.has_table(table.name, schema=schema):
            problems.append(f"{table.name}: missing")
            continue
        db_cols = insp.get_columns(table.name, schema=schema)
        db_sig = [(c["name"], _type_sig(c["type"]), c["nullable"]) for c in db_cols]
        code_sig = [(c.name, _type_sig(c.type), c.nullable) for c in table.columns]
        if db_sig != code_sig:
            for want, got in zip(code_sig, db_sig, strict=False):
                if want != got:
                    problems.append(f"{table.name}: code expects {want}, database has {got}")
            if len(db_sig) != len(code_sig):
                problems.append(
                    f"{table.name}: code has {len(code_sig)} columns, database {len(db_sig)}")
    return problems
