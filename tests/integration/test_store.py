"""Integration tests for reminderd.store.Store: every named query against a real PostgreSQL.

Rows are arranged and checked with plain SQL on the `db` connection; the Store under test runs the
queries the daemon runs. Times are compared with the database clock, never the host's. The module
shares one clone of the migrated template, emptied before each test.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from support import CALLBACK, LOOKBACK_S, db_now, fast_settings, near, row_by_id, row_by_ref, scans_of

from reminderd.arguments import Recurrence, ScheduleRequest
from reminderd.daemon import connect_with_retry
from reminderd.exceptions import (
    ConfigError,
    DatabaseMisconfigured,
    DatabaseRefused,
    DatabaseUnavailable,
    SchemaMissing,
)
from reminderd.jobs import Job
from reminderd.lifecycle import Event, Status
from reminderd.migrate import HEAD_REVISION
from reminderd.outcome import AttemptResult, Outcome, Plan
from reminderd.queries import QUERIES
from reminderd.schedule.cron import next_fire
from reminderd.store import NO_LIMIT, Release, Store, _outcome_v1
from reminderd.testing import add_tenant

LEASE_S = 300.0
DUE = "now() - interval '5 seconds'"

pytestmark = pytest.mark.shared_database


async def insert(db: asyncpg.Connection, ref_id: str, fire_at: str | None = DUE, **columns: Any) -> int:
    """Insert one message for tenant t1 (unless given); `fire_at` is an SQL expression."""
    values = {"tenant_id": "t1", "ref_id": ref_id, **columns}
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    message_id: int = await db.fetchval(
        f"INSERT INTO reminderd.scheduled_messages (fire_at, {', '.join(values)})"
        f" VALUES ({fire_at or 'NULL'}, {placeholders}) RETURNING id",
        *values.values(),
    )
    return message_id


async def deliveries(db: asyncpg.Connection, message_id: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT * FROM reminderd.deliveries WHERE message_id = $1 ORDER BY id", message_id
    )
    return rows


async def claim(store: Store, batch_size: int = 100) -> list[Job]:
    return await store.claim(lookback_s=LOOKBACK_S, batch_size=batch_size, lease_s=LEASE_S)


async def claim_one(store: Store) -> Job:
    jobs = await claim(store)
    assert len(jobs) == 1, jobs
    return jobs[0]


def delivered(job: Job) -> Outcome:
    """A one-off delivered: the row is sent."""
    return Outcome(job, AttemptResult(True, 200, None, 42), Event.FIRED, Status.SENT)


def advanced(job: Job, next_fire_at: datetime) -> Outcome:
    """A recurring occurrence delivered: the row moves on to its next occurrence."""
    return Outcome(
        job, AttemptResult(True, 204, None, 3), Event.FIRED, Status.PENDING,
        next_fire_at=next_fire_at, reset_attempts=True,
    )


# claim ----------------------------------------------------------------------------------------


async def test_claim_takes_only_due_pending_rows_inside_the_lookback(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db)
    due = await insert(db, "due")
    await insert(db, "future", "now() + interval '1 hour'")
    await insert(db, "too-old", "now() - interval '10 minutes'")
    await insert(db, "cancelled", status="cancelled")
    await insert(db, "sent", status="sent")
    await insert(db, "paused", status="paused")
    await insert(db, "unplanned-cron", None, cron="@daily")

    assert [job.id for job in await claim(store)] == [due]
    assert await claim(store) == []  # claimed rows are not claimed twice


async def test_claim_marks_rows_picked_with_a_lease(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db)
    message_id = await insert(db, "r1")

    job = await claim_one(store)
    now = await db_now(db)
    row = await row_by_id(db, message_id)

    assert job.attempt == 1
    assert row["status"] == "picked"
    assert row["attempts"] == 1
    assert near(row["picked_at"], now)
    assert near(row["lease_expires_at"], now + timedelta(seconds=LEASE_S))


async def test_claim_returns_what_a_callback_needs(db: asyncpg.Connection, store: Store) -> None:
    secret = await add_tenant(db)
    own_url = await insert(
        db, "own-url", "now() - interval '6 seconds'",
        payload='{"b": [1, 2], "a": "x"}', callback_url="https://hooks.example.org/own", max_attempts=3,
    )
    tenant_url = await insert(db, "tenant-url", "now() - interval '5 seconds'")

    jobs = {job.id: job for job in await claim(store)}

    first = jobs[own_url]
    assert (first.tenant_id, first.ref_id) == ("t1", "own-url")
    assert json.loads(first.payload_json) == {"a": "x", "b": [1, 2]}
    assert first.payload_json == await db.fetchval(
        "SELECT payload::text FROM reminderd.scheduled_messages WHERE id = $1", own_url
    )
    assert first.callback_url == "https://hooks.example.org/own"
    assert first.signing_secret == secret
    assert first.scheduled_for == (await row_by_id(db, own_url))["fire_at"]
    assert (first.timing.cron, first.timing.timezone, first.attempt, first.max_attempts) == (None, "UTC", 1, 3)

    second = jobs[tenant_url]
    assert second.callback_url == CALLBACK  # the tenant's default
    assert second.payload_json == "{}"
    assert second.max_attempts is None
    assert second.webhook_id != first.webhook_id


async def test_claim_orders_by_fire_at_and_respects_the_batch_size(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db)
    ids = {}
    for seconds in (3, 50, 1, 20, 7):  # inserted out of order
        ids[seconds] = await insert(db, f"r{seconds}", f"now() - interval '{seconds} seconds'")

    first_batch = await claim(store, batch_size=3)
    second_batch = await claim(store, batch_size=3)

    assert [job.id for job in first_batch] == [ids[50], ids[20], ids[7]]
    assert [job.id for job in second_batch] == [ids[3], ids[1]]


async def test_concurrent_claims_share_the_due_rows_without_overlap(
    db: asyncpg.Connection, store: Store, database_url: str
) -> None:
    await add_tenant(db)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " SELECT 't1', 'r' || n, now() - make_interval(secs => n / 10.0) FROM generate_series(1, 500) AS n"
    )
    other = await Store.connect(database_url)
    try:
        batches = await asyncio.gather(
            *(
                s.claim(lookback_s=LOOKBACK_S, batch_size=300, lease_s=LEASE_S)
                for s in (store, other, store, other)
            )
        )
    finally:
        await other.close()

    claimed = [job.id for batch in batches for job in batch]
    assert len(claimed) == len(set(claimed)), "a row was claimed twice"
    assert len(claimed) == 500
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'picked'") == 500


async def test_claim_plan_uses_the_partial_due_index(db: asyncpg.Connection) -> None:
    await add_tenant(db)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, callback_url)"
        " SELECT 't1', 'r' || n, now() + make_interval(secs => n),"
        "        CASE WHEN n % 2 = 0 THEN 'pending' ELSE 'sent' END, 'https://example.com/cb'"
        " FROM generate_series(1, 40000) AS n"
    )
    await db.execute("ANALYZE reminderd.scheduled_messages")

    plan = "\n".join(
        row[0]
        for row in await db.fetch(
            f"EXPLAIN {QUERIES['claim']}", LOOKBACK_S, 100, LEASE_S, "send", 1800.0, 64, None, None
        )
    )

    assert "scheduled_messages_due" in plan, plan
    assert "Seq Scan on scheduled_messages" not in plan, plan


# record_outcomes ------------------------------------------------------------------------------


async def test_record_outcomes_marks_delivered_sent_and_logs_the_attempt(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db)
    message_id = await insert(db, "r1")
    job = await claim_one(store)

    await store.record_outcomes([delivered(job)])

    row = await row_by_id(db, message_id)
    now = await db_now(db)
    assert row["status"] == "sent"
    assert near(row["sent_at"], now)
    assert row["lease_expires_at"] is None
    assert row["last_error"] is None
    [logged] = await deliveries(db, message_id)
    assert logged["tenant_id"] == "t1"
    assert logged["webhook_id"] == job.webhook_id
    assert logged["attempt"] == 1
    assert logged["status_code"] == 200
    assert logged["error"] is None
    assert logged["duration_ms"] == 42
    assert logged["scheduled_for"] == job.scheduled_for


async def test_record_outcomes_applies_every_outcome_of_a_batch(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db)
    ok = await insert(db, "ok")
    refused = await insert(db, "refused")
    jobs = {job.id: job for job in await claim(store)}

    await store.record_outcomes([
        delivered(jobs[ok]),
        Outcome(jobs[refused], AttemptResult(False, 404, "HTTP 404", 7, permanent=True),
                Event.DEAD_LETTERED, Status.DEAD,
                last_error="permanent failure: HTTP 404"),
    ])

    assert (await row_by_id(db, ok))["status"] == "sent"
    dead = await row_by_id(db, refused)
    assert dead["status"] == "dead"
    assert dead["last_error"] == "permanent failure: HTTP 404"
    assert dead["sent_at"] is None
    [logged] = await deliveries(db, refused)
    assert (logged["status_code"], logged["error"], logged["duration_ms"]) == (404, "HTTP 404", 7)


async def test_retry_is_due_later_for_the_same_occurrence(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db)
    message_id = await insert(db, "r1")
    job = await claim_one(store)
    occurrence = job.scheduled_for

    await store.record_outcomes([
        Outcome(job, AttemptResult(False, None, "timed out after 10s", 10_000),
                Event.RETRY_SCHEDULED, Status.PENDING,
                retry_in_s=60.0, next_scheduled_for=occurrence,
                last_error="attempt 1 failed: timed out after 10s; retrying in 60.0s"),
    ])

    row = await row_by_id(db, message_id)
    assert row["status"] == "pending"
    assert near(row["fire_at"], await db_now(db) + timedelta(seconds=60))
    assert row["scheduled_for"] == occurrence
    assert row["attempts"] == 1
    assert row["last_error"] == "attempt 1 failed: timed out after 10s; retrying in 60.0s"
    [logged] = await deliveries(db, message_id)
    assert (logged["status_code"], logged["error"]) == (None, "timed out after 10s")

    # When the retry is due, the next attempt carries the same occurrence, hence the same webhook-id.
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() WHERE id = $1", message_id)
    again = await claim_one(store)
    assert again.attempt == 2
    assert again.scheduled_for == occurrence
    assert again.webhook_id == job.webhook_id


async def test_stale_outcome_does_not_move_a_reclaimed_row_but_is_logged(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db)
    message_id = await insert(db, "r1")
    stale = await claim_one(store)
    # Its lease ran out and another daemon claimed the row again: attempts is now 2.
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET attempts = attempts + 1, picked_at = now() WHERE id = $1",
        message_id,
    )
    before = await row_by_id(db, message_id)

    await store.record_outcomes([delivered(stale)])

    after = await row_by_id(db, message_id)
    assert after["status"] == "picked"
    assert after["attempts"] == 2
    assert after["sent_at"] is None
    assert after["lease_expires_at"] == before["lease_expires_at"]
    assert [d["attempt"] for d in await deliveries(db, message_id)] == [1]


async def test_outcome_for_a_cancelled_row_does_not_revive_it(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db)
    message_id = await insert(db, "r1")
    job = await claim_one(store)
    assert await store.cancel("t1", "r1") == 1

    await store.record_outcomes([
        Outcome(job, AttemptResult(False, 503, "HTTP 503", 5), Event.RETRY_SCHEDULED, Status.PENDING,
                retry_in_s=1.0,
                next_scheduled_for=job.scheduled_for, last_error="retrying"),
    ])

    row = await row_by_id(db, message_id)
    assert (row["status"], row["last_error"]) == ("cancelled", "cancelled")
    assert len(await deliveries(db, message_id)) == 1


async def test_delivered_cron_occurrence_advances_to_the_next_one(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db)
    message_id = await insert(db, "r1", DUE, cron="*/5 * * * *", timezone="Europe/London")
    # A previous failed attempt of this occurrence left a retry behind.
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET scheduled_for = fire_at - interval '1 minute', attempts = 2"
        " WHERE id = $1", message_id,
    )
    job = await claim_one(store)
    assert (job.timing.cron, job.timing.timezone, job.attempt) == ("*/5 * * * *", "Europe/London", 3)
    following = job.scheduled_for + timedelta(minutes=5)

    await store.record_outcomes([advanced(job, following)])

    row = await row_by_id(db, message_id)
    assert row["status"] == "pending"
    assert row["fire_at"] == following
    assert row["attempts"] == 0
    assert row["scheduled_for"] is None
    assert near(row["sent_at"], await db_now(db))
    [logged] = await deliveries(db, message_id)
    assert (logged["attempt"], logged["scheduled_for"]) == (3, job.scheduled_for)


async def test_stale_outcome_of_an_earlier_cron_occurrence_does_not_move_the_current_one(
    db: asyncpg.Connection, store: Store
) -> None:
    """attempts restarts at 0 for every occurrence of a cron row, so attempt alone cannot fence.

    Daemon A claims occurrence X (attempt 1) and stalls; its lease is reaped, daemon B delivers X
    and the row advances to Y; daemon C claims Y (attempt 1 again). A's late outcome for X must
    not move the row C now owns.
    """
    await add_tenant(db)
    message_id = await insert(db, "r1", "now() - interval '30 seconds'", cron="* * * * *")
    stalled = await claim_one(store)  # daemon A: occurrence X, attempt 1

    await db.execute(
        "UPDATE reminderd.scheduled_messages SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        message_id,
    )
    assert [r.id for r in await store.reap_expired_leases()] == [message_id]
    takeover = await claim_one(store)  # daemon B: occurrence X, attempt 2
    next_occurrence = await db.fetchval("SELECT now() - interval '1 second'")
    await store.record_outcomes([advanced(takeover, next_occurrence)])
    current = await claim_one(store)  # daemon C: occurrence Y, attempt 1
    assert (current.attempt, current.scheduled_for) == (1, next_occurrence)
    owned = await row_by_id(db, message_id)

    await store.record_outcomes([advanced(stalled, next_occurrence)])

    row = await row_by_id(db, message_id)
    assert row["status"] == "picked", "a stale outcome for occurrence X released the row daemon C holds"
    assert (row["attempts"], row["lease_expires_at"], row["fire_at"]) == (
        owned["attempts"], owned["lease_expires_at"], owned["fire_at"],
    )


async def test_an_attempt_is_one_row_carrying_the_change_it_made(db: asyncpg.Connection, store: Store) -> None:
    """The attempt's deliveries row records what it did to the message; events does not repeat it."""
    await add_tenant(db)
    sent_id = await insert(db, "sent")
    retried_id = await insert(db, "retried")
    jobs = {job.id: job for job in await claim(store)}
    retry = Outcome(jobs[retried_id], AttemptResult(False, 503, "HTTP 503", 9), Event.RETRY_SCHEDULED,
                    Status.PENDING, retry_in_s=60.0, next_scheduled_for=jobs[retried_id].scheduled_for,
                    last_error="attempt 1 failed: HTTP 503; retrying in 60.0s")

    await store.record_outcomes([delivered(jobs[sent_id]), retry])

    me = await db.fetchval("SELECT current_user")
    [fired] = await deliveries(db, sent_id)
    assert (fired["ref_id"], fired["event"], fired["status"], fired["reason"], fired["actor"]) == (
        "sent", "fired", "sent", None, me,
    )
    [retrying] = await deliveries(db, retried_id)
    row = await row_by_id(db, retried_id)
    assert (retrying["ref_id"], retrying["event"], retrying["status"], retrying["reason"]) == (
        "retried", "retry_scheduled", "pending", "attempt 1 failed: HTTP 503; retrying in 60.0s",
    )
    assert retrying["fire_at"] == row["fire_at"]
    assert row["last_delivery_id"] == retrying["id"]
    # One row per attempt: the events table holds the creations only.
    assert [e["event"] for e in await db.fetch("SELECT event FROM reminderd.events ORDER BY id")] == [
        "created", "created",
    ]
    trail = await db.fetch(
        "SELECT event, status, attempt, status_code FROM reminderd.trail WHERE ref_id = 'retried'"
        " ORDER BY at, event_id, delivery_id"
    )
    assert [tuple(t) for t in trail] == [
        ("created", "pending", None, None), ("retry_scheduled", "pending", 1, 503),
    ]


