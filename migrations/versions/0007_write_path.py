"""The write path paid once per attempt: an attempt's deliveries row records the change it made, so
the daemon writes one row per callback; row-level UPDATE triggers with WHEN clauses, so a claim
builds no transition tables; the trail view reads events and deliveries as one story.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0007_write_path")


def downgrade() -> None:
    raise NotImplementedError("0007 is forward-only: restore from a backup to go back")
