"""Tenant isolation where a row could name another tenant's: occurrences and messages name a
broadcast of their own tenant, message ids are the sequence's, only a daemon claims, and the counts
(broadcasts' progress, usage) are written by the triggers as the owner; rows that broke the rules
repaired.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0023_tenant_bounds")


def downgrade() -> None:
    raise NotImplementedError("0023 is forward-only: restore from a backup to go back")
