"""Values refused in sentences where PostgreSQL's own errors named no row: times that are not finite
and delays past what a timestamptz holds (22008), the CHECK constraints of scheduled_messages
pre-empted by the triggers (23514, the constraint's name), a contact's phone that is not
+<country code> <number> (22023); rows 0019 took whose time could never be right, repaired.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0021_value_refusals")


def downgrade() -> None:
    raise NotImplementedError("0021 is forward-only: restore from a backup to go back")
