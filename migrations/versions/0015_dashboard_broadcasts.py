"""The dashboard's broadcasts: reminderd serve (reminderd_api) reads broadcasts and their waves,
approves, rejects and cancels them in the name of the signed-in key, and two small indexes keep
its broadcasts page and the overview's "awaiting approval" cheap.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # migrations/sql/0015_dashboard_broadcasts.sql;
    # make the same change in reminderd/sql/schema.sql (docs/sql.md, "Where the schema lives").
    run_sql_file("0015_dashboard_broadcasts")


def downgrade() -> None:
    raise NotImplementedError("0015 is forward-only: restore from a backup to go back")
