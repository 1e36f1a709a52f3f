"""A callback delivered but refused at recording is dead-lettered as delivered
(reminderd.died_delivered); reminderd.requeue(id, resend) does not send such a one again by mistake.

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0037_delivered_then_dead")


def downgrade() -> None:
    raise NotImplementedError("0037 is forward-only: restore from a backup to go back")
