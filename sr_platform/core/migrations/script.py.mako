"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

from sr_platform.core.migrate import run_sql

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("${up_revision}_CHANGE_ME.up.sql")


def downgrade() -> None:
    run_sql("${up_revision}_CHANGE_ME.down.sql")
