"""Cadences (reminderd.schedule_cadence, docs/audiences.md) against a real PostgreSQL: the call
says what the cadence is now. The same call again returns the same messages; a new anchor
replaces them; an offset a new anchor puts in the past cancels the message planned for it; an
offset no longer listed cancels its message; each cancellation is in the trail with its reason,
and every returned row says what happened to its ref."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from support import db_now
from test_audience_cli import sql

from reminderd.migrate import upgrade
from reminderd.testing import add_tenant

pytestmark = pytest.mark.shared_database

LIVE = ("pending", "picked", "paused", "awaiting_approval")


@pytest.fixture
async def acme(db: asyncpg.Connection) -> str:
    await add_tenant(db, "acme")
    await db.execute("UPDATE reminderd.tenants SET timezone = 'UTC' WHERE id = 'acme'")
    await db.execute("SELECT reminderd.upsert_contacts('acme', $1::jsonb)",
                     json.dumps([{"contact_id": "k1", "timezone": "UTC"}]))
    return "acme"


async def cadence(db: asyncpg.Connection, prefix: str, anchor: datetime,
                  offsets: tuple[str, ...] = ("-30 days", "-7 days", "-1 day")) -> dict[str, dict[str, Any]]:
    rows = await db.fetch(
        "SELECT * FROM reminderd.schedule_cadence('acme', $1, $2, $3::text[]::interval[], at_local => '10:00',"
        " contact_id => 'k1')", prefix, anchor, list(offsets))
    steps = {row["ref_id"]: dict(row) for row in rows}
    assert len(steps) == len(rows)
    return steps


async def live_refs(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT ref_id, id FROM reminderd.scheduled_messages WHERE tenant_id = 'acme'"
                          " AND status = ANY ($1::text[])", list(LIVE))
    return {row["ref_id"]: row["id"] for row in rows}


async def trail(db: asyncpg.Connection, message_id: int) -> list[tuple[str, str, str | None]]:
    rows = await db.fetch("SELECT event, status, reason FROM reminderd.events WHERE message_id = $1"
                          " ORDER BY id", message_id)
    return [(row["event"], row["status"], row["reason"]) for row in rows]


async def midnight_in(db: asyncpg.Connection, days: int) -> datetime:
    now = await db_now(db)
    return now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=days)


async def test_the_same_call_again_returns_the_same_messages(db: asyncpg.Connection, acme: str) -> None:
    anchor = await midnight_in(db, 60)
    first = await cadence(db, "ren", anchor)
    assert {ref: step["outcome"] for ref, step in first.items()} == {
        "ren:-30d": "scheduled", "ren:-7d": "scheduled", "ren:-1d": "scheduled"}
    assert all(step["cancelled_id"] is None and step["skipped"] is None for step in first.values())
    again = await cadence(db, "ren", anchor)
    assert {ref: (step["outcome"], step["message_id"]) for ref, step in again.items()} == {
        ref: ("unchanged", step["message_id"]) for ref, step in first.items()}
    assert await live_refs(db) == {ref: step["message_id"] for ref, step in first.items()}


async def test_an_earlier_anchor_cancels_the_steps_it_puts_in_the_past(db: asyncpg.Connection,
                                                                       acme: str) -> None:
    first = await cadence(db, "ren", await midnight_in(db, 60))
    ids = {ref: step["message_id"] for ref, step in first.items()}
    moved = await cadence(db, "ren", await midnight_in(db, 5))
    assert {ref: (step["outcome"], step["skipped"], step["cancelled_id"], step["message_id"] is None)
            for ref, step in moved.items()} == {
        "ren:-30d": ("cancelled", "in the past", ids["ren:-30d"], True),
        "ren:-7d": ("cancelled", "in the past", ids["ren:-7d"], True),
        "ren:-1d": ("replaced", None, ids["ren:-1d"], False),
    }
    assert await live_refs(db) == {"ren:-1d": moved["ren:-1d"]["message_id"]}
    event, status, reason = (await trail(db, ids["ren:-30d"]))[-1]
    assert (event, status) == ("cancelled", "cancelled")
    assert reason is not None and "cadence ren now puts ren:-30d in the past" in reason
    assert (await trail(db, ids["ren:-1d"]))[-1][:2] == ("replaced", "cancelled")
    # The same call again: nothing left to cancel; the past steps say so and nothing more.
    again = await cadence(db, "ren", await midnight_in(db, 5))
    assert {ref: (step["outcome"], step["cancelled_id"]) for ref, step in again.items()} == {
        "ren:-30d": ("skipped", None), "ren:-7d": ("skipped", None), "ren:-1d": ("unchanged", None)}


async def test_an_offset_no_longer_listed_cancels_its_message(db: asyncpg.Connection, acme: str) -> None:
    anchor = await midnight_in(db, 60)
    first = await cadence(db, "ren", anchor)
    others = {}
    for ref in ("ren:note", "ren:x:-7d", "renewal:-7d", "ren:-7d-extra"):
        others[ref] = await db.fetchval("SELECT reminderd.schedule('acme', $1, fire_in => '1 day')", ref)
    fewer = await cadence(db, "ren", anchor, ("-1 day",))
    assert fewer["ren:-1d"]["outcome"] == "unchanged"
    for ref in ("ren:-30d", "ren:-7d"):
        step = fewer[ref]
        assert (step["outcome"], step["skipped"], step["message_id"], step["cancelled_id"]) == (
            "cancelled", "not in the cadence any more", None, first[ref]["message_id"])
        assert (step["fire_at"], step["local_time"]) == (first[ref]["fire_at"], first[ref]["local_time"])
        reason = (await trail(db, first[ref]["message_id"]))[-1][2]
        assert reason == f"cancelled: cadence ren no longer lists offset {ref.removeprefix('ren:')}"
    assert list(fewer) == ["ren:-1d", "ren:-30d", "ren:-7d"]
    assert await live_refs(db) == {"ren:-1d": first["ren:-1d"]["message_id"], **others}


async def test_a_late_step_planned_for_the_same_time_stands(db: asyncpg.Connection, acme: str) -> None:
    """The same call again after an offset's time passed while its message waits to be sent (an
    outage, a busy daemon): that message is the step's own, left to its backfill policy."""
    now = await db_now(db)
    anchor = now.replace(microsecond=0) + timedelta(days=1) - timedelta(hours=1)
    late = await db.fetchval("SELECT reminderd.schedule('acme', 'ren:-1d', fire_in => '1 hour',"
                             " contact_id => 'k1')")
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = $2 WHERE id = $1",
                     late, anchor - timedelta(days=1))
    rows = await db.fetch("SELECT * FROM reminderd.schedule_cadence('acme', 'ren', $1, '{-1 day}',"
                          " contact_id => 'k1')", anchor)
    assert [(r["ref_id"], r["outcome"], r["message_id"], r["skipped"], r["cancelled_id"]) for r in rows] == [
        ("ren:-1d", "unchanged", late, None, None)]
    assert await live_refs(db) == {"ren:-1d": late}


