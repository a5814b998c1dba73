"""ensure_partition() and list_partitions().

Revision ID: 0003
Revises: 0002
"""

from sr_platform.core.migrate import run_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("0003_partition_functions.up.sql")


def downgrade() -> None:
    run_sql("0003_partition_functions.down.sql")
