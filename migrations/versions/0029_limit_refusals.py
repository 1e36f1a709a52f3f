"""Sending limits in sentences: a tenant's, an endpoint's or a frequency cap's limit that its
constraint refuses is refused naming the value and whose it is, with a HINT (same SQLSTATE and
constraint name); a cap of an unknown tenant says so in a sentence (23503).

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0029_limit_refusals")


def downgrade() -> None:
    raise NotImplementedError("0029 is forward-only: restore from a backup to go back")
