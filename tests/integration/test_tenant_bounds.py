"""Tenant isolation where a row could name another tenant's (migration 0024), with real LOGIN roles:
an application role cannot file a wave or a count under another tenant's broadcast, point its
messages at one, choose the message id another tenant is given next, claim a row against a shared
endpoint, or write its own usage; each attempt is one line with a documented SQLSTATE and the
victim goes on unaffected. A dashboard session sees a reused id's history of its own tenant only.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from test_fair_sending import claim
from test_tenant_isolation import Roles, TwoTenants, failure_of, roles, two_tenants  # noqa: F401

from reminderd.migrate import HEAD_REVISION, upgrade
from reminderd.queries import QUERIES
from reminderd.store import Store

pytestmark = pytest.mark.shared_database


async def globex_recurring_broadcast(db: asyncpg.Connection) -> tuple[int, datetime]:
    """globex's daily broadcast with a completion callback, its next occurrence tomorrow at 09:00."""
    await db.execute(
        """SELECT reminderd.upsert_contacts('globex', '[{"contact_id": "g1", "timezone": "Europe/London"}]')"""
    )
    broadcast_id: int = await db.fetchval(
        "SELECT reminderd.broadcast('globex', 'globex-campaign', cron => '0 9 * * *', everyone => true,"
        " notify => true, callback_url => 'https://globex.example/private-hook')"
    )
    wall = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None, hour=9, minute=0, second=0, microsecond=0)
    await db.execute("UPDATE reminderd.broadcast_requests SET next_occurrence = $1 WHERE id = $2", wall, broadcast_id)
    return broadcast_id, wall


# Broadcasts ---------------------------------------------------------------------------------------


