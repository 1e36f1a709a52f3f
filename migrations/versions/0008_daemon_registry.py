"""Daemons as first-class rows: reminderd.daemons (registration, heartbeats, stopping), the
daemon_overview view, and scheduled_messages.picked_by, stamped by every claim, so a dead daemon's
rows are rescued by owner within seconds instead of waiting for their lease.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0008_daemon_registry")


def downgrade() -> None:
    raise NotImplementedError("0008 is forward-only: restore from a backup to go back")
