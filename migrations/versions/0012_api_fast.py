"""The HTTP API's scheduling, set-based: reminderd.schedule_set() schedules a batch's items all
at once, and reminderd.schedule_many() tries it first, falling back to its item-by-item path when
a ref is given twice or any item is refused.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0012_api_fast")


def downgrade() -> None:
    raise NotImplementedError("0012 is forward-only: restore from a backup to go back")
