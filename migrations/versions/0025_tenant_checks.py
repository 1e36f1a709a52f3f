"""Tenants: a tenant that already exists is left to the primary key (INSERT … ON CONFLICT works), and
a new or changed signing secret must be whsec_ followed by base64 (22023), as the daemon signs by;
secrets written before are kept, and named in a WARNING.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-02
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql_file("0025_tenant_checks")


def downgrade() -> None:
    raise NotImplementedError("0025 is forward-only: restore from a backup to go back")
