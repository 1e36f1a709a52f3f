"""Audiences keep their member count (audience_size), maintained by add_to_audience,
remove_from_audience and a contact's deletion, so listing audiences no longer counts every
member. A broadcast cancelled while awaiting approval is approval 'cancelled', and one with nothing
left awaiting approval cannot be approved.

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0034_audience_sizes")


def downgrade() -> None:
    raise NotImplementedError("0034 is forward-only: restore from a backup to go back")