async def test_a_stale_attempt_is_logged_with_no_change(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db)
    message_id = await insert(db, "r1")
    stale = await claim_one(store)
    await db.execute("UPDATE reminderd.scheduled_messages SET picked_at = now() WHERE id = $1", message_id)

    await store.record_outcomes([delivered(stale)])

    [logged] = await deliveries(db, message_id)
    assert (logged["ref_id"], logged["status_code"]) == ("r1", 200)
    assert (logged["event"], logged["status"], logged["fire_at"], logged["reason"]) == (None, None, None, None)
    assert (await row_by_id(db, message_id))["last_delivery_id"] is None


@pytest.mark.parametrize("claim_query", ["claim", "claim_fair"])
async def test_claims_and_attempts_queue_no_trigger_call_held_rows_and_retries_do(
    db: asyncpg.Connection, claim_query: str
) -> None:
    """The claim and the attempts' outcomes are the hot path: the UPDATE triggers' WHEN clauses let
    them through without a call (a statement-level trigger would be called, its transition tables
    built, for every claim). A row held back writes its event; a retry due soon wakes the daemons;
    both, pending again, are checked against a disabled endpoint (migration 0010)."""
    await add_tenant(db)
    for ref in ("delivered", "held", "retried"):
        await insert(db, ref)

    async with db.transaction():
        await db.execute("SET LOCAL track_functions = 'pl'")
        claimed = await db.fetch(QUERIES[claim_query], LOOKBACK_S, 10, LEASE_S, "send", 1800.0, NO_LIMIT,
                                 None, None)
        jobs = {job.ref_id: job for job in map(Job.from_row, claimed)}
        after_claim = await trigger_calls(db)
        held = Outcome(jobs["held"], None, Event.DEFERRED, Status.PENDING,
                       next_fire_at=jobs["held"].scheduled_for + timedelta(hours=9), refund_attempt=True,
                       last_error="deferred")
        retried = Outcome(jobs["retried"], AttemptResult(False, 503, "HTTP 503", 5), Event.RETRY_SCHEDULED,
                          Status.PENDING, retry_in_s=1.0, next_scheduled_for=jobs["retried"].scheduled_for,
                          last_error="retrying")
        await db.execute(QUERIES["record_outcomes"], [outcome_row(delivered(jobs["delivered"]))])
        after_delivered = await trigger_calls(db)
        await db.execute(QUERIES["record_outcomes"], [outcome_row(held), outcome_row(retried)])
        after_the_rest = await trigger_calls(db)

    assert after_claim == {}
    assert after_delivered == {}
    assert after_the_rest == {"audit_update": 1, "notify_row_due_soon": 1, "hold_for_disabled_endpoint": 2}


