"""Batch writes take one typed array: composite types for the daemon's outcome, plan and release
batches, instead of one array per field whose order the query and the daemon had to agree on.

Versioned names (`_v1`): a released type is never altered. A change adds `_v2` beside it, so the
daemons of the previous release, still running during a rolling upgrade, keep writing with `_v1`
until a later migration drops it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0004_batch_types")


def downgrade() -> None:
    raise NotImplementedError("0004 is forward-only: restore from a backup to go back")
