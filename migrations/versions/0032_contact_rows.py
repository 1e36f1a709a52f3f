"""Contact rows: a message row naming a contact and no zone, however written (a plain INSERT, COPY),
is read in its contact's zone with its source, and one naming an unknown contact is refused (P0002).

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0032_contact_rows")


def downgrade() -> None:
    raise NotImplementedError("0032 is forward-only: restore from a backup to go back")
