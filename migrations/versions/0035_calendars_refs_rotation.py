"""The holiday calendars the installed holidays package knows (reminderd.holiday_calendars, loaded
by reminderd migrate), and a message, broadcast or tenant naming another one refused; an ordinary
message refused a notify broadcast's completion ref; a rotation within a grace keeps the secret
still in its grace signing (tenants.earlier_signing_secret).

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0035_calendars_refs_rotation")


def downgrade() -> None:
    raise NotImplementedError("0035 is forward-only: restore from a backup to go back")
