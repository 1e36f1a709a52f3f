"""A recurring broadcast's until (and an RRULE's UNTIL=…Z) ends each contact by their own instant of
an occurrence (reminderd.broadcast_end), not by its first zone's for everyone; a contact whose zone
this server's tz database cannot read is staged dead saying why (local_instant_if_readable), not
failing the whole broadcast.

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0038_broadcast_ends_and_zones")


def downgrade() -> None:
    raise NotImplementedError("0038 is forward-only: restore from a backup to go back")
