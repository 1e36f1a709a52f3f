"""Fair and bounded sending: a claim fair between tenants (and transactional before marketing),
tenant and endpoint limits that hold rows back instead of dropping them, per-recipient frequency
caps, the health of each tenant's endpoints (circuit breaker, disabling), usage metering.

Adds scheduled_messages.priority, a stored column derived from the category: the upgrade
rewrites that table once (a few seconds per million rows, under an exclusive lock).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0010_fair_sending")


def downgrade() -> None:
    raise NotImplementedError("0010 is forward-only: restore from a backup to go back")
