"""schedule_many()'s set-based path reads each ref through an index on (tenant, ref), whatever the
statistics said when its statements were planned.

schedule_set runs its statements with generic plans (planned once per connection, kept for the
connection's life). Planned on an empty table, as a new installation's pooled API connections
plan them, every scan of the table looked as cheap as any other, and the lookup of each ref's live
row walked the tenant's whole (tenant_id, status, id) range and filtered by ref: 1.8 ms an item at
20,000 rows, a batch of 1,000 in 1.8 s, growing with the tenant (bench: 1,000 messages/s where
28,000 was the rate). The plans are read through auto_explain on the very connection that planned
them: the plans the server runs, not a fresh EXPLAIN's.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from reminderd.testing import add_tenant

MANY = "SELECT * FROM reminderd.schedule_many($1, $2::reminderd.schedule_item_v2[], $3)"
TENANT = "acme"
GROWN = 20_000  # the tenant's rows once the plans are made


def one_off(ref: str, payload: str = "{}") -> tuple[Any, ...]:
    """A schedule_item_v2 due in two hours."""
    return (ref, None, timedelta(hours=2), None, None, None, None, payload, *[None] * 11)


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON plan's node and every node under it."""
    return [node] + [n for child in node.get("Plans", []) for n in nodes(child)]


def scans(node: dict[str, Any]) -> list[tuple[str, str]]:
    """Every scan of scheduled_messages in a JSON plan: its index (or node type) and its condition."""
    return [(n.get("Index Name") or n["Node Type"], n.get("Index Cond", "")) for n in nodes(node)
            if n.get("Relation Name") == "scheduled_messages" and "Scan" in n.get("Node Type", "")]


async def grow(db: asyncpg.Connection) -> None:
    """The tenant's 20,000 live rows (loaded without triggers: only the rows matter)."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
            " SELECT $1, 'grown:' || g, now() + interval '1 day' FROM generate_series(1, $2) g", TENANT, GROWN)


@pytest.mark.parametrize("planned_on", ["an empty table analyzed", "an empty table never analyzed",
                                        "the grown table analyzed"])
async def test_each_ref_is_looked_up_by_tenant_and_ref_whatever_the_plans_were_made_on(
    db: asyncpg.Connection, planned_on: str
) -> None:
    await add_tenant(db, TENANT)
    if planned_on == "the grown table analyzed":
        await grow(db)
    if "never" not in planned_on:
        await db.execute("ANALYZE reminderd.scheduled_messages")
    # The first batch plans schedule_set's statements on this connection, for its whole life.
    first = await db.fetch(MANY, TENANT, [one_off(f"first:{i}") for i in range(10)], True)
    assert [r["result"] for r in first] == ["created"] * 10
    if planned_on != "the grown table analyzed":
        await grow(db)
    # New refs, identical repeats, and replacements of live rows, in one batch.
    items = ([one_off(f"new:{i}") for i in range(5)] + [one_off(f"first:{i}") for i in range(5)]
             + [one_off(f"grown:{i}", '{"n": 1}') for i in range(1, 6)])
    rows, plans = await explained(db, [items])
    assert [r["result"] for r in rows] == ["created"] * 5 + ["unchanged"] * 5 + ["replaced"] * 5
    assert_read_by_ref(plans)


@pytest.mark.parametrize("analyzed", [True, False])
async def test_a_batch_of_one_is_looked_up_by_tenant_and_ref_after_the_table_grows(
    db: asyncpg.Connection, analyzed: bool
) -> None:
    """schedule_one (a batch of one), whose plans PL/pgSQL caches for the connection too: planned
    over six calls on an empty table (the plan cache's generic plan comes after five)."""
    await add_tenant(db, TENANT)
    if analyzed:
        await db.execute("ANALYZE reminderd.scheduled_messages")
    for i in range(6):
        [row] = await db.fetch(MANY, TENANT, [one_off(f"first:{i}")], True)
        assert row["result"] == "created"
    await grow(db)
    batches = [[one_off("new")], [one_off("first:0")], [one_off("grown:1", '{"n": 1}')]]
    rows, plans = await explained(db, batches)
    assert [r["result"] for r in rows] == ["created", "unchanged", "replaced"]
    assert_read_by_ref(plans)


async def explained(db: asyncpg.Connection, batches: list[list[tuple[Any, ...]]]
                    ) -> tuple[list[asyncpg.Record], list[dict[str, Any]]]:
    """Each batch through schedule_many, with the plan of every statement it ran (auto_explain,
    on this connection: the plans it cached, not a fresh EXPLAIN's)."""
    notices: list[str] = []
    db.add_log_listener(lambda _, message: notices.append(message.message))
    await db.execute("LOAD 'auto_explain'")
    await db.execute("SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;"
                     " SET auto_explain.log_format = json; SET auto_explain.log_level = notice;"
                     " SET auto_explain.log_analyze = on")
    rows = [row for batch in batches for row in await db.fetch(MANY, TENANT, batch, True)]
    await db.execute("SET auto_explain.log_min_duration = -1")
    return rows, [json.loads(n.split("plan:", 1)[1]) for n in notices if "plan:" in n]


def assert_read_by_ref(plans: list[dict[str, Any]]) -> None:
    """scheduled_messages read only by (tenant, ref) or by id, and never a row of another ref."""
    read = [scan for plan in plans for scan in scans(plan["Plan"])]
    assert read, plans
    for index, condition in read:
        by_ref = index == "scheduled_messages_tenant_ref" and "ref_id =" in condition
        by_id = index == "scheduled_messages_pkey" and condition.startswith("(id =")
        assert by_ref or by_id, read
    removed = [node.get("Rows Removed by Filter", 0) for plan in plans for node in nodes(plan["Plan"])
               if node.get("Relation Name") == "scheduled_messages"]
    assert max(removed, default=0) <= 1, removed
