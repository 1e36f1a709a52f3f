"""schedule_many's lookups by ref read each ref's rows through (tenant_id, ref_id, id) whatever the
statistics said when its generic plans were made; the replaced rows updated by id.

Revision ID: 0040
Revises: 0039
Create Date: 2026-12-03
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0040"
down_revision = "0039"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0040_ref_lookups")


def downgrade() -> None:
    raise NotImplementedError("0040 is forward-only: restore from a backup to go back")