async def test_no_update_trigger_of_the_messages_builds_transition_tables(db: asyncpg.Connection) -> None:
    """A statement-level trigger asking for transition tables makes every UPDATE of the messages
    (each claim, each batch of outcomes) copy its rows twice, whatever the trigger then finds: the
    AFTER UPDATE triggers are row-level, each with a WHEN clause (0007; 0009's broadcast counts)."""
    rows = await db.fetch(
        "SELECT tgname, tgtype & 1 = 1 AS per_row, tgoldtable, tgnewtable,"
        " pg_get_triggerdef(oid) LIKE '% WHEN (%' AS filtered"
        " FROM pg_trigger WHERE tgrelid = 'reminderd.scheduled_messages'::regclass AND NOT tgisinternal"
        " AND tgtype & 16 = 16 AND tgtype & 2 = 0 ORDER BY tgname"  # UPDATE, not BEFORE
    )
    assert [tuple(r) for r in rows] == [
        (name, True, None, None, True) for name in (
            "scheduled_messages_audit_update", "scheduled_messages_count_broadcast_update",
            "scheduled_messages_notify_update")
    ]


async def trigger_calls(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT funcname, calls FROM pg_stat_xact_user_functions"
        " WHERE schemaname = 'reminderd'"
        " AND funcname IN ('audit_update', 'notify_row_due_soon', 'hold_for_disabled_endpoint')"
    )
    return {r["funcname"]: r["calls"] for r in rows}


