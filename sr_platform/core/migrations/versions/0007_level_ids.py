"""Level ids from the event id (level_id()), the registry written in key order at attach.

Revision ID: 0007
Revises: 0006
"""

from sr_platform.core.migrate import run_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("0007_level_ids.up.sql")


def downgrade() -> None:
    run_sql("0007_level_ids.down.sql")
