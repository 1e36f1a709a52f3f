"""Receivers that misbehave (issue 16), through the worker and a real database: each costs one
attempt bounded by REMINDERD_CALLBACK_TIMEOUT, and another tenant's callbacks keep flowing meanwhile.
The client-level cases, memory included, are in tests/conformance."""

from __future__ import annotations

import asyncpg
from conformance.scripted_server import ScriptedServer, dribble, headers_without_body, huge_body, reset
from support import TEST_SECRET, fast_settings, poll_until, running_worker, settled

from reminderd.testing import Receiver

TIMEOUT_S = 3.0


async def test_each_misbehaving_receiver_costs_one_attempt_and_holds_up_no_one(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute(
        "INSERT INTO reminderd.tenants (id, callback_url, signing_secret) VALUES ('bad', $1, $2)",
        receiver.url, TEST_SECRET,
    )
    huge = ScriptedServer([])
    huge.script = [huge_body(huge, 500, 100 * 1024 * 1024)]
    servers = {
        "dribble": ScriptedServer([dribble(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1.0)]),
        "mute": ScriptedServer([headers_without_body()]),
        "huge": huge,
        "reset": ScriptedServer([reset]),
    }
    for server in servers.values():
        await server.start()
    try:
        for name, server in servers.items():
            await db.execute(
                "SELECT reminderd.schedule('bad', $1, now(), callback_url => $2, max_attempts => 1)",
                f"bad:{name}", server.url(),
            )
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) "
            "SELECT 'acme', 'ok:' || n, now() FROM generate_series(1, 50) n"
        )
        async with running_worker(fast_settings(database_url, callback_timeout_s=TIMEOUT_S, concurrency=8)):
            await receiver.wait_for(lambda got: len(got) == 50)
            # Every healthy callback is in while the two slow receivers still hold their attempt.
            slow = await db.fetch(
                "SELECT ref_id, status FROM reminderd.scheduled_messages"
                " WHERE ref_id IN ('bad:dribble', 'bad:mute') ORDER BY ref_id"
            )
            assert [(row["ref_id"], row["status"]) for row in slow] == [
                ("bad:dribble", "picked"), ("bad:mute", "picked")
            ]
            rows = {name: await poll_until(settled(db, f"bad:{name}", "dead")) for name in servers}
    finally:
        for server in servers.values():
            await server.stop()

    assert len(receiver.received) == 50
    expected = {
        "dribble": f"timed out after {TIMEOUT_S:g}s",
        "mute": f"timed out after {TIMEOUT_S:g}s",
        "huge": "HTTP 500: " + "x" * 200,
        "reset": "connection reset by the receiver before any answer",
    }
    for name, row in rows.items():
        attempts = await db.fetch(
            "SELECT attempt, error, duration_ms FROM reminderd.deliveries WHERE message_id = $1", row["id"]
        )
        assert [(a["attempt"], a["error"]) for a in attempts] == [(1, expected[name])], name
        assert attempts[0]["duration_ms"] < (TIMEOUT_S + 2) * 1000, name
        assert row["last_error"] == f"gave up after 1 attempts: {expected[name]}"
        assert len(servers[name].requests) == 1, f"{name}: one request, no silent second try"
    assert servers["huge"].bytes_sent < 20 * 1024 * 1024