def outcome_row(outcome: Outcome) -> tuple[Any, ...]:
    """An outcome as the store passes it to record_outcomes (an element of reminderd.outcome_v1[])."""
    return _outcome_v1(outcome)


async def test_recording_looks_rows_up_by_id_whatever_the_statistics_say(
    db: asyncpg.Connection, store: Store
) -> None:
    """Issue 13's plan flip: after ANALYZE saw the table full of pending rows (autovacuum does it at
    a random moment after a bulk insert), the partial index of picked rows looks empty, and a plan
    walking it once per outcome took seconds. Every row must be found by its primary key, in the
    plan of the first executions (custom) and in the one a cached statement switches to (generic)."""
    await add_tenant(db)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
        " SELECT 't1', 'r' || n, now() - interval '1 second' FROM generate_series(1, 100000) AS n"
    )
    await db.execute("ANALYZE reminderd.scheduled_messages")
    jobs = await claim(store, batch_size=1000)
    assert len(jobs) == 1000
    batch = [outcome_row(delivered(job)) for job in jobs]

    for mode in ("custom", "generic"):
        async with db.transaction():
            await db.execute(f"SET LOCAL plan_cache_mode = force_{mode}_plan")
            [document] = json.loads(await db.fetchval(
                f"EXPLAIN (FORMAT JSON) {QUERIES['record_outcomes']}", batch
            ))
        scans = scans_of(document["Plan"], "scheduled_messages")
        assert scans, document
        assert all(scan == "scheduled_messages_pkey" for scan in scans), (mode, scans)

    await store.record_outcomes([delivered(job) for job in jobs])
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'sent'") == 1000
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries") == 1000


# release ----------------------------------------------------------------------------------------


