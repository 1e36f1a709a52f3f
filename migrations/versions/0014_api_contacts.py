"""Issue 14's HTTP face: reminderd serve's role (reminderd_api) reads and writes contacts,
audiences, broadcasts and cadences and names the API key it acts for; schedule_item_v2 (a
contact_id) for schedule_many().

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0014_api_contacts")


def downgrade() -> None:
    raise NotImplementedError("0014 is forward-only: restore from a backup to go back")
