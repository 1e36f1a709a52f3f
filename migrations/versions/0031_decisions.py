"""Decisions: a broadcast's creator never approves it, even once approved (42501); an
Idempotency-Key never keeps a rotation's secret (the rows kept before lose it).

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0031_decisions")


def downgrade() -> None:
    raise NotImplementedError("0031 is forward-only: restore from a backup to go back")