async def test_release_hands_rows_back_due_now_for_the_same_occurrence(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db)
    unstarted_id = await insert(db, "unstarted", "now() - interval '6 seconds'")
    started_id = await insert(db, "started", "now() - interval '5 seconds'")
    jobs = {job.id: job for job in await claim(store)}

    await store.release([Release(jobs[unstarted_id], started=False), Release(jobs[started_id], started=True)])

    now = await db_now(db)
    unstarted = await row_by_id(db, unstarted_id)
    started = await row_by_id(db, started_id)
    for row, job in ((unstarted, jobs[unstarted_id]), (started, jobs[started_id])):
        assert row["status"] == "pending"
        assert near(row["fire_at"], now)
        assert row["scheduled_for"] == job.scheduled_for
        assert row["lease_expires_at"] is None
    assert unstarted["attempts"] == 0  # never attempted: the attempt is given back
    assert started["attempts"] == 1  # may have reached the receiver: it counts

    again = {job.id: job for job in await claim(store)}
    assert again[unstarted_id].webhook_id == jobs[unstarted_id].webhook_id
    assert again[started_id].webhook_id == jobs[started_id].webhook_id
    assert (again[unstarted_id].attempt, again[started_id].attempt) == (1, 2)


async def test_release_ignores_rows_no_longer_held(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db)
    message_id = await insert(db, "r1")
    job = await claim_one(store)
    await store.cancel("t1", "r1")

    await store.release([Release(job, started=False)])

    row = await row_by_id(db, message_id)
    assert (row["status"], row["attempts"]) == ("cancelled", 1)


async def test_release_by_a_stalled_daemon_does_not_hand_back_the_next_cron_occurrence(
    db: asyncpg.Connection, store: Store
) -> None:
    """Same fencing gap as for outcomes: daemon A, shutting down, releases a job of occurrence X
    whose lease was reaped long ago, while daemon C holds occurrence Y with the same attempt number.
    """
    await add_tenant(db)
    message_id = await insert(db, "r1", "now() - interval '30 seconds'", cron="* * * * *")
    stalled = await claim_one(store)  # daemon A: occurrence X, attempt 1
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        message_id,
    )
    await store.reap_expired_leases()
    takeover = await claim_one(store)  # daemon B: occurrence X, attempt 2
    await store.record_outcomes([advanced(takeover, await db.fetchval("SELECT now() - interval '1 second'"))])
    current = await claim_one(store)  # daemon C: occurrence Y, attempt 1
    assert current.attempt == stalled.attempt
    owned = await row_by_id(db, message_id)

    await store.release([Release(stalled, started=False)])

    row = await row_by_id(db, message_id)
    assert (row["status"], row["attempts"], row["lease_expires_at"]) == (
        "picked", owned["attempts"], owned["lease_expires_at"],
    ), "a stale release for occurrence X handed back the row daemon C holds"


# Housekeeping -----------------------------------------------------------------------------------


async def test_reap_returns_expired_leases_to_pending(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db)
    expired_id = await insert(db, "expired", "now() - interval '6 seconds'")
    live_id = await insert(db, "live", "now() - interval '5 seconds'")
    await claim(store)
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        expired_id,
    )
    expired_before = await row_by_id(db, expired_id)
    live_before = await row_by_id(db, live_id)

    reaped = await store.reap_expired_leases()

    assert [(r.id, r.ref_id, r.attempt) for r in reaped] == [(expired_id, "expired", 1)]
    expired = await row_by_id(db, expired_id)
    assert expired["status"] == "pending"
    assert near(expired["fire_at"], await db_now(db))
    assert expired["scheduled_for"] == expired_before["fire_at"]
    assert expired["lease_expires_at"] is None
    assert expired["attempts"] == 1
    assert "lease expired" in expired["last_error"]
    assert dict(await row_by_id(db, live_id)) == dict(live_before)


async def test_expire_missed_expires_only_one_offs_beyond_the_lookback(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db)
    missed = await insert(db, "missed", "now() - interval '10 minutes'")
    recent = await insert(db, "recent", "now() - interval '60 seconds'")
    cron = await insert(db, "cron", "now() - interval '10 minutes'", cron="*/5 * * * *")
    sent = await insert(db, "sent", "now() - interval '10 minutes'", status="sent")

    expired = await store.expire_missed(lookback_s=LOOKBACK_S)

    assert [(r.id, r.ref_id) for r in expired] == [(missed, "missed")]
    row = await row_by_id(db, missed)
    assert row["status"] == "expired"
    assert "REMINDERD_LOOKBACK" in row["last_error"]
    assert "120" in row["last_error"]
    assert expired[0].scheduled_for == row["fire_at"]
    assert [(await row_by_id(db, i))["status"] for i in (recent, cron, sent)] == ["pending", "pending", "sent"]


async def test_recurring_to_plan_lists_unplanned_and_missed_cron_rows(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db)
    unplanned = await insert(db, "unplanned", None, cron="@hourly", timezone="Asia/Kolkata")
    missed = await insert(db, "missed", "now() - interval '10 minutes'", cron="@hourly")
    await insert(db, "due", "now() - interval '30 seconds'", cron="@hourly")  # the claim's business
    await insert(db, "future", "now() + interval '1 hour'", cron="@hourly")
    await insert(db, "one-off", "now() - interval '10 minutes'")
    await insert(db, "cancelled", None, cron="@hourly", status="cancelled")

    rows = await store.recurring_to_plan(lookback_s=LOOKBACK_S)

    assert [r.id for r in rows] == [unplanned, missed]
    assert (rows[0].timing.cron, rows[0].timing.timezone, rows[0].fire_at) == ("@hourly", "Asia/Kolkata", None)
    assert rows[1].fire_at == (await row_by_id(db, missed))["fire_at"]
    assert near(rows[0].db_now, await db_now(db))


