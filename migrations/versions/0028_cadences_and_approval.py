"""Cadences: an offset a new anchor puts in the past cancels the message planned for it, an offset
no longer listed cancels its message, and the answer says what happened to each ref (outcome,
cancelled_id). Broadcasts: approval and the limit are decided from the rows staged, and a recurring
wave over the approval_threshold that its approval did not cover (approved_contacts) awaits approval.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0028_cadences_and_approval")


def downgrade() -> None:
    raise NotImplementedError("0028 is forward-only: restore from a backup to go back")
