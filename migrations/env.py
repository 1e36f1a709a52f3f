"""Alembic environment: runs migrations over asyncpg, the driver the daemon uses."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def database_url() -> str:
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get("REMINDERD_DATABASE_URL")
    if not url:
        raise SystemExit("REMINDERD_DATABASE_URL is required to run migrations")
    return url


def run_in(connection: Connection) -> None:
    # No target_metadata: the migrations are SQL (migrations/sql/) and the current schema is
    # reminderd/sql/schema.sql, kept equal to them by a test, so `alembic revision --autogenerate`
    # has no Python description to compare with, on purpose.
    context.configure(
        connection=connection,
        version_table_schema="reminderd",
        include_schemas=True,
        transaction_per_migration=True,
        # reminderd.migrate.upgrade() collects the revisions applied, to say what it did.
        on_version_apply=context.config.attributes.get("on_version_apply", ()),
    )
    with context.begin_transaction():
        # Several hosts may migrate at once (each one's reminderd-migrate.service at boot): one
        # migrates, the others wait for it (a session lock: it outlives each migration's commit)
        # and then find nothing left to do. Released when the connection closes.
        connection.exec_driver_sql("SELECT pg_advisory_lock(hashtext('reminderd migrate'))")
        # The version table lives in our schema, so the schema must exist before Alembic looks.
        connection.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS reminderd")
        context.run_migrations()


def say_warnings(_connection: object, message: asyncpg.PostgresLogMessage) -> None:
    """A migration's RAISE WARNING (rows it names and leaves as they were, for an operator to see
    to) goes to stderr, beside what `reminderd migrate` says it applied; notices stay quiet."""
    if (getattr(message, "severity_en", None) or message.severity) == "WARNING":
        said = [f"reminderd migrate: warning: {message.message}"]
        for label, text in (("detail", message.detail), ("hint", message.hint)):
            if text:
                said.append(f"  {label}: {text}")
        print("\n".join(said), file=sys.stderr, flush=True)


async def connect(url: str) -> asyncpg.Connection:
    connection = await asyncpg.connect(url)
    connection.add_log_listener(say_warnings)
    return connection


async def run_online() -> None:
    # asyncpg reads the URL itself, as it does for the daemon: sslmode, sslrootcert, several hosts
    # and the rest mean the same here (SQLAlchemy would pass them to asyncpg as unknown arguments).
    url = database_url()
    engine = create_async_engine("postgresql+asyncpg://", async_creator=lambda: connect(url))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_in)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against a database")
asyncio.run(run_online())
