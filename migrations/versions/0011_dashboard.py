"""The dashboard: fire and lateness counts kept by triggers, the live feed's indexes and NOTIFY,
and who a role acted for in the audit trail (events.on_behalf_of).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # migrations/sql/0011_dashboard.sql;
    # make the same change in reminderd/sql/schema.sql (docs/sql.md, "Where the schema lives").
    run_sql_file("0011_dashboard")


def downgrade() -> None:
    raise NotImplementedError("0011 is forward-only: restore from a backup to go back")
