"""The listing queries read an index range whatever the statistics say. The trap they fell in: a
tenant holding most of the table, asked for every status, most of which it has no row in. The
planner, expecting each status to be as common as any, walked the primary key backwards and
filtered, to the end of the table for each empty status (0.3-0.5 s a page at 100,000 rows)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
from support import scans_of

from reminderd.queries import QUERIES
from reminderd.testing import add_tenant

STATUSES = ["pending", "picked", "sent", "dead", "cancelled", "paused", "expired", "finished",
            "awaiting_approval"]
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


async def one_tenant_holds_most_rows(db: asyncpg.Connection) -> None:
    """acme: 30,000 sent rows and 50 pending; small: 1,000 pending. Loaded without triggers, then
    analyzed, as autovacuum would after a broadcast."""
    await add_tenant(db, "acme")
    await add_tenant(db, "small")
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status)"
            " SELECT 'acme', 'sent' || g, now() - interval '1 day', 'sent' FROM generate_series(1, 30000) g")
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
            " SELECT t, t || g, now() + interval '1 day' FROM generate_series(1, 1000) g,"
            " unnest(ARRAY['small', 'acme']) t WHERE t = 'small' OR g <= 50")
    await db.execute("ANALYZE reminderd.scheduled_messages")


async def plan_scans(db: asyncpg.Connection, query: str, *arguments: Any) -> dict[str, list[str]]:
    """How scheduled_messages is read in the custom and in the generic plan of a statement."""
    scans = {}
    for mode in ("custom", "generic"):
        async with db.transaction():
            await db.execute(f"SET LOCAL plan_cache_mode = force_{mode}_plan")
            [document] = json.loads(await db.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *arguments))
        scans[mode] = scans_of(document["Plan"], "scheduled_messages")
    return scans


async def test_newest_first_reads_each_status_from_the_tenant_status_index(db: asyncpg.Connection) -> None:
    await one_tenant_holds_most_rows(db)
    query = QUERIES["list_newest"]
    for tenant in ("acme", "small"):
        scans = await plan_scans(db, query, tenant, STATUSES, 2**62, 101, EARLIEST, LATEST, True)
        assert scans == {"custom": ["scheduled_messages_tenant_status"],
                         "generic": ["scheduled_messages_tenant_status"]}, (tenant, scans)
    page = await db.fetch(query, "acme", STATUSES, 2**62, 101, EARLIEST, LATEST, True)
    assert len(page) == 101 and [r["status"] for r in page[:50]] == ["pending"] * 50
    assert [r["id"] for r in page] == sorted((r["id"] for r in page), reverse=True)


async def test_soonest_first_reads_each_live_status_from_the_overview_index(db: asyncpg.Connection) -> None:
    await one_tenant_holds_most_rows(db)
    for tenant in ("acme", "small"):
        scans = await plan_scans(db, QUERIES["list_soonest"], tenant, ["pending", "picked", "paused", "dead"],
                                 EARLIEST, 0, 101, EARLIEST, LATEST)
        assert scans == {"custom": ["scheduled_messages_overview"],
                         "generic": ["scheduled_messages_overview"]}, (tenant, scans)