def test_0028_runs_forward_over_cadences_and_broadcasts_already_there(empty_database_url: str) -> None:
    """Messages a cadence made before stay as they were (the next call tidies them); an approved
    broadcast's approval covers its largest wave so far, or, none staged, its audience then."""
    url = empty_database_url
    upgrade(url, "0027")
    sql(url, "INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', 'https://example.com/cb',"
             " 'UTC')")
    sql(url, """SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "a"}, {"contact_id": "b"},
                {"contact_id": "c"}]')""")
    sql(url, "SELECT reminderd.add_to_audience('acme', 'all', '{a,b,c}')")
    anchor = f"'{datetime.now(UTC).replace(microsecond=0) + timedelta(days=60):%Y-%m-%d %H:%M:%S}+00'"
    sql(url, f"SELECT * FROM reminderd.schedule_cadence('acme', 'ren', {anchor})")
    sql(url, "INSERT INTO reminderd.broadcast_requests (tenant_id, ref_prefix, audience, cron, approval,"
             " created_by)"
             " VALUES ('acme', 'waved', 'all', '0 9 * * 1', 'approved', 'alice'),"
             " ('acme', 'unstaged', 'all', '0 9 * * 2', 'approved', 'alice'),"
             " ('acme', 'free', 'all', '0 9 * * 3', 'not_needed', 'alice')")
    sql(url, "INSERT INTO reminderd.broadcast_occurrences (broadcast_id, occurrence, tenant_id, contacts)"
             " SELECT id, timestamp '2026-11-02 09:00' + n * interval '7 days', tenant_id, 5 + n"
             " FROM reminderd.broadcast_requests, generate_series(0, 2) AS n WHERE ref_prefix = 'waved'")
    before = sql(url, "SELECT id, ref_id, status FROM reminderd.scheduled_messages ORDER BY id")
    assert upgrade(url, "0028") == ["0028"]
    assert sql(url, "SELECT id, ref_id, status FROM reminderd.scheduled_messages ORDER BY id") == before
    approved = sql(url, "SELECT ref_prefix, approved_contacts FROM reminderd.broadcast_requests ORDER BY id")
    assert [tuple(row) for row in approved] == [("waved", 7), ("unstaged", 3), ("free", None)]
    steps = sql(url, f"SELECT ref_id, outcome FROM reminderd.schedule_cadence('acme', 'ren', {anchor},"
                     " '{-1 day}')")
    assert sorted(tuple(row) for row in steps) == [("ren:-1d", "unchanged"), ("ren:-30d", "cancelled"),
                                                   ("ren:-7d", "cancelled")]
