"""load_log.origin: which face made a load (cli, dagster).

Revision ID: 0008
Revises: 0007
"""

from sr_platform.core.migrate import run_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("0008_load_origin.up.sql")


def downgrade() -> None:
    run_sql("0008_load_origin.down.sql")
