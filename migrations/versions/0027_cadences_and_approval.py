"""Cadences: an offset a new anchor puts in the past cancels the message planned for it, an offset
no longer listed cancels its message, and the answer says what happened to each ref (outcome,
cancelled_id). Broadcasts: approval and the limit are decided from the rows staged, and a recurring
wave over the approval_threshold that its approval did not cover (approved_contacts) awaits approval.

Revision ID: 0027
Revises: 0025
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0027"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0027_cadences_and_approval")


def downgrade() -> None:
    raise NotImplementedError("0027 is forward-only: restore from a backup to go back")
