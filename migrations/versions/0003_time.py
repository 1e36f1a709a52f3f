"""Time done right: seconds in cron, RRULE, end conditions, local wall times, holiday calendars,
quiet hours by category, and a backfill policy per message.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0003_time")


def downgrade() -> None:
    raise NotImplementedError("0003 is forward-only: restore from a backup to go back")