async def test_an_app_cannot_file_a_wave_or_counts_under_another_tenants_broadcast(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    broadcast_id, wall = await globex_recurring_broadcast(db)
    acme = two_tenants.app_a

    forged_wave = await failure_of(acme.execute(
        "INSERT INTO reminderd.broadcast_occurrences (broadcast_id, occurrence, tenant_id, contacts)"
        " VALUES ($1, $2, 'acme', 0)", broadcast_id, wall))
    nobodys_wave = await failure_of(acme.execute(
        "INSERT INTO reminderd.broadcast_occurrences (broadcast_id, occurrence, tenant_id, contacts)"
        " VALUES ($1, $2, 'acme', 0)", broadcast_id + 1000, wall))
    forged_counts = await failure_of(acme.execute(
        "INSERT INTO reminderd.broadcast_counts (broadcast_id, occurrence, tenant_id, sent, waiting)"
        " VALUES ($1, $2, 'acme', 999999, 1)", broadcast_id, wall))

    # Another tenant's broadcast and no broadcast at all are refused alike: no existence oracle.
    assert (forged_wave.sqlstate, nobodys_wave.sqlstate) == ("23503", "23503")
    assert forged_wave.constraint_name == nobodys_wave.constraint_name == "broadcast_occurrences_broadcast_fkey"
    assert str(forged_wave).replace(str(broadcast_id), "N") == str(nobodys_wave).replace(str(broadcast_id + 1000), "N")
    assert forged_counts.sqlstate == "42501"
    assert "permission denied for table broadcast_counts" in str(forged_counts)
    assert (await failure_of(acme.execute(
        "DELETE FROM reminderd.broadcast_occurrences"))).sqlstate == "42501"

    # globex's occurrence stages and its progress is its own.
    assert await db.fetchval("SELECT reminderd.stage_broadcast($1, $2, $3)", broadcast_id, wall,
                             wall + timedelta(days=1)) == 1
    shown = await db.fetchrow("SELECT occurrences, staged, sent, waiting FROM reminderd.broadcasts WHERE id = $1",
                              broadcast_id)
    assert dict(shown) == {"occurrences": 1, "staged": 1, "sent": 0, "waiting": 1}


async def test_counts_filed_under_another_tenant_are_neither_shown_nor_completed(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    """Defence in depth: a count row of acme's under globex's broadcast (as only a bug or a DBA could
    now write it) changes nothing globex reads, and completes nothing in acme's name."""
    broadcast_id, wall = await globex_recurring_broadcast(db)
    assert await db.fetchval("SELECT reminderd.stage_broadcast($1, $2, NULL)", broadcast_id, wall) == 1
    await db.execute(
        "INSERT INTO reminderd.broadcast_counts (broadcast_id, occurrence, tenant_id, waiting, sent)"
        " VALUES ($1, $2, 'acme', -1, 999999)", broadcast_id, wall)

    shown = await db.fetchrow("SELECT sent, waiting, done FROM reminderd.broadcasts WHERE id = $1", broadcast_id)
    assert dict(shown) == {"sent": 0, "waiting": 1, "done": False}
    assert await db.fetch("SELECT * FROM reminderd.complete_broadcasts()") == []
    assert await db.fetchval(
        "SELECT count(*) FROM reminderd.scheduled_messages WHERE tenant_id = 'acme' AND broadcast_id = $1",
        broadcast_id) == 0


async def test_an_app_cannot_point_its_messages_at_another_tenants_broadcast(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    broadcast_id, _ = await globex_recurring_broadcast(db)
    await db.execute("UPDATE reminderd.broadcast_requests SET approval = 'awaiting' WHERE id = $1", broadcast_id)
    acme = two_tenants.app_a
    hitched = await acme.fetchval("SELECT reminderd.schedule('acme', 'hitch', now() + interval '1 day')")

    moved = await failure_of(acme.execute(
        "UPDATE reminderd.scheduled_messages SET broadcast_id = $1, status = 'awaiting_approval' WHERE id = $2",
        broadcast_id, hitched))
    inserted = await failure_of(acme.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, broadcast_id)"
        " VALUES ('acme', 'stowaway', now() + interval '1 day', $1)", broadcast_id))

    for failure in (moved, inserted):
        assert failure.sqlstate == "23503"
        assert failure.message.startswith(f'tenant "acme" has no broadcast {broadcast_id}: ')
        assert "\n" not in failure.message and failure.hint
    assert await db.fetchval("SELECT reminderd.approve_broadcast('globex', $1, 'globex-boss')", broadcast_id) == 0
    row = await db.fetchrow("SELECT status, last_error, broadcast_id FROM reminderd.scheduled_messages WHERE id = $1",
                            hitched)
    assert dict(row) == {"status": "pending", "last_error": None, "broadcast_id": None}


# Message ids --------------------------------------------------------------------------------------


async def test_an_app_cannot_take_the_ids_another_tenant_is_given_next(
    db: asyncpg.Connection, two_tenants: TwoTenants
) -> None:
    acme, globex = two_tenants.app_a, two_tenants.app_b
    top = await acme.fetchval("SELECT reminderd.schedule('acme', 'probe', now() + interval '1 day')")

    squat = await failure_of(acme.execute(
        "INSERT INTO reminderd.scheduled_messages (id, tenant_id, ref_id, fire_at)"
        " SELECT g, 'acme', 'squat-' || g, now() + interval '1 day'"
        " FROM generate_series($1::bigint + 1, $1::bigint + 50) g", top))
    renumbered = await failure_of(acme.execute(
        "UPDATE reminderd.scheduled_messages SET id = $1 + 1 WHERE id = $1", top))

    assert squat.sqlstate == "42501"
    assert squat.message == (f"message id {top + 50} is not yours to choose: reminderd.scheduled_messages_id_seq"
                          " numbers the messages and has not reached it")
    assert squat.hint and "Leave id out" in squat.hint
    assert renumbered.sqlstate == "42501"
    assert await globex.fetchval("SELECT reminderd.schedule('globex', 'victim', now() + interval '1 hour')") == top + 1
    assert await globex.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                                " VALUES ('globex', 'plain', now() + interval '1 hour')") == "INSERT 0 1"


# The dashboard ------------------------------------------------------------------------------------


