"""Fast loads: the id registry kept by statement triggers; load-then-attach for new partitions.

Revision ID: 0006
Revises: 0005
"""

from sr_platform.core.migrate import run_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("0006_fast_load.up.sql")


def downgrade() -> None:
    run_sql("0006_fast_load.down.sql")
