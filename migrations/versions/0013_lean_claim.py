"""A leaner write path: the CHECK constraint every update evaluates without an expensive regex, an
index nothing reads dropped, the arrival and validation triggers' common case made cheap.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0013_lean_claim")


def downgrade() -> None:
    raise NotImplementedError("0013 is forward-only: restore from a backup to go back")
