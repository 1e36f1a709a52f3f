"""Audiences: contacts and their timezones (resolved in the database from reference tables built
from phonenumbers and tzdata, loaded by `reminderd migrate`), audiences, broadcasts one-off and
recurring with approval and progress counts, cadences, and a contact's messages (issue 14).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # migrations/sql/0009_audiences.sql;
    # the same change is in reminderd/sql/schema.sql (docs/sql.md, "Where the schema lives").
    run_sql_file("0009_audiences")


def downgrade() -> None:
    raise NotImplementedError("0009 is forward-only: restore from a backup to go back")
