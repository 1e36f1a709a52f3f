"""The HTTP API: API keys, idempotency keys, a per-tenant rate limit, send now, the batch and by-id
functions `reminderd serve` calls, the indexes its listing reads, and the reminderd_api role.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # migrations/sql/0006_api.sql;
    # make the same change in reminderd/sql/schema.sql (docs/sql.md, "Where the schema lives").
    run_sql_file("0006_api")


def downgrade() -> None:
    raise NotImplementedError("0006 is forward-only: restore from a backup to go back")
