"""Re-planning for a contact's new zone, around attempts: a message being sent takes the new zone
when its attempt ends (its next occurrence planned in it), a message already attempted for its
occurrence keeps its attempts and webhook-id, and a plain DELETE of a contact cancels its live
messages.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0027_replan_around_attempts")


def downgrade() -> None:
    raise NotImplementedError("0027 is forward-only: restore from a backup to go back")
