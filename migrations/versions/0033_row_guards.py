"""Guards on broadcast and contact rows: each wave completes on its own (a completion callback
whose ref is taken no longer stops every tenant's), a paused tenant's completion callback is
created paused, a hand UPDATE of a broadcast's row is checked as any row's, times and counters
the daemon could not read or move on are refused, and a contact's zones are checked however they
are written.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0033_row_guards")


def downgrade() -> None:
    raise NotImplementedError("0033 is forward-only: restore from a backup to go back")
