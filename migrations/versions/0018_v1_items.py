"""Version 1 of the batch items as version 2 without a contact: reminderd.schedule_item,
schedule_one, schedule_set and schedule_many for schedule_item_v1 hand their items to the
version 2 functions (a NULL contact_id) instead of keeping a copy of each.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0018_v1_items")


def downgrade() -> None:
    raise NotImplementedError("0018 is forward-only: restore from a backup to go back")
