"""Decisions: a broadcast's creator never approves it, even once approved (42501); an
Idempotency-Key never keeps a rotation's secret (the rows kept before lose it).

Revision ID: 0032
Revises: 0028
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0032"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0032_decisions")


def downgrade() -> None:
    raise NotImplementedError("0032 is forward-only: restore from a backup to go back")
