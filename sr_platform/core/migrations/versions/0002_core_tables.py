"""Partitioned events, levels and features tables; the rejected_events quarantine.

Revision ID: 0002
Revises: 0001
"""

from sr_platform.core.migrate import run_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("0002_core_tables.up.sql")


def downgrade() -> None:
    run_sql("0002_core_tables.down.sql")
