"""Contacts: an unknown timezone or country in a batch (reminderd.upsert_contact_rows) is refused naming
its element ("contact N of the batch (contact_id …) has unknown country …"), not just "in the batch".

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0026_contact_value_refusals")


def downgrade() -> None:
    raise NotImplementedError("0026 is forward-only: restore from a backup to go back")
