"""Every constraint and unique index of the schema has a sentence in reminderd.refusals, so a
violation a check before missed still reaches a person as one."""

from __future__ import annotations

import asyncpg

from reminderd.refusals import CONSTRAINTS


async def test_every_constraint_of_the_schema_has_a_sentence(db: asyncpg.Connection) -> None:
    names = {row["name"] for row in await db.fetch(
        "SELECT conname AS name FROM pg_constraint WHERE connamespace = 'reminderd'::regnamespace"
        " AND contype IN ('c', 'u', 'p', 'f', 'x')"
        " UNION SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indisunique AND c.relnamespace = 'reminderd'::regnamespace"
    )}
    names.discard("alembic_version_pkc")  # Alembic's own table: never written by a person
    assert sorted(names - set(CONSTRAINTS)) == []
    assert sorted(set(CONSTRAINTS) - names) == []  # and no sentence for a constraint that is gone