async def test_plan_recurring_sets_the_planned_fire_at_and_resets_attempts(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db)
    unplanned = await insert(db, "unplanned", None, cron="@hourly")
    missed = await insert(db, "missed", "now() - interval '10 minutes'", cron="@hourly", attempts=3)
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET scheduled_for = fire_at - interval '1 hour' WHERE id = $1",
        missed,
    )
    seen = {r.id: r.fire_at for r in await store.recurring_to_plan(lookback_s=LOOKBACK_S)}
    next_fire = (await db_now(db)).replace(microsecond=0) + timedelta(hours=1)

    planned = await store.plan_recurring([
        Plan(unplanned, seen[unplanned], next_fire, Status.PENDING, None),
        Plan(missed, seen[missed], next_fire, Status.PENDING, "missed occurrence: skipped to the next one"),
    ])

    assert sorted(r.id for r in planned) == sorted([unplanned, missed])
    for message_id in (unplanned, missed):
        row = await row_by_id(db, message_id)
        assert (row["status"], row["fire_at"], row["attempts"], row["scheduled_for"]) == (
            "pending", next_fire, 0, None,
        )
    assert (await row_by_id(db, missed))["last_error"] == "missed occurrence: skipped to the next one"


async def test_plan_recurring_skips_a_row_changed_since_it_was_read(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db)
    missed = await insert(db, "missed", "now() - interval '10 minutes'", cron="@hourly")
    [read] = await store.recurring_to_plan(lookback_s=LOOKBACK_S)
    # Another daemon planned it in between.
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET fire_at = now() + interval '30 minutes' WHERE id = $1", missed
    )
    before = await row_by_id(db, missed)

    planned = await store.plan_recurring([
        Plan(missed, read.fire_at, read.db_now + timedelta(hours=1), Status.PENDING, None),
    ])

    assert planned == []
    assert dict(await row_by_id(db, missed)) == dict(before)


async def test_plan_recurring_dead_letters_a_row_that_cannot_recur(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db)
    message_id = await insert(db, "r1", None, rrule="FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=31")

    planned = await store.plan_recurring([
        Plan(message_id, None, None, Status.DEAD, "cannot schedule: no occurrence"),
    ])

    assert [(r.id, r.status, r.last_error) for r in planned] == [
        (message_id, "dead", "cannot schedule: no occurrence"),
    ]
    row = await row_by_id(db, message_id)
    assert row["status"] == "dead"
    assert row["fire_at"] is None
    assert row["last_error"] == "cannot schedule: no occurrence"


async def test_seconds_until_next_due_follows_the_earliest_pending_row(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db)
    assert await store.seconds_until_next_due(lookback_s=LOOKBACK_S) is None

    await insert(db, "soon", "now() + interval '30 seconds'")
    await insert(db, "later", "now() + interval '1 hour'")
    await insert(db, "finished", "now() - interval '1 second'", status="sent")
    until = await store.seconds_until_next_due(lookback_s=LOOKBACK_S)
    assert until is not None
    assert 25 < until <= 30

    await insert(db, "due", "now() - interval '5 seconds'")
    until = await store.seconds_until_next_due(lookback_s=LOOKBACK_S)
    assert until is not None
    assert -10 < until <= -5


async def test_seconds_until_next_due_ignores_rows_beyond_the_lookback(
    db: asyncpg.Connection, store: Store
) -> None:
    await add_tenant(db)
    await insert(db, "missed", "now() - interval '10 minutes'")
    assert await store.seconds_until_next_due(lookback_s=LOOKBACK_S) is None


# The application's side -------------------------------------------------------------------------


async def test_add_tenant_returns_its_whsec_signing_secret(db: asyncpg.Connection, store: Store) -> None:
    secret = await store.add_tenant("acme", "https://acme.example/hooks")
    other = await store.add_tenant("globex", None)

    assert secret.startswith("whsec_")
    assert secret != other
    row = await db.fetchrow("SELECT callback_url, signing_secret FROM reminderd.tenants WHERE id = 'acme'")
    assert (row["callback_url"], row["signing_secret"]) == ("https://acme.example/hooks", secret)
    with pytest.raises(DatabaseRefused) as refused:
        await store.add_tenant("acme", None)
    assert refused.value.sqlstate == "23505"  # unique_violation


async def test_a_value_asyncpg_itself_cannot_send_is_a_refusal_that_says_why(store: Store) -> None:
    """asyncpg refuses a lone surrogate before PostgreSQL sees it, with no server message: the
    refusal carries asyncpg's own words, not None (nor, in a sentence, the class's docstring)."""
    await store.add_tenant("t1", CALLBACK)
    with pytest.raises(DatabaseRefused) as refused:
        await store.schedule_many("t1", [ScheduleRequest("t1", "a\ud800b", "{}", None, fire_in_s=60.0)],
                                  atomic=True)
    assert refused.value.message and "surrogates not allowed" in refused.value.message
    assert str(refused.value) == refused.value.message


async def test_schedule_at_replaces_and_cancel_cancels(db: asyncpg.Connection, store: Store) -> None:
    await store.add_tenant("t1", CALLBACK)
    fire_at = (await db_now(db)).replace(microsecond=0) + timedelta(hours=1)

    first = await store.schedule(ScheduleRequest("t1", "r1", '{"n": 1}', None, fire_at=fire_at))
    second = await store.schedule(
        ScheduleRequest("t1", "r1", '{"n": 2, "text": "é"}', "https://other.example/x", fire_at=fire_at)
    )

    old = await row_by_id(db, first)
    new = await row_by_id(db, second)
    assert (old["status"], old["last_error"]) == ("cancelled", "replaced by a new schedule")
    assert (new["status"], new["fire_at"], new["callback_url"]) == ("pending", fire_at, "https://other.example/x")
    assert json.loads(new["payload"]) == {"n": 2, "text": "é"}

    assert await store.cancel("t1", "r1") == 1
    assert await store.cancel("t1", "r1") == 0
    assert (await row_by_id(db, second))["status"] == "cancelled"


