"""A recurring broadcast refused at insert, as a message's recurrence is: a cron the daemon could not
read (22023), an rrule with COUNT and no DTSTART (22023), an until already past (22008).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # migrations/sql/0024_broadcast_recurrence_refusals.sql;
    # make the same change in reminderd/sql/schema.sql (docs/sql.md, "Where the schema lives").
    run_sql_file("0024_broadcast_recurrence_refusals")


def downgrade() -> None:
    raise NotImplementedError("0024 is forward-only: restore from a backup to go back")
