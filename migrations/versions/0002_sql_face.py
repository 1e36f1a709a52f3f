"""The SQL face: roles and row-level security per tenant, secret rotation, audit trail, more of
the SQL API (bulk cancel, pause/resume, reschedule, requeue), DBA views, table tuning.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0002_sql_face")


def downgrade() -> None:
    raise NotImplementedError("0002 is forward-only: restore from a backup to go back")
