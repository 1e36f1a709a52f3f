"""A lean insert: one BEFORE INSERT row trigger on reminderd.scheduled_messages
(scheduled_messages_admit: dead on arrival, the holds for a disabled endpoint and a paused tenant,
the payload's size, the validation, in that order, reading the tenant once) instead of five, and
one AFTER INSERT statement trigger (scheduled_messages_record_insert: the audit trail, the
broadcasts' counts, the wake-up, the usage) instead of four.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0017_lean_insert")


def downgrade() -> None:
    raise NotImplementedError("0017 is forward-only: restore from a backup to go back")
