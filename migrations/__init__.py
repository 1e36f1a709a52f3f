"""Alembic migrations for the reminderd schema (shipped inside the package as reminderd.migrations)."""

from __future__ import annotations

from alembic import op
from sqlalchemy.util import await_only


def execute_script(sql: str) -> None:
    """Run a multi-statement SQL script exactly as written, inside the migration's transaction.

    asyncpg runs an argument-less execute() with the simple query protocol, which accepts several
    statements and leaves `::` casts and `:name` text alone (SQLAlchemy's text() would not).
    """
    await_only(op.get_bind().connection.driver_connection.execute(sql))
