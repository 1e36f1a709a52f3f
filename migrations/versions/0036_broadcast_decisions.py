"""Rejecting a broadcast with nothing left to reject refused as approving it is (55000, with a
DETAIL and a HINT: reminderd.refuse_broadcast_decision); a notify broadcast refused a completion ref
a live ordinary message holds (23505 completion_ref_free), race-free with 0035's reverse check; a
wave's broadcast.completed callback never written twice.

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0036_broadcast_decisions")


def downgrade() -> None:
    raise NotImplementedError("0036 is forward-only: restore from a backup to go back")
