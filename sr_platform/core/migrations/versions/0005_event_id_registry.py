"""event_id_registry: one id per event, kept by triggers on new_resistance_events.

Revision ID: 0005
Revises: 0004
"""

from sr_platform.core.migrate import run_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("0005_event_id_registry.up.sql")


def downgrade() -> None:
    run_sql("0005_event_id_registry.down.sql")
