"""change_log: every committed change of events and level outcomes, notified (sr_events,
sr_levels).

Revision ID: 0009
Revises: 0008
"""

from sr_platform.core.migrate import run_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("0009_change_log.up.sql")


def downgrade() -> None:
    run_sql("0009_change_log.down.sql")
