"""Foundation: tenants, scheduled messages, deliveries, the SQL API and the due-soon NOTIFY.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0001_foundation")


def downgrade() -> None:
    run_sql_file("0001_foundation.downgrade")
