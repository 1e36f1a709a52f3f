"""The daemon registry (issue 16) with the worker in-process and a real PostgreSQL: registration,
heartbeats and stopping; claims stamped with the daemon's id; a dead daemon's rows rescued at once
(and a database stall taking no one for dead); a lost claim reply handed back; and the race of a
rescued row whose first daemon was only slow."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs
from support import all_sent, fast_settings, poll_until, row_by_ref, running_worker, settled

from reminderd.jobs import make_webhook_id
from reminderd.lifecycle import Event, Status
from reminderd.outcome import AttemptResult, Outcome
from reminderd.settings import Settings
from reminderd.store import Rescued, Store
from reminderd.testing import Received, Receiver

pytestmark = pytest.mark.shared_database

FAST_BEATS = {"heartbeat_s": 0.2, "dead_after_s": 1.0}


def beating(database_url: str, **overrides: object) -> Settings:
    """Test timings with fast heartbeats: a daemon silent for a second is dead."""
    return fast_settings(database_url, **{**FAST_BEATS, **overrides})


async def add_daemon(db: asyncpg.Connection, *, silent_s: float, heartbeat_s: float = 0.2,
                     dead_after_s: float = 1.0) -> uuid.UUID:
    """A registered daemon whose last heartbeat was `silent_s` ago (as if killed then)."""
    daemon_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO reminderd.daemons (id, host, pid, version, started_at, heartbeat_at, settings)"
        " VALUES ($1, 'gone-host', 4242, '0.1.0', now() - interval '1 hour', now() - make_interval(secs => $2),"
        " $3::jsonb)",
        daemon_id, silent_s, json.dumps({"heartbeat": heartbeat_s, "dead_after": dead_after_s}),
    )
    return daemon_id


async def hold_rows(db: asyncpg.Connection, daemon_id: uuid.UUID, refs: list[str]) -> None:
    """Rows claimed by `daemon_id` (attempt 1 in flight, a 5-minute lease) for tenant acme."""
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages"
        " (tenant_id, ref_id, fire_at, status, attempts, picked_at, picked_by, lease_expires_at)"
        " SELECT 'acme', ref, now() - interval '2 seconds', 'picked', 1, now() - interval '2 seconds', $1,"
        " now() + interval '5 minutes' FROM unnest($2::text[]) AS ref",
        daemon_id, refs,
    )


async def rescue(store: Store, db: asyncpg.Connection, judge: uuid.UUID, *, dead_after_s: float,
                 contact_since: datetime) -> list[Rescued]:
    """Rescue as `judge` (heartbeat 2 s), judging within its current heartbeat."""
    last_beat_at = await db.fetchval("SELECT heartbeat_at FROM reminderd.daemons WHERE id = $1", judge)
    return await store.rescue_dead_daemons(judge, dead_after_s=dead_after_s, heartbeat_s=2,
                                           contact_since=contact_since, last_beat_at=last_beat_at)


async def daemon_ids(db: asyncpg.Connection) -> set[uuid.UUID]:
    return {row["id"] for row in await db.fetch("SELECT id FROM reminderd.daemons")}


async def test_a_worker_registers_before_it_claims_stamps_its_claims_says_stopping_and_deregisters(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    release = asyncio.Event()

    async def hold_until_released(_: Received) -> None:
        await release.wait()

    receiver.before_answer = hold_until_released
    settings = beating(database_url, shutdown_timeout_s=10)
    async with running_worker(settings) as worker:
        me = worker.identity.id
        row = await db.fetchrow("SELECT * FROM reminderd.daemons WHERE id = $1", me)
        assert row is not None and (row["host"], row["pid"]) == (worker.identity.host, worker.identity.pid)
        assert json.loads(row["settings"])["dead_after"] == 1.0 and not row["stopping"]
        await db.execute("SELECT reminderd.schedule('acme', 'in-flight', now())")
        await receiver.wait_for(lambda got: len(got) == 1)
        picked = await row_by_ref(db, "in-flight")
        assert (picked["status"], picked["picked_by"]) == ("picked", me)
        overview = await db.fetchrow("SELECT * FROM reminderd.daemon_overview WHERE id = $1", me)
        assert (overview["state"], overview["held"]) == ("alive", 1)
        beat_before = overview["heartbeat_at"]
        await poll_until(lambda: db.fetchval(
            "SELECT heartbeat_at > $2 FROM reminderd.daemons WHERE id = $1", me, beat_before))

        worker.stop()  # drains: the callback in flight is still held by the receiver
        await poll_until(lambda: db.fetchval("SELECT stopping FROM reminderd.daemons WHERE id = $1", me))
        assert await db.fetchval("SELECT state FROM reminderd.daemon_overview WHERE id = $1", me) == "stopping"
        release.set()
    sent = await row_by_ref(db, "in-flight")
    assert (sent["status"], sent["picked_by"]) == ("sent", me)  # the daemon that sent it, for the record
    assert await daemon_ids(db) == set()  # a clean exit deletes the row


async def test_a_dead_daemons_rows_are_rescued_at_once_with_their_webhook_id_and_attempt_counted(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    dead = await add_daemon(db, silent_s=30)
    await hold_rows(db, dead, ["a", "b", "c"])
    occurrences = {row["ref_id"]: make_webhook_id(row["id"], row["fire_at"]) for row in await db.fetch(
        "SELECT id, ref_id, fire_at FROM reminderd.scheduled_messages")}
    with capture_logs() as logs:
        async with running_worker(beating(database_url)) as worker:
            await poll_until(all_sent(db, 3), timeout_s=10)  # the lease had 5 minutes to go
    assert await daemon_ids(db) == set()  # the dead daemon's row is gone (and the worker's own)
    assert {r.message["ref_id"]: r.webhook_id for r in receiver.received} == occurrences
    assert {r.message["attempt"] for r in receiver.received} == {2}  # the rescued attempt counted
    events = await db.fetch(
        "SELECT ref_id, reason FROM reminderd.events WHERE event = 'rescued' ORDER BY ref_id"
    )
    assert [row["ref_id"] for row in events] == ["a", "b", "c"]
    assert all(f"rescued from daemon {dead} (gone-host, pid 4242)" in row["reason"] for row in events)
    [gone] = [line for line in logs if line["event"] == "daemon_dead"]
    assert (gone["daemon"], gone["rescued"]) == (str(dead), 3)
    assert {line["ref"] for line in logs if line["event"] == "rescued"} == {"a", "b", "c"}
    assert all(line["daemon"] == str(dead) for line in logs if line["event"] == "rescued")
    assert worker.identity.id != dead


async def test_a_daemon_silent_for_less_than_the_longer_dead_after_of_both_is_left_alone(
    database_url: str, db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    slow = await add_daemon(db, silent_s=30, heartbeat_s=20, dead_after_s=60)  # its own dead_after wins
    late = await add_daemon(db, silent_s=5)  # silent past its own dead_after, not past the judge's
    await hold_rows(db, slow, ["slow"])
    await hold_rows(db, late, ["late"])
    judge = await add_daemon(db, silent_s=0)
    long_ago = await db.fetchval("SELECT now() - interval '1 hour'")
    assert await rescue(store, db, judge, dead_after_s=10, contact_since=long_ago) == []
    assert await daemon_ids(db) == {slow, late, judge}
    assert set(await db.fetchval("SELECT array_agg(status) FROM reminderd.scheduled_messages")) == {"picked"}
    rescued = await rescue(store, db, judge, dead_after_s=1, contact_since=long_ago)
    assert [(r.daemon_id, r.ref_id) for r in rescued] == [(late, "late")]


async def test_after_a_database_stall_nobody_is_dead_until_the_judge_has_been_in_touch_long_enough(
    database_url: str, db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    # Every heartbeat stopped for 30 s because the database did. The judge's contact started again
    # just now: the other daemon's silence proves nothing, until the judge has heard the database
    # for a whole dead_after while the other stays silent.
    other = await add_daemon(db, silent_s=30)
    await hold_rows(db, other, ["held"])
    judge = await add_daemon(db, silent_s=0)
    now = await db.fetchval("SELECT now()")
    assert await rescue(store, db, judge, dead_after_s=1, contact_since=now) == []
    stale_judge = await add_daemon(db, silent_s=5, dead_after_s=60)  # its heartbeat is old: it judges no one
    long_ago = now - timedelta(hours=1)
    assert await rescue(store, db, stale_judge, dead_after_s=1, contact_since=long_ago) == []
    assert other in await daemon_ids(db)
    # Heard the database without a break from before the other's next beat was due: it is dead.
    since = await db.fetchval("SELECT heartbeat_at FROM reminderd.daemons WHERE id = $1", other)
    # A rescue the server runs only after a stall, once the judge has beaten again: nothing.
    seen_beat = await db.fetchval("SELECT heartbeat_at FROM reminderd.daemons WHERE id = $1", judge)
    await db.execute("UPDATE reminderd.daemons SET heartbeat_at = now() WHERE id = $1", judge)
    assert await store.rescue_dead_daemons(judge, dead_after_s=1, heartbeat_s=2, contact_since=since,
                                           last_beat_at=seen_beat) == []
    rescued = await rescue(store, db, judge, dead_after_s=1, contact_since=since)
    assert [(r.daemon_id, r.ref_id, r.attempt) for r in rescued] == [(other, "held", 1)]
    assert (await row_by_ref(db, "held"))["status"] == "pending"
    assert other not in await daemon_ids(db)
    # Once in touch for a whole dead_after, a silent daemon without rows is forgotten too.
    empty = await add_daemon(db, silent_s=30)
    rescued = await rescue(store, db, judge, dead_after_s=1, contact_since=now - timedelta(seconds=1))
    assert [(r.daemon_id, r.message_id) for r in rescued] == [(empty, None)]


async def test_a_claim_whose_reply_was_lost_is_handed_back_at_once_not_after_its_lease(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    with capture_logs() as logs:
        async with running_worker(beating(database_url)) as worker:
            # A claim committed by the server while the daemon lost the connection: the rows are
            # picked by this daemon, which never heard of them.
            await hold_rows(db, worker.identity.id, ["lost-1", "lost-2"])
            await poll_until(all_sent(db, 2), timeout_s=10)  # the lease had 5 minutes to go
    assert sorted(r.message["ref_id"] for r in receiver.received) == ["lost-1", "lost-2"]
    assert {r.message["attempt"] for r in receiver.received} == {1}  # the lost claim's attempt given back
    reasons = await db.fetch("SELECT reason FROM reminderd.events WHERE event = 'released'")
    assert len(reasons) == 2
    assert all(row["reason"].startswith(f"claim reply lost: handed back by daemon {worker.identity.id}")
               for row in reasons)
    assert {line["ref"] for line in logs if line["event"] == "claim_reply_lost"} == {"lost-1", "lost-2"}


async def test_a_daemon_taken_for_dead_registers_again_and_says_so(
    database_url: str, db: asyncpg.Connection, tenant: str
) -> None:
    with capture_logs() as logs:
        async with running_worker(beating(database_url)) as worker:
            await db.execute("DELETE FROM reminderd.daemons WHERE id = $1", worker.identity.id)  # "rescued"
            await poll_until(lambda: db.fetchval(
                "SELECT count(*) FROM reminderd.daemons WHERE id = $1", worker.identity.id))
    assert [line["daemon"] for line in logs if line["event"] == "declared_dead"] == [str(worker.identity.id)]


async def test_a_claimed_row_cancelled_before_it_was_sent_is_not_sent(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    release = asyncio.Event()

    async def hold_first(item: Received) -> None:
        if item.message["ref_id"] == "first":
            await release.wait()

    receiver.before_answer = hold_first
    await db.execute("SELECT reminderd.schedule('acme', 'first', now() - interval '1 second')")
    await db.execute("SELECT reminderd.schedule('acme', 'second', now())")
    with capture_logs() as logs:
        async with running_worker(beating(database_url, concurrency=1, batch_size=2)) as worker:
            await receiver.wait_for(lambda got: len(got) == 1)  # 'first' in flight, 'second' queued
            assert (await row_by_ref(db, "second"))["status"] == "picked"
            await db.execute("SELECT reminderd.cancel('acme', 'second')")

            async def revoked() -> frozenset[tuple[int, object]]:
                return worker.claims.revoked

            async def skipped() -> bool:
                return not worker.claims.revoked

            await poll_until(revoked)  # the reconciler saw it taken away
            release.set()
            await poll_until(settled(db, "first", "sent"))
            await poll_until(skipped)
    assert [item.message["ref_id"] for item in receiver.received] == ["first"]
    assert (await row_by_ref(db, "second"))["status"] == "cancelled"
    assert [line["ref"] for line in logs if line["event"] == "claim_revoked"] == ["second"]
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries") == 1


def first_attempt_held(release: asyncio.Event) -> Callable[[Received], Awaitable[None]]:
    async def hold(item: Received) -> None:
        if item.message["attempt"] == 1:
            await release.wait()

    return hold


async def test_a_rescued_rows_late_outcome_from_a_daemon_that_was_only_slow_is_discarded_and_logged(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    # The exact race: daemon A claims the row and sends it, then goes silent (its heartbeats stop;
    # it is only slow). Daemon B takes it for dead, rescues the row and delivers it. Then A's
    # answer arrives and A records its outcome: the row is no longer picked by A's claim, so the
    # outcome is discarded and logged, and the row stays as B recorded it, fired once.
    release = asyncio.Event()
    receiver.before_answer = first_attempt_held(release)
    await db.execute("SELECT reminderd.schedule_cron('acme', 'race', '0 9 * * *', 'UTC')")
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now()")
    # A registers, claims the row at once, then neither beats (heartbeat 1 h) nor claims again
    # (it only polls, every minute).
    slow = beating(database_url, heartbeat_s=3600, poll_interval_s=60, pgbouncer=True)

    def discarded() -> list[MutableMapping[str, Any]]:
        return [line for line in logs if line["event"] == "outcome_discarded"]

    async def logged_discarded() -> list[MutableMapping[str, Any]]:
        return discarded()

    with capture_logs() as logs:
        async with running_worker(slow) as a:
            await receiver.wait_for(lambda got: len(got) == 1)
            first = await row_by_ref(db, "race")
            assert (first["status"], first["picked_by"]) == ("picked", a.identity.id)
            async with running_worker(beating(database_url)) as b:
                await receiver.wait_for(lambda got: len(got) == 2)
                after_b = await poll_until(settled(db, "race", "pending"))
                assert after_b["runs"] == 1 and after_b["picked_by"] == b.identity.id
                release.set()  # A's answer: 200, late
                await poll_until(logged_discarded)
    final = await row_by_ref(db, "race")
    assert (final["status"], final["runs"], final["attempts"]) == ("pending", 1, 0)  # fired once
    assert final["fire_at"] == after_b["fire_at"] and final["last_event"] == "fired"
    first_item, second_item = receiver.received
    assert first_item.webhook_id == second_item.webhook_id  # the same occurrence
    assert (first_item.message["attempt"], second_item.message["attempt"]) == (1, 2)
    fired = await db.fetchval("SELECT count(*) FROM reminderd.trail WHERE event = 'fired'")
    assert fired == 1
    attempts = await db.fetch("SELECT attempt, status_code FROM reminderd.deliveries ORDER BY attempt")
    assert [tuple(row) for row in attempts] == [(1, 200), (2, 200)]  # both requests really went out
    [late] = discarded()
    assert (late["message_id"], late["attempt"], late["outcome"]) == (final["id"], 1, "fired")
    rescued = [line for line in logs if line["event"] == "rescued"]
    assert [line["daemon"] for line in rescued] == [str(a.identity.id)]


async def test_three_hundred_rows_of_a_dead_daemon_are_shared_by_the_living(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    dead = await add_daemon(db, silent_s=30)
    await hold_rows(db, dead, [f"r{i}" for i in range(300)])
    async with running_worker(beating(database_url)), running_worker(beating(database_url)):
        await poll_until(all_sent(db, 300), timeout_s=20)
    per_ref = [r.message["ref_id"] for r in receiver.received]
    assert len(per_ref) == 300 == len(set(per_ref))  # each rescued row once, by one of them
    assert await db.fetchval("SELECT count(*) FROM reminderd.events WHERE event = 'rescued'") == 300


async def test_a_batch_written_again_after_its_reply_was_lost_logs_each_attempt_once(
    db: asyncpg.Connection, store: Store, tenant: str
) -> None:
    # An outage swallowed the reply to the first write, which the server committed all the same;
    # the daemon writes the batch again: nothing is applied twice, no attempt is logged twice, and
    # the daemon learns that the first write had applied its outcome (not "discarded").
    await db.execute("SELECT reminderd.schedule('acme', 'twice', now())")
    [job] = await store.claim(lookback_s=120, batch_size=10, lease_s=300)
    outcome = Outcome(job, AttemptResult(True, 200, None, 42), Event.FIRED, Status.SENT)
    assert await store.record_outcomes([outcome]) == {job.id}
    assert await store.record_outcomes([outcome]) == set()  # fenced: the row is no longer picked
    assert await store.outcomes_written([outcome]) == {job.id}
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries WHERE message_id = $1", job.id) == 1
    assert await db.fetchval("SELECT count(*) FROM reminderd.trail WHERE event = 'fired'") == 1
    # Taken over meanwhile instead (rescued): the outcome was not written, by either try.
    await db.execute("SELECT reminderd.schedule('acme', 'taken', now())")
    [other] = await store.claim(lookback_s=120, batch_size=10, lease_s=300)
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'pending', last_event = 'rescued'"
                     " WHERE id = $1", other.id)
    late = Outcome(other, AttemptResult(True, 200, None, 42), Event.FIRED, Status.SENT)
    assert await store.record_outcomes([late]) == set()
    assert await store.outcomes_written([late]) == set()
    await db.execute("SELECT reminderd.cancel('acme', 'taken')")
    # A requeued occurrence's new attempt 1 is a new attempt, logged although its number repeats
    # (it was delivered before it died, so requeue sends it again only when told to: 0037).
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'dead' WHERE id = $1", job.id)
    await db.execute("SELECT reminderd.requeue($1, resend => true)", job.id)
    [again] = await store.claim(lookback_s=120, batch_size=10, lease_s=300)
    assert (again.id, again.attempt, again.webhook_id) == (job.id, 1, job.webhook_id)
    assert await store.record_outcomes([Outcome(again, AttemptResult(True, 200, None, 7), Event.FIRED,
                                                Status.SENT)]) == {job.id}
    attempts = await db.fetch("SELECT attempt, duration_ms FROM reminderd.deliveries WHERE message_id = $1"
                              " ORDER BY id", job.id)
    assert [tuple(row) for row in attempts] == [(1, 42), (1, 7)]
