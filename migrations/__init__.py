"""Alembic migrations for the reminderd schema (shipped inside the package as reminderd.migrations).

Each revision in versions/ runs its SQL from sql/<revision>_<name>.sql, where a DBA reads it.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op
from sqlalchemy.util import await_only

SQL_DIR = Path(__file__).parent / "sql"


def run_sql_file(name: str) -> None:
    """Run migrations/sql/<name>.sql exactly as written, inside the migration's transaction."""
    execute_script((SQL_DIR / f"{name}.sql").read_text(encoding="utf-8"))


def execute_script(sql: str) -> None:
    """Run a multi-statement SQL script exactly as written, inside the migration's transaction.

    asyncpg runs an argument-less execute() with the simple query protocol, which accepts several
    statements and leaves `::` casts, `%` and `:name` text alone (SQLAlchemy's text() would not).
    """
    await_only(op.get_bind().connection.driver_connection.execute(sql))
