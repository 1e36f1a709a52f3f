"""Contacts imported at speed: reminderd.upsert_contact_rows() takes a batch as one array of
reminderd.contact_v1 (what `reminderd contacts import` sends), resolves each distinct phone that
needs it once and writes only the contacts that changed; reminderd.upsert_contacts(tenant, jsonb)
checks its JSON's shape and shares that path.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0016_fast_import")


def downgrade() -> None:
    raise NotImplementedError("0016 is forward-only: restore from a backup to go back")