async def test_a_reused_id_shows_only_its_own_tenants_attempts_and_trail(
    db: asyncpg.Connection, store: Store, two_tenants: TwoTenants
) -> None:
    gone = two_tenants.ids["globex", "sent"]
    await db.execute("UPDATE reminderd.deliveries SET error = 'globex receiver said: card declined'"
                     " WHERE message_id = $1", gone)
    await db.execute("SELECT set_config('reminderd.on_behalf_of', 'rk_globexkey01 (globex billing)', false)")
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = fire_at + interval '1 minute' WHERE id = $1",
                     gone)
    await two_tenants.app_b.execute("DELETE FROM reminderd.scheduled_messages WHERE id = $1", gone)
    # An id below the sequence's is not another tenant's next one: acme may still write it.
    await two_tenants.app_a.execute("INSERT INTO reminderd.scheduled_messages (id, tenant_id, ref_id, fire_at)"
                                    " VALUES ($1, 'acme', 'borrowed', now() + interval '1 day')", gone)

    for session_tenant in ("acme", None):  # acme's session, and an operator's (every tenant)
        story = await store.message_story(session_tenant, gone)
        assert story is not None
        message, attempts, trail = story
        assert (message.tenant_id, message.ref_id) == ("acme", "borrowed")
        assert attempts == []
        assert [(e.event, e.actor, e.on_behalf_of) for e in trail] == [("created", two_tenants.role_a, None)]


# Claims -------------------------------------------------------------------------------------------


async def test_an_app_cannot_hold_a_shared_endpoints_in_flight(
    db: asyncpg.Connection, store: Store, two_tenants: TwoTenants
) -> None:
    await db.execute("UPDATE reminderd.tenants SET callback_url = 'https://hooks.shared.example/globex'"
                     " WHERE id = 'globex'")
    await db.execute("INSERT INTO reminderd.endpoints (endpoint, max_in_flight) VALUES ('hooks.shared.example:443', 2)"
                     " ON CONFLICT (endpoint) DO UPDATE SET max_in_flight = 2")
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'cancelled' WHERE status IN ('pending', 'picked')")
    await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                     " SELECT 'globex', 'g' || i, now() - interval '1 second' FROM generate_series(1, 5) i")
    acme = two_tenants.app_a
    mine = await acme.fetchval("SELECT reminderd.schedule('acme', 'squat', now() + interval '1 day')")

    squatted = await failure_of(acme.execute(
        "UPDATE reminderd.scheduled_messages SET status = 'picked', endpoint = 'hooks.shared.example:443',"
        " picked_at = now(), lease_expires_at = now() + interval '100 years', picked_by = NULL WHERE id = $1", mine))
    picked = await failure_of(acme.execute(
        "UPDATE reminderd.scheduled_messages SET status = 'picked',"
        " lease_expires_at = now() + interval '100 years' WHERE id = $1", mine))
    inserted = await failure_of(acme.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, endpoint, lease_expires_at)"
        " VALUES ('acme', 'held', now(), 'picked', 'hooks.shared.example:443', now() + interval '100 years')"))

    assert squatted.sqlstate == "42501" and "permission denied for table scheduled_messages" in str(squatted)
    for failure, ref in ((picked, "squat"), (inserted, "held")):
        assert failure.sqlstate == "42501"
        assert failure.message == (f"message acme / {ref} cannot be set to picked by role {two_tenants.role_a}:"
                                " only a reminderd daemon claims messages")
        assert failure.hint == "Leave status to the daemon: a pending message that is due is claimed at once."
    result = await claim(store, batch_size=100, default_max_in_flight=2147483647)
    assert len(result.jobs) == 2 and {j.tenant_id for j in result.jobs} == {"globex"}


# Usage --------------------------------------------------------------------------------------------


