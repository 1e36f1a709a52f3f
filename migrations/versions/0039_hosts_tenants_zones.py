"""Callback hosts in ASCII, an A-label punycode cannot decode refused; a message kept to its
tenant (scheduled_messages_keep_tenant); a zone's alias stored as its canonical name, a right/
zone refused.

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0039"
down_revision = "0038"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0039_hosts_tenants_zones")


def downgrade() -> None:
    raise NotImplementedError("0039 is forward-only: restore from a backup to go back")
