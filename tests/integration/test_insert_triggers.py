"""What a plain INSERT into reminderd.scheduled_messages runs (migration 0017): one row trigger,
scheduled_messages_admit, making in one function what were five triggers' decisions in their order
(dead on arrival, the hold for a disabled endpoint, the hold for a paused tenant, the payload's
size, the validation), and one statement trigger, scheduled_messages_record_insert (the audit
trail, the broadcasts' counts, the wake-up, the usage). The cases where two decisions meet pin
which comes first, as it was with five triggers. The module shares one database, emptied before
each test."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from reminderd.migrate import upgrade
from reminderd.testing import add_tenant

pytestmark = pytest.mark.shared_database

BIG_PAYLOAD = "jsonb_build_object('text', repeat('x', 300000))"


async def pause_tenant(db: asyncpg.Connection, tenant: str) -> None:
    await db.execute("UPDATE reminderd.tenants SET paused = true WHERE id = $1", tenant)


async def disable_endpoint(db: asyncpg.Connection, tenant: str, endpoint: str, reason: str) -> None:
    await db.execute(
        "INSERT INTO reminderd.endpoint_health (tenant_id, endpoint, disabled_at, disabled_reason)"
        " VALUES ($1, $2, now(), $3)", tenant, endpoint, reason,
    )


async def message(db: asyncpg.Connection, ref: str) -> asyncpg.Record:
    row: asyncpg.Record = await db.fetchrow(
        "SELECT status, paused_by, last_error FROM reminderd.scheduled_messages WHERE ref_id = $1", ref)
    return row


async def test_a_paused_tenants_message_dead_on_arrival_is_refused_not_held(
    db: asyncpg.Connection,
) -> None:
    await add_tenant(db, "acme")
    await pause_tenant(db, "acme")
    with pytest.raises(asyncpg.DatetimeFieldOverflowError) as refused:
        await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                         " VALUES ('acme', 'late', now() - interval '2 hours')")
    assert str(refused.value).startswith("message acme / late is too late to send: due ")
    assert refused.value.as_dict()["detail"] == (
        "backfill=send sends a one-off at most 30m late (reminderd.config 'max_lateness', "
        "REMINDERD_MAX_LATENESS); it would expire at once.")
    # A little late: accepted, and held for the tenant.
    await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                     " VALUES ('acme', 'slightly-late', now() - interval '1 minute')")
    assert tuple(await message(db, "slightly-late")) == ("paused", "tenant", None)


async def test_a_disabled_endpoint_holds_a_message_before_its_paused_tenant_does(
    db: asyncpg.Connection,
) -> None:
    await add_tenant(db, "acme", "https://hooks.example.com/cb")
    await pause_tenant(db, "acme")
    await disable_endpoint(db, "acme", "hooks.example.com:443", "HTTP 410 Gone")
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, callback_url) VALUES"
        " ('acme', 'to-the-default', now() + interval '1 hour', NULL),"
        " ('acme', 'elsewhere', now() + interval '1 hour', 'https://other.example.com/cb')")
    gone = ("paused", "endpoint", "endpoint disabled: HTTP 410 Gone")
    assert tuple(await message(db, "to-the-default")) == gone
    assert tuple(await message(db, "elsewhere")) == ("paused", "tenant", None)
    events = await db.fetch("SELECT ref_id, event, status, reason FROM reminderd.events ORDER BY ref_id")
    assert [tuple(e) for e in events] == [
        ("elsewhere", "created", "paused", "tenant is paused"),
        ("to-the-default", "created", "paused", "tenant is paused"),
    ]


async def test_an_oversized_payload_is_refused_before_an_unknown_timezone(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme")
    insert = "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, timezone, payload) VALUES "
    with pytest.raises(asyncpg.ProgramLimitExceededError,
                       match=r"^payload of message acme / big is \d+ bytes; at most 262144 \(256 KiB\)$"):
        await db.execute(insert + f"('acme', 'big', now() + interval '1 hour', 'Mars/Base', {BIG_PAYLOAD})")
    # ... and after a message dead on arrival: the order was arrival, holds, payload, validation.
    with pytest.raises(asyncpg.DatetimeFieldOverflowError, match=r"^message acme / big is too late to send"):
        await db.execute(insert + f"('acme', 'big', now() - interval '2 days', 'Mars/Base', {BIG_PAYLOAD})")
    with pytest.raises(asyncpg.InvalidParameterValueError,
                       match=r'^unknown timezone "Mars/Base" for message acme / z\n'):
        await db.execute(insert + "('acme', 'z', now() + interval '1 hour', 'Mars/Base', '{}')")


async def test_a_broadcast_row_skips_the_arrival_the_tenant_hold_and_the_validation(
    db: asyncpg.Connection,
) -> None:
    """stage_broadcast checks and holds a broadcast's rows itself, all at once: the insert trigger
    only holds them for a disabled endpoint and refuses an oversized payload, as before."""
    await add_tenant(db, "paused", "https://paused.example.com/cb")
    await pause_tenant(db, "paused")
    await add_tenant(db, "nodefault", None)
    await add_tenant(db, "down", "https://down.example.com/cb")
    await disable_endpoint(db, "down", "down.example.com:443", "HTTP 410 Gone")
    # A message names a broadcast of its own tenant (migration 0023): one request each.
    broadcast = {tenant: await db.fetchval(
        "INSERT INTO reminderd.broadcast_requests (tenant_id, ref_prefix, everyone, local_time, created_by)"
        " VALUES ($1, 'b', true, localtimestamp + interval '1 day', 'test') RETURNING id", tenant)
        for tenant in ("paused", "nodefault", "down")}
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, callback_url, broadcast_id)"
        " VALUES ('paused', 'late-of-a-paused-tenant', now() - interval '2 days', NULL, $1),"
        " ('nodefault', 'no-callback-url', now() + interval '1 hour', NULL, $2),"
        " ('down', 'disabled-endpoint', now() + interval '1 hour', NULL, $3)",
        broadcast["paused"], broadcast["nodefault"], broadcast["down"])
    assert tuple(await message(db, "late-of-a-paused-tenant")) == ("pending", None, None)
    assert tuple(await message(db, "no-callback-url")) == ("pending", None, None)
    gone = ("paused", "endpoint", "endpoint disabled: HTTP 410 Gone")
    assert tuple(await message(db, "disabled-endpoint")) == gone
    with pytest.raises(asyncpg.ProgramLimitExceededError, match=r"^payload of message paused / big is"):
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload, broadcast_id)"
            f" VALUES ('paused', 'big', now() + interval '1 hour', {BIG_PAYLOAD}, {broadcast['paused']})")


async def test_an_insert_runs_one_row_trigger_and_two_statement_triggers(db: asyncpg.Connection) -> None:
    """Besides admit_message, a row pays only the WHENs of refuse_pick (a row inserted as picked),
    refuse_out_of_range (a time or counter the daemon cannot read, 0033), check_calendar_known (a
    row with a calendar) and check_completion_ref (a ref with #completed, 0035); a statement records
    its events as the caller, and counts and checks ids as the owner (0023)."""
    triggers = await db.fetch(
        "SELECT tgname, tgtype & 1 = 1 AS per_row, tgtype & 2 = 2 AS before,"
        " (SELECT proname FROM pg_proc WHERE oid = tgfoid) AS function"
        " FROM pg_trigger WHERE tgrelid = 'reminderd.scheduled_messages'::regclass AND NOT tgisinternal"
        " AND tgtype & 4 = 4 ORDER BY tgname"  # INSERT
    )
    assert [tuple(t) for t in triggers] == [
        ("scheduled_messages_admit", True, True, "admit_message"),
        ("scheduled_messages_calendar_known_insert", True, True, "check_calendar_known"),
        ("scheduled_messages_completion_ref_insert", True, True, "check_completion_ref"),
        ("scheduled_messages_count_insert", False, False, "count_inserts"),
        ("scheduled_messages_picked_by_daemon_insert", True, True, "refuse_pick"),
        ("scheduled_messages_record_insert", False, False, "record_inserts"),
        ("scheduled_messages_values_in_range_insert", True, True, "refuse_out_of_range"),
    ]
    await add_tenant(db, "acme")
    async with db.transaction():
        await db.execute("SET LOCAL track_functions = 'pl'")
        await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                         " VALUES ('acme', 'one', now() + interval '1 minute')")
        await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                         " SELECT 'acme', 'many:' || g, now() + interval '1 hour' FROM generate_series(1, 3) g")
        calls = await db.fetch("SELECT funcname, calls FROM pg_stat_xact_user_functions"
                               " WHERE schemaname = 'reminderd' ORDER BY funcname")
    assert {c["funcname"]: c["calls"] for c in calls} == {
        "admit_message": 4, "record_inserts": 2, "count_inserts": 2,
        "count_fires": 2,  # count_fires: events' own trigger; refuse_pick, refuse_out_of_range: never called
    }


async def test_a_single_row_insert_records_its_event_usage_and_wake_up(
    db: asyncpg.Connection, database_url: str
) -> None:
    await add_tenant(db, "acme")
    woken: list[str] = []
    ended = asyncio.Event()  # our own last notification: every earlier one has arrived

    def heard(_connection: object, _pid: int, _channel: str, payload: str) -> None:
        woken.append(payload)
        if payload == "end":
            ended.set()

    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener("reminderd_due", heard)
        message_id = await db.fetchval(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
            " VALUES ('acme', 'soon', now() + interval '1 minute') RETURNING id")
        fire_at = await db.fetchval("SELECT extract(epoch FROM fire_at)::text FROM reminderd.scheduled_messages"
                                    " WHERE id = $1", message_id)
        await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron)"
                         " VALUES ('acme', 'cron', '0 9 * * *')")
        await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                         " VALUES ('acme', 'later', now() + interval '1 day')")
        await db.execute("SELECT pg_notify('reminderd_due', 'end')")
        await asyncio.wait_for(ended.wait(), 10)
    finally:
        await listener.close()
    assert woken == [fire_at, "plan", "end"]  # nothing for a message due in a day
    events = await db.fetch("SELECT ref_id, event, status, reason FROM reminderd.events ORDER BY id")
    assert [tuple(e) for e in events] == [
        ("soon", "created", "pending", None), ("cron", "created", "pending", None),
        ("later", "created", "pending", None)]
    usage = await db.fetch("SELECT tenant_id, scheduled FROM reminderd.usage_increments ORDER BY id")
    assert [tuple(u) for u in usage] == [("acme", 1)] * 3
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_counts") == 0


async def test_0017_runs_forward_over_messages_already_there(empty_database_url: str) -> None:
    url = empty_database_url
    await asyncio.to_thread(upgrade, url, "0016")
    db = await asyncpg.connect(url)
    try:
        await add_tenant(db, "acme")
        await add_tenant(db, "held")
        await pause_tenant(db, "held")
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, cron, status) VALUES"
            " ('acme', 'one-off', now() + interval '1 hour', NULL, 'pending'),"
            " ('acme', 'cron', NULL, '0 9 * * *', 'pending'),"
            " ('acme', 'done', now() - interval '1 day', NULL, 'sent'),"
            " ('held', 'paused', now() + interval '1 hour', NULL, 'pending')")
        snapshot = """SELECT (SELECT array_agg(m ORDER BY id)::text FROM reminderd.scheduled_messages m),
                             (SELECT array_agg(e ORDER BY id)::text FROM reminderd.events e),
                             (SELECT array_agg(u ORDER BY id)::text FROM reminderd.usage_increments u)"""
        before = await db.fetchrow(snapshot)
        await asyncio.to_thread(upgrade, url, "0017")
        assert await db.fetchrow(snapshot) == before
        status_of = "SELECT status FROM reminderd.scheduled_messages WHERE ref_id = $1"
        assert await db.fetchval(status_of, "paused") == "paused"
        await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                         " VALUES ('held', 'after', now() + interval '1 hour')")
        assert await db.fetchval(status_of, "after") == "paused"
        assert await db.fetchval("SELECT count(*) FROM reminderd.events WHERE ref_id = 'after'") == 1
    finally:
        await db.close()
