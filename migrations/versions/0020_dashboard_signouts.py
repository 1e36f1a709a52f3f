"""Signing out of the dashboard ends that session on the server: the session's nonce in
reminderd.dashboard_signouts, read with the session's key on every dashboard request.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0020_dashboard_signouts")


def downgrade() -> None:
    raise NotImplementedError("0020 is forward-only: restore from a backup to go back")