async def test_schedule_cron_stores_a_recurring_row_due_at_its_first_occurrence(
    db: asyncpg.Connection, store: Store
) -> None:
    await store.add_tenant("t1", CALLBACK)

    message_id = await store.schedule(
        ScheduleRequest(
            "t1", "daily", '["x"]', None, timezone="Europe/Paris", recurrence=Recurrence(cron="0 9 * * *")
        )
    )

    row = await row_by_id(db, message_id)
    assert (row["cron"], row["timezone"], row["fire_at"], row["status"]) == (
        "0 9 * * *", "Europe/Paris", next_fire("0 9 * * *", "Europe/Paris", row["created_at"]), "pending",
    )
    assert json.loads(row["payload"]) == ["x"]
    assert await store.recurring_to_plan(lookback_s=LOOKBACK_S) == []


async def test_schedule_rrule_stores_an_unplanned_recurring_row(db: asyncpg.Connection, store: Store) -> None:
    await store.add_tenant("t1", CALLBACK)

    message_id = await store.schedule(
        ScheduleRequest(
            "t1", "daily", '["x"]', None, timezone="Europe/Paris",
            recurrence=Recurrence(rrule="FREQ=DAILY;BYHOUR=9"),
        )
    )

    row = await row_by_id(db, message_id)
    assert (row["rrule"].endswith("\nFREQ=DAILY;BYHOUR=9"), row["timezone"], row["fire_at"], row["status"]) == (
        True, "Europe/Paris", None, "pending",
    )
    assert json.loads(row["payload"]) == ["x"]
    assert [r.id for r in await store.recurring_to_plan(lookback_s=LOOKBACK_S)] == [message_id]


async def test_status_counts_groups_by_tenant_and_status(db: asyncpg.Connection, store: Store) -> None:
    await add_tenant(db, "t1")
    await add_tenant(db, "t2")
    await insert(db, "a", "now() + interval '1 hour'")
    await insert(db, "b", "now() + interval '2 hours'")
    await insert(db, "c", status="sent")
    await insert(db, "d", "now() + interval '3 hours'", tenant_id="t2")
    earliest = (await row_by_id(db, await insert(db, "e", "now() + interval '30 minutes'")))["fire_at"]

    counts = [(r.tenant_id, r.status, r.messages, r.next_due) for r in await store.status_counts()]

    assert [c[:3] for c in counts] == [("t1", "pending", 3), ("t1", "sent", 1), ("t2", "pending", 1)]
    assert counts[0][3] == earliest
    assert counts[1][3] is None


async def test_schema_revision_is_0001(store: Store) -> None:
    assert await store.schema_revision() == HEAD_REVISION


async def test_schema_revision_is_none_on_an_empty_database(empty_database_url: str) -> None:
    empty = await Store.connect(empty_database_url)
    try:
        assert await empty.schema_revision() is None
    finally:
        await empty.close()


# Errors: asyncpg's become reminderd's own ------------------------------------------------------


def _with(url: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc if user is None else f"{user}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}" if database else parts.path))


async def test_an_unreachable_server_is_database_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable, match=r"^(OSError|ConnectionRefusedError)"):
        await Store.connect("postgresql://x@127.0.0.1:1/x")


@pytest.mark.parametrize("wrong", ["database", "role"])
async def test_a_url_waiting_cannot_fix_is_a_config_error_naming_the_setting(
    pg_server_url: str, wrong: str
) -> None:
    url = _with(pg_server_url, database="no_such_db") if wrong == "database" else _with(
        pg_server_url, user="nobody_here"
    )
    with pytest.raises(ConfigError, match=r"^REMINDERD_DATABASE_URL: ") as caught:
        await Store.connect(url)
    assert ("no_such_db" if wrong == "database" else "nobody_here") in str(caught.value)


UNREADABLE = "asyncpg cannot read the URL"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://app:hunter2@127.0.0.1:5432:5/x", f"{UNREADABLE} (invalid literal for int() with base "
                                                      "10: '5432:5')"),
        ("postgresql://app:hunter2@127.0.0.1:5432,/x", f"{UNREADABLE} (string index out of range)"),
        ("postgresql://app:hunter2@127.0.0.1:5432:hunter2/x", f"{UNREADABLE} (invalid literal for int() with "
                                                            "base 10: '5432:***')"),
        ("postgresql://app:hunter2@127.0.0.1/x?sslmode", f"{UNREADABLE} (bad query field: 'sslmode')"),
        ("postgresql://app@127.0.0.1/x?sslmode=verify-full&sslrootcert=/no/such/ca.pem",
         "sslrootcert /no/such/ca.pem: no such file"),
    ],
    ids=["two-ports", "empty-host", "password-in-the-port", "no-value", "missing-ca"],
)
async def test_a_url_asyncpg_cannot_read_is_a_config_error_not_a_traceback(url: str, problem: str) -> None:
    """What settings refuse first (tests/unit/test_settings.py) is refused here too, for callers
    that pass a URL of their own: one line naming the setting, the password never shown."""
    with pytest.raises(DatabaseMisconfigured) as caught:
        await Store.connect(url, setting="REMINDERD_DATABASE_URL")
    assert caught.value.one_line() == f"{problem} (REMINDERD_DATABASE_URL)"
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("query", "problem", "hint"),
    [
        ("connect_timeout=abc", 'unrecognized configuration parameter "connect_timeout"',
         "a query parameter asyncpg does not know is sent to the server as a setting: remove it"),
        ("bogusparam=1", 'unrecognized configuration parameter "bogusparam"',
         "a query parameter asyncpg does not know is sent to the server as a setting: remove it"),
        ("statement_timeout=abc", 'invalid value for parameter "statement_timeout": "abc"', None),
        ("shared_buffers=1", 'parameter "shared_buffers" cannot be changed without restarting the server',
         None),
    ],
    ids=["libpq-only", "unknown", "bad-value", "restart-only"],
)
async def test_a_query_parameter_the_server_refuses_is_a_config_error(
    database_url: str, query: str, problem: str, hint: str | None
) -> None:
    """asyncpg hands the query parameters it does not know to the server as settings: the server's
    refusal is the URL's fault, not an outage nor a refused statement."""
    with pytest.raises(DatabaseMisconfigured) as caught:
        await Store.connect(f"{database_url}?{query}")
    assert (caught.value.problem, caught.value.hint, caught.value.setting) == (
        problem, hint, "REMINDERD_DATABASE_URL")


