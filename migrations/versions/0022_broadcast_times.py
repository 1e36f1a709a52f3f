"""Broadcasts' wall times and values where 0021 left PostgreSQL's own errors or a stager failing at
every round: a wall time not finite or past the range of time (22008, check_local_time, in
broadcast_preview and wherever local_instant places one), a recurring broadcast's until not finite
(22008) or stage_ahead over a year (22023); a recurring broadcast whose values its messages could
not have ends once when staged, saying why; such broadcasts written before, repaired or ended.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0022_broadcast_times")


def downgrade() -> None:
    raise NotImplementedError("0022 is forward-only: restore from a backup to go back")
