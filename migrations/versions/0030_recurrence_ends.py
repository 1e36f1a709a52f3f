"""Recurrence ends: a recurring message whose RRULE's UNTIL is already past is refused at insert
(22008, "ends before it starts"), as one whose until is past already was, instead of finishing at
its first planning without sending (reminderd.rrule_until reads the UNTIL).

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0030_recurrence_ends")


def downgrade() -> None:
    raise NotImplementedError("0030 is forward-only: restore from a backup to go back")
