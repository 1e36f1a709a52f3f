"""Day one: nothing silently accepted. A message already too late for its backfill policy, or a
recurring one whose `until` is past, is refused at insert (and by reschedule) instead of expiring
unseen; a duplicate tenant, a holiday of an unknown tenant, a bad callback URL or cron (any field)
are refused in sentences; zones are read as the daemon reads them; the daemon's cron in SQL
(next_cron_occurrence) gives a cron row its first fire_at when it is scheduled.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # migrations/sql/0005_day_one.sql;
    # the same change is in reminderd/sql/schema.sql (docs/sql.md, "Where the schema lives").
    run_sql_file("0005_day_one")


def downgrade() -> None:
    raise NotImplementedError("0005 is forward-only: restore from a backup to go back")