async def test_an_app_cannot_write_its_own_usage(db: asyncpg.Connection, two_tenants: TwoTenants) -> None:
    acme = two_tenants.app_a
    before = await acme.fetchval("SELECT scheduled FROM reminderd.usage_daily WHERE tenant_id = 'acme'")

    forged = await failure_of(acme.execute(
        "INSERT INTO reminderd.usage_increments (tenant_id, scheduled, delivered) VALUES ('acme', -1000000, -1000000)"))
    negative = await failure_of(db.execute(
        "INSERT INTO reminderd.usage_increments (tenant_id, delivered) VALUES ('acme', -1)"))

    assert forged.sqlstate == "42501" and "permission denied for table usage_increments" in str(forged)
    assert (negative.sqlstate, negative.constraint_name) == ("23514", "usage_increments_not_negative")
    await acme.fetchval("SELECT reminderd.schedule('acme', 'metered', now() + interval '1 day')")
    assert await acme.fetchval("SELECT scheduled FROM reminderd.usage_daily WHERE tenant_id = 'acme'") == before + 1


# The migration ------------------------------------------------------------------------------------


async def test_a_database_at_0021_with_forged_rows_upgrades_to_head(empty_database_url: str) -> None:
    """0024 on a database where the holes were used: waves and counts filed under another tenant's
    broadcast are deleted, a message naming one forgets it, negative usage becomes 0, and a row picked
    by nobody with a lease that never ends is reaped; everything else stays."""
    await asyncio.to_thread(upgrade, empty_database_url, "0021")
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute(
            "INSERT INTO reminderd.tenants (id, callback_url) VALUES ('acme', 'https://acme.example/cb'),"
            " ('globex', 'https://globex.example/cb')")
        await connection.execute(
            """SELECT reminderd.upsert_contacts('globex', '[{"contact_id": "g1", "timezone": "UTC"}]')""")
        broadcast_id = await connection.fetchval(
            "SELECT reminderd.broadcast('globex', 'camp', local_time => (now() + interval '1 day')::timestamp,"
            " everyone => true)")
        await connection.execute(
            "INSERT INTO reminderd.broadcast_occurrences (broadcast_id, occurrence, tenant_id, contacts)"
            " VALUES ($1, '2030-01-01', 'acme', 0)", broadcast_id)
        await connection.execute(
            "INSERT INTO reminderd.broadcast_counts (broadcast_id, occurrence, tenant_id, sent)"
            " VALUES ($1, '2030-01-01', 'acme', 999)", broadcast_id)
        hitched = await connection.fetchval(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, broadcast_id)"
            " VALUES ('acme', 'hitch', now() + interval '1 day', $1) RETURNING id", broadcast_id)
        squatter = await connection.fetchval(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, attempts, picked_at,"
            " lease_expires_at, endpoint) VALUES ('acme', 'squat', now(), 'picked', 1, now(),"
            " now() + interval '100 years', 'globex.example:443') RETURNING id")
        await connection.execute(
            "INSERT INTO reminderd.usage_increments (tenant_id, scheduled, delivered) VALUES ('acme', -50, 3)")

        await asyncio.to_thread(upgrade, empty_database_url)

        version = await connection.fetchval("SELECT version_num FROM reminderd.alembic_version")
        waves = await connection.fetch("SELECT tenant_id FROM reminderd.broadcast_occurrences")
        counts = await connection.fetch("SELECT DISTINCT tenant_id FROM reminderd.broadcast_counts")
        hitch = await connection.fetchval("SELECT broadcast_id FROM reminderd.scheduled_messages WHERE id = $1", hitched)
        usage = await connection.fetchrow(
            "SELECT min(scheduled) AS scheduled, max(delivered) AS delivered FROM reminderd.usage_increments"
            " WHERE tenant_id = 'acme'")
        reaped = await connection.fetch(QUERIES["reap_expired_leases"], 100)
    finally:
        await connection.close()
    assert version == HEAD_REVISION
    assert [w["tenant_id"] for w in waves] == ["globex"]
    assert [c["tenant_id"] for c in counts] == ["globex"]
    assert hitch is None
    assert dict(usage) == {"scheduled": 0, "delivered": 3}
    assert [r["id"] for r in reaped] == [squatter]
