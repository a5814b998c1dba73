"""load_log table and analyze_partition().

Revision ID: 0004
Revises: 0003
"""

from sr_platform.core.migrate import run_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("0004_load_log.up.sql")


def downgrade() -> None:
    run_sql("0004_load_log.down.sql")