async def test_a_missing_schema_is_schema_missing(empty_database_url: str) -> None:
    empty = await Store.connect(empty_database_url)
    try:
        with pytest.raises(SchemaMissing) as caught:
            await empty.status_counts()
    finally:
        await empty.close()
    assert caught.value.sqlstate == "42P01"  # undefined_table


async def test_a_refused_statement_carries_sqlstate_message_and_hint(
    db: asyncpg.Connection, store: Store
) -> None:
    with pytest.raises(DatabaseRefused) as caught:
        await store.schedule(ScheduleRequest("ghost", "r1", "{}", None, fire_at=await db_now(db)))
    refused = caught.value
    assert refused.sqlstate == "23503" and 'unknown tenant "ghost"' in refused.message
    assert refused.hint is not None


async def test_a_closed_pool_is_database_unavailable(database_url: str) -> None:
    closed = await Store.connect(database_url)
    await closed.close()
    with pytest.raises(DatabaseUnavailable):
        await closed.seconds_until_next_due(lookback_s=LOOKBACK_S)


# Batch writes behind PgBouncer: no statement cache, the composite types' codecs still work --------


async def test_batch_writes_work_without_a_statement_cache(db: asyncpg.Connection, database_url: str) -> None:
    await add_tenant(db)
    recurring = await insert(db, "planned", None, cron="@hourly")
    bouncer = await Store.connect(database_url, max_size=1, pgbouncer=True)
    try:
        for ref in ("first", "second"):  # the second batch reuses the connection's cached codecs
            message_id = await insert(db, ref)
            await bouncer.record_outcomes([delivered(await claim_one(bouncer))])
            assert (await row_by_id(db, message_id))["last_event"] == Event.FIRED
        await insert(db, "released")
        await bouncer.release([Release(await claim_one(bouncer), started=False)])
        [unplanned] = await bouncer.recurring_to_plan(lookback_s=LOOKBACK_S)
        next_fire_at = unplanned.db_now + timedelta(hours=1)
        [planned] = await bouncer.plan_recurring([Plan(recurring, None, next_fire_at, Status.PENDING, None)])
    finally:
        await bouncer.close()
    assert (await row_by_ref(db, "released"))["last_event"] == Event.RELEASED
    assert (planned.id, planned.status, (await row_by_id(db, recurring))["last_event"]) == (
        recurring, Status.PENDING, Event.PLANNED,
    )


async def test_a_transaction_is_bounded_by_the_query_deadline_as_a_whole(database_url: str) -> None:
    # The daemon's Store bounds every call (the registry) and every transaction, statements and
    # commit together (update_endpoint_health, issue 15): past the deadline the connection is
    # terminated, nothing waits on a server that does not answer, and the pool carries on.
    store = await Store.connect(database_url, max_size=1, query_deadline_s=0.5)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(DatabaseUnavailable):
            async with store.transaction() as tx:
                await tx._pool.execute("SELECT 1")
                await tx._pool.execute("SELECT pg_sleep(5)")
        assert asyncio.get_running_loop().time() - started < 3
        assert store.health.failing_since is not None
        assert await store.schema_revision() == HEAD_REVISION
        assert store.health.failing_since is None
    finally:
        await store.close()


# Durability of the daemon's own commits (REMINDERD_SYNCHRONOUS_COMMIT) ----------------------------


@pytest.mark.parametrize(("flushed", "expected"), [(None, "on"), (False, "off"), (True, "on")])
async def test_the_daemons_pool_commits_without_waiting_for_the_flush_only_when_told_to(
    database_url: str, flushed: bool | None, expected: str
) -> None:
    admin = await asyncpg.connect(database_url)  # flushed commits by default (the test cluster's are not)
    alter = "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I {}', current_database()); END $$"
    await admin.execute(alter.format("SET synchronous_commit = on"))
    told = {} if flushed is None else {"synchronous_commit": flushed}
    settings = fast_settings(database_url, **told)
    daemon = await connect_with_retry(settings, asyncio.Event())
    other = await Store.connect(database_url)  # the CLI's, the API's: the application's own writes
    try:
        assert daemon is not None
        assert await daemon._pool.fetchval("SHOW synchronous_commit") == expected
        assert await other._pool.fetchval("SHOW synchronous_commit") == "on"
        assert await daemon._pool.fetchval("SHOW jit") == "off"
    finally:
        if daemon is not None:
            await daemon.close()
        await other.close()
        await admin.execute(alter.format("RESET synchronous_commit"))  # the module's next tests: as before
        await admin.close()
