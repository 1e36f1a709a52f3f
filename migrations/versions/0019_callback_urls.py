"""Callback URLs checked when they are written (a port from 1 to 65535, a host name of valid labels
or an IP address), in SQL as in the CLI and the API; endpoint_of NULL for what reminderd.endpoints
would refuse, so that a row written before never fails the claim for every tenant.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0019_callback_urls")


def downgrade() -> None:
    raise NotImplementedError("0019 is forward-only: restore from a backup to go back")
