"""An audience keeps its member count (changes appended to audience_member_counts, migration 0034):
listing audiences (GET /v1/audiences, `reminderd audience list`) read every member of the tenant on
each call, a seq scan of audience_members (107 ms at 100,000 members). The count follows every way a
member comes or goes: add_to_audience, remove_from_audience, a contact's deletion, plain SQL; no
membership change waits on another's count; TRUNCATE is refused and an application writes no count."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from support import poll_until

from reminderd.migrate import upgrade
from reminderd.queries import QUERIES
from reminderd.testing import add_tenant


async def contacts(db: asyncpg.Connection, tenant: str, count: int, prefix: str = "c") -> list[str]:
    ids = [f"{prefix}{n}" for n in range(count)]
    await db.execute("SELECT reminderd.upsert_contacts($1, $2::jsonb)", tenant,
                     json.dumps([{"contact_id": i, "timezone": "Europe/Berlin"} for i in ids]))
    return ids


async def sizes(db: asyncpg.Connection, tenant: str) -> dict[str, int]:
    return {r["name"]: r["members"] for r in await db.fetch(QUERIES["audiences"], tenant)}


async def counted(db: asyncpg.Connection, tenant: str) -> dict[str, int]:
    """The members as counted row by row, every audience of the tenant (empty ones too)."""
    rows = await db.fetch(
        "SELECT a.name, count(m.contact_id) AS members FROM reminderd.audiences a"
        " LEFT JOIN reminderd.audience_members m ON m.tenant_id = a.tenant_id AND m.audience = a.name"
        " WHERE a.tenant_id = $1 GROUP BY a.name", tenant)
    return {r["name"]: r["members"] for r in rows}


async def test_the_count_follows_adds_removals_deleted_contacts_and_plain_sql(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme")
    ids = await contacts(db, "acme", 10)
    assert await db.fetchval("SELECT reminderd.add_to_audience('acme', 'vip', $1)", ids[:6]) == 6
    assert await db.fetchval("SELECT reminderd.add_to_audience('acme', 'vip', $1)", ids[4:8]) == 2  # 2 new
    await db.execute("SELECT reminderd.add_to_audience('acme', 'all', $1)", ids)
    await db.execute("SELECT reminderd.add_to_audience('acme', 'spare', ARRAY['c5'])")
    assert await sizes(db, "acme") == {"all": 10, "spare": 1, "vip": 8}
    removed = await db.fetchval("SELECT reminderd.remove_from_audience('acme', 'vip', $1)",
                                ["c0", "c1", "nobody"])
    assert removed == 2
    await db.execute("SELECT reminderd.delete_contacts('acme', ARRAY['c2', 'c9'])")
    await db.execute("DELETE FROM reminderd.contacts WHERE tenant_id = 'acme' AND contact_id = 'c3'")
    await db.execute("INSERT INTO reminderd.audience_members (tenant_id, audience, contact_id)"
                     " VALUES ('acme', 'vip', 'c0')")
    await db.execute("UPDATE reminderd.audience_members SET audience = 'spare'"
                     " WHERE tenant_id = 'acme' AND audience = 'vip' AND contact_id = 'c4'")
    assert await sizes(db, "acme") == await counted(db, "acme") == {"all": 7, "spare": 2, "vip": 4}
    removed = await db.fetchval("SELECT reminderd.remove_from_audience('acme', 'vip', $1)",
                                ["c0", "c5", "c6", "c7"])
    assert removed == 4
    assert await sizes(db, "acme") == {"all": 7, "spare": 2, "vip": 0}
    await db.execute("SELECT reminderd.drop_audience('acme', 'all')")
    assert await sizes(db, "acme") == {"spare": 2, "vip": 0}


async def test_concurrent_adds_and_removals_count_exactly(db: asyncpg.Connection, database_url: str) -> None:
    await add_tenant(db, "acme")
    ids = await contacts(db, "acme", 400)
    await db.execute("SELECT reminderd.add_to_audience('acme', 'vip', $1)", ids[:100])
    connections = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        async def add(conn: asyncpg.Connection, part: list[str]) -> None:
            for n in range(0, len(part), 10):
                await conn.execute("SELECT reminderd.add_to_audience('acme', 'vip', $1)", part[n:n + 10])

        async def remove(conn: asyncpg.Connection, part: list[str]) -> None:
            for n in range(0, len(part), 10):
                await conn.execute("SELECT reminderd.remove_from_audience('acme', 'vip', $1)", part[n:n + 10])

        await asyncio.gather(add(connections[0], ids[50:300]), add(connections[1], ids[150:400]),
                             remove(connections[2], ids[0:80]), remove(connections[3], ids[60:120]))
    finally:
        for conn in connections:
            await conn.close()
    members = await counted(db, "acme")
    assert await sizes(db, "acme") == members
    assert 280 <= members["vip"] <= 400


async def test_membership_changes_share_no_lock_so_they_cannot_deadlock(
    db: asyncpg.Connection, database_url: str
) -> None:
    """u7 is in all and vip. A adds u6 to vip, B deletes u7 (leaving all and vip), A adds u6 to all:
    unrelated rows, so neither waits on the other (a count kept in the audiences row made each
    change hold that row until commit: B waited for A's vip, A for B's all, and B was killed)."""
    await add_tenant(db, "acme")
    await contacts(db, "acme", 8, prefix="u")
    for name in ("all", "vip"):
        await db.execute("SELECT reminderd.add_to_audience('acme', $1, ARRAY['u7'])", name)
    a, b = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        a_tx, b_tx = a.transaction(), b.transaction()
        await a_tx.start()
        await b_tx.start()
        await a.execute("SELECT reminderd.add_to_audience('acme', 'vip', ARRAY['u6'])")
        deleting = asyncio.create_task(b.execute("DELETE FROM reminderd.contacts WHERE contact_id = 'u7'"))
        b_pid = b.get_server_pid()

        async def done_or_waiting() -> bool:
            waiting = await db.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                                        b_pid)
            return deleting.done() or bool(waiting)

        await poll_until(done_or_waiting)
        await asyncio.wait_for(a.execute("SELECT reminderd.add_to_audience('acme', 'all', ARRAY['u6'])"), 30)
        await a_tx.commit()
        await asyncio.wait_for(deleting, 30)
        await b_tx.commit()
    finally:
        await a.close()
        await b.close()
    assert await sizes(db, "acme") == await counted(db, "acme") == {"all": 1, "vip": 1}


async def test_the_counts_are_folded_without_losing_a_change(db: asyncpg.Connection, database_url: str) -> None:
    """Each statement appends a change; folding sums a list's changes into one, and a change
    committed while the fold runs is kept."""
    await add_tenant(db, "acme")
    ids = await contacts(db, "acme", 30)
    for n in range(0, 30, 3):
        await db.execute("SELECT reminderd.add_to_audience('acme', 'vip', $1)", ids[n:n + 3])
    await db.execute("SELECT reminderd.remove_from_audience('acme', 'vip', $1)", ids[:2])
    changes = "SELECT count(*) FROM reminderd.audience_member_counts WHERE tenant_id = 'acme'"
    assert await db.fetchval(changes) == 11
    other = await asyncpg.connect(database_url)
    try:
        folding = db.transaction()
        await folding.start()
        assert await db.fetchval("SELECT reminderd.fold_audience_member_counts(fold_above => 1)") == 1
        await other.execute("SELECT reminderd.add_to_audience('acme', 'vip', ARRAY['c0'])")  # commits
        await folding.commit()
    finally:
        await other.close()
    assert await db.fetchval(changes) == 2
    assert await sizes(db, "acme") == await counted(db, "acme") == {"vip": 29}
    await db.execute("SELECT reminderd.drop_audience('acme', 'vip')")
    assert await db.fetchval("SELECT reminderd.fold_audience_member_counts(fold_above => 1)") == 1
    assert await db.fetchval(changes) == 0  # a dropped list's changes add up to nothing, and go


async def test_no_write_can_make_a_count_wrong(db: asyncpg.Connection, database_url: str) -> None:
    """TRUNCATE fires no DELETE trigger: refused. An application may not write a count."""
    await add_tenant(db, "acme")
    ids = await contacts(db, "acme", 3)
    await db.execute("SELECT reminderd.add_to_audience('acme', 'vip', $1)", ids)
    with pytest.raises(asyncpg.PostgresError) as refused:
        await db.execute("TRUNCATE reminderd.audience_members")
    assert refused.value.sqlstate == "0A000"
    assert refused.value.message == ("reminderd.audience_members cannot be truncated:"
                                     " the audiences' member counts would be left wrong")
    await db.execute("CREATE ROLE sizes_app IN ROLE reminderd_app")
    await db.execute("INSERT INTO reminderd.tenant_members (role_name, tenant_id) VALUES ('sizes_app', 'acme')")
    app = await asyncpg.connect(database_url)
    try:
        await app.execute("SET ROLE sizes_app")
        assert await sizes(app, "acme") == {"vip": 3}
        for statement in (
            "INSERT INTO reminderd.audience_member_counts (tenant_id, audience, delta)"
            " VALUES ('acme', 'vip', 1000000)",
            "UPDATE reminderd.audience_member_counts SET delta = 1000000",
            "DELETE FROM reminderd.audience_member_counts",
        ):
            with pytest.raises(asyncpg.PostgresError) as refused:
                await app.execute(statement)
            assert refused.value.sqlstate == "42501", statement
        await app.execute("SELECT reminderd.remove_from_audience('acme', 'vip', ARRAY['c0'])")
        assert await sizes(app, "acme") == {"vip": 2}
    finally:
        await app.close()
        await db.execute("DELETE FROM reminderd.tenant_members WHERE role_name = 'sizes_app'")
        await db.execute("DROP OWNED BY sizes_app; DROP ROLE sizes_app")
    assert await sizes(db, "acme") == await counted(db, "acme") == {"vip": 2}


async def test_listing_audiences_reads_no_member(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme")
    ids = await contacts(db, "acme", 3000)
    for name in ("a", "b", "c"):
        await db.execute("SELECT reminderd.add_to_audience('acme', $1, $2)", name, ids)
    await db.execute("ANALYZE reminderd.audience_members")
    await db.execute("SET enable_seqscan = off")  # a small table: make the plan show what it reads
    try:
        plan = "\n".join(r[0] for r in await db.fetch(f"EXPLAIN {QUERIES['audiences']}", "acme"))
    finally:
        await db.execute("RESET enable_seqscan")
    assert "audience_members" not in plan, plan
    assert await sizes(db, "acme") == {"a": 3000, "b": 3000, "c": 3000}


async def test_a_database_at_0028_with_members_upgrades_with_their_counts(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url, "0028")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme")
        await add_tenant(db, "other")
        ids = await contacts(db, "acme", 50)
        await contacts(db, "other", 5, prefix="o")
        await db.execute("SELECT reminderd.add_to_audience('acme', 'vip', $1)", ids[:20])
        await db.execute("SELECT reminderd.add_to_audience('acme', 'all', $1)", ids)
        await db.execute("SELECT reminderd.add_to_audience('acme', 'gone', $1)", ids[:1])
        await db.execute("SELECT reminderd.remove_from_audience('acme', 'gone', $1)", ids[:1])
        await db.execute("SELECT reminderd.add_to_audience('other', 'vip', ARRAY['o1', 'o2'])")
        await asyncio.to_thread(upgrade, empty_database_url, "head")
        assert await sizes(db, "acme") == {"all": 50, "gone": 0, "vip": 20}
        assert await sizes(db, "other") == {"vip": 2}
        await db.execute("SELECT reminderd.delete_contacts('acme', $1)", ids[:5])
        assert await sizes(db, "acme") == {"all": 45, "gone": 0, "vip": 15}
    finally:
        await db.close()
