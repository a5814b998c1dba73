"""Roles sr_owner, sr_writer, sr_reader and their default privileges.

Revision ID: 0001
Revises: (none)
"""

from sr_platform.core.migrate import run_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("0001_roles.up.sql", as_owner=False)


def downgrade() -> None:
    run_sql("0001_roles.down.sql", as_owner=False)
