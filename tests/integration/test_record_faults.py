"""One odd row costs that row only: a row another transaction keeps locked, a value written by hand
that the daemon cannot read or count, an outcome the database refuses. Each once wedged the whole
daemon (every claim, or every outcome) or resent a message at every lease."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs
from support import fast_settings, poll_until, row_by_id, running_worker

from reminderd.callback import CallbackClient
from reminderd.settings import Settings
from reminderd.store import Store
from reminderd.testing import Received, Receiver, add_tenant
from reminderd.worker import Worker


async def _written_by_hand(db: asyncpg.Connection, sql: str, message_id: int) -> None:
    """As an application (or an older schema) left it: the schema's own refusals of such values
    on UPDATE are triggers, not run here, since rows written before them exist."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(sql, message_id)


def _counted(worker: Worker) -> dict[str, float]:
    """reminderd_callbacks_total of tenant acme, by outcome (those counted at all)."""
    return {sample.labels["outcome"]: sample.value
            for family in worker.metrics.registry.collect() if family.name == "reminderd_callbacks"
            for sample in family.samples
            if sample.name == "reminderd_callbacks_total" and sample.labels["tenant"] == "acme"
            and sample.value}


def _reached(
    db: asyncpg.Connection, message_id: int, status: str
) -> Callable[[], Awaitable[asyncpg.Record | None]]:
    async def check() -> asyncpg.Record | None:  # not scheduled_for: some tests put it beyond Python's years
        row = await db.fetchrow("SELECT status, last_event, last_error, attempts, runs "
                                "FROM reminderd.scheduled_messages WHERE id = $1", message_id)
        return row if row["status"] == status else None

    return check


def _events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


@asynccontextmanager
async def _daemon_like_worker(settings: Settings) -> AsyncIterator[Worker]:
    """A worker whose every query is bounded as the daemon's are (QUERY_DEADLINE_S, shortened)."""
    store = await Store.connect(settings.database_url, query_deadline_s=2.0)
    client = CallbackClient(settings)
    worker = Worker(settings, store, client)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
        await client.close()
        await store.close()


async def test_a_locked_row_waits_alone_and_every_other_outcome_is_recorded(
    database_url: str, db: asyncpg.Connection
) -> None:
    release = asyncio.Event()

    async def hold(_: Received) -> None:
        await release.wait()

    async with Receiver(before_answer=hold) as receiver:
        await add_tenant(db, "acme", receiver.url)
        a = await db.fetchval("SELECT reminderd.schedule('acme', 'a', now())")
        b = await db.fetchval("SELECT reminderd.schedule('acme', 'b', now())")
        settings = fast_settings(database_url, lease_s=4, callback_timeout_s=1.5)
        other = await asyncpg.connect(database_url)
        with capture_logs() as logs:
            async with _daemon_like_worker(settings):
                await receiver.wait_for(lambda got: len(got) == 2)  # both in flight
                lock = other.transaction()
                await lock.start()
                await other.execute(
                    "UPDATE reminderd.scheduled_messages SET payload = '{\"x\": 1}' WHERE id = $1", a)
                release.set()
                try:
                    await poll_until(_reached(db, b, "sent"), timeout_s=10)
                    c = await db.fetchval("SELECT reminderd.schedule('acme', 'c', now())")
                    await poll_until(_reached(db, c, "sent"), timeout_s=10)
                    assert (await row_by_id(db, a))["status"] == "picked"  # its outcome waits for the lock
                finally:
                    await lock.rollback()
                await poll_until(_reached(db, a, "sent"), timeout_s=10)
        await other.close()
    assert {ref: len(got) for ref, got in receiver.by_ref().items()} == {"a": 1, "b": 1, "c": 1}
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries WHERE message_id = $1", a) == 1
    assert [entry["message_id"] for entry in _events(logs, "record_row_locked")] == [a]  # logged once
    assert not _events(logs, "record_failed")  # a lock is not an outage


async def _count_deliveries_in_a_table(db: asyncpg.Connection) -> None:
    """A user's trigger writing a table of its own (public.tally), which an open transaction can keep locked."""
    await db.execute("""
        CREATE TABLE public.tally (n integer NOT NULL);
        INSERT INTO public.tally VALUES (0);
        CREATE FUNCTION public.count_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN UPDATE public.tally SET n = n + 1; RETURN NULL; END $$;
        CREATE TRIGGER count_delivery AFTER INSERT ON reminderd.deliveries
            FOR EACH ROW EXECUTE FUNCTION public.count_delivery();
    """)


async def test_a_lock_on_a_table_the_record_writes_delays_the_batch_without_losing_or_resending_it(
    database_url: str, db: asyncpg.Connection
) -> None:
    await _count_deliveries_in_a_table(db)
    async with Receiver(before_answer=_together(2)) as receiver:
        await add_tenant(db, "acme", receiver.url)
        a, b = [await db.fetchval("SELECT reminderd.schedule('acme', $1, now())", ref) for ref in ("a", "b")]
        other = await asyncpg.connect(database_url)
        lock = other.transaction()
        await lock.start()
        await other.execute("UPDATE public.tally SET n = n")
        settings = fast_settings(database_url, lease_s=30, callback_timeout_s=1.5)
        held = True
        try:
            with capture_logs() as logs:
                async with _daemon_like_worker(settings) as worker:
                    await poll_until(lambda: _async(len(_events(logs, "record_lock_wait")) >= 2), timeout_s=15)
                    assert [(await row_by_id(db, m))["status"] for m in (a, b)] == ["picked", "picked"]
                    await lock.rollback()
                    held = False
                    for message_id in (a, b):
                        await poll_until(_reached(db, message_id, "sent"), timeout_s=15)
                    pool_timeouts = [await worker._store._pool.fetchval("SHOW lock_timeout") for _ in range(4)]
        finally:
            if held:  # a check above failed with the lock still held
                await lock.rollback()
            await other.close()
    assert {ref: len(got) for ref, got in receiver.by_ref().items()} == {"a": 1, "b": 1}
    logged = await db.fetchval("SELECT count(*) FROM reminderd.deliveries")
    assert (logged, await db.fetchval("SELECT n FROM public.tally")) == (2, 2)  # each attempt logged once
    waits = _events(logs, "record_lock_wait")
    assert {m for wait in waits for m in wait["message_ids"]} <= {a, b}  # the later one queued behind
    assert all(wait["retry_in_s"] > 0 for wait in waits)
    assert all(wait["log_level"] == "warning" for wait in waits)
    assert not _events(logs, "record_row_locked") and not _events(logs, "record_rejected")
    assert not _events(logs, "dead_lettered")
    assert set(pool_timeouts) == {"0"}  # the record's lock_timeout stayed in its own statement


async def test_a_lock_held_beyond_the_lease_sends_nothing_again_and_claims_nothing_until_released(
    database_url: str, db: asyncpg.Connection
) -> None:
    await _count_deliveries_in_a_table(db)
    async with Receiver(before_answer=_together(2)) as receiver:
        await add_tenant(db, "acme", receiver.url)
        a, b = [await db.fetchval("SELECT reminderd.schedule('acme', $1, now())", ref) for ref in ("a", "b")]
        other = await asyncpg.connect(database_url)
        lock = other.transaction()
        await lock.start()
        await other.execute("UPDATE public.tally SET n = n")
        settings = fast_settings(database_url, lease_s=3, callback_timeout_s=1)
        held = True
        try:
            with capture_logs() as logs:
                async with _daemon_like_worker(settings):
                    await poll_until(lambda: _async(_events(logs, "record_lock_wait")), timeout_s=15)
                    c = await db.fetchval("SELECT reminderd.schedule('acme', 'c', now())")
                    claimed_at = await db.fetchval(
                        "SELECT max(picked_at) FROM reminderd.scheduled_messages WHERE id = ANY($1)", [a, b])
                    # Three leases pass on the database's clock, the lock held (the reaper runs every 0.2 s).
                    await poll_until(lambda: db.fetchval(
                        "SELECT NULLIF(clock_timestamp() > $1::timestamptz + interval '9 seconds', false)",
                        claimed_at), timeout_s=20)
                    during = {m: await row_by_id(db, m) for m in (a, b, c)}
                    leases_kept = await db.fetchval(
                        "SELECT bool_and(lease_expires_at > clock_timestamp()) "
                        "FROM reminderd.scheduled_messages WHERE id = ANY($1)", [a, b])
                    await lock.rollback()
                    held = False
                    for message_id in (a, b, c):
                        await poll_until(_reached(db, message_id, "sent"), timeout_s=15)
        finally:
            if held:  # a check above failed with the lock still held
                await lock.rollback()
            await other.close()
    assert [during[m]["status"] for m in (a, b, c)] == ["picked", "picked", "pending"]  # c not claimed
    assert [during[m]["picked_at"] for m in (a, b)] == [claimed_at, claimed_at]  # never reaped nor reclaimed
    assert leases_kept
    assert {ref: len(got) for ref, got in receiver.by_ref().items()} == {"a": 1, "b": 1, "c": 1}
    logged = await db.fetchval("SELECT count(*) FROM reminderd.deliveries")
    assert (logged, await db.fetchval("SELECT n FROM public.tally")) == (3, 3)  # each attempt logged once
    assert not _events(logs, "lease_expired") and not _events(logs, "outcome_discarded")
    waits = _events(logs, "record_lock_wait")
    assert all(wait["leases_extended"] == 2 for wait in waits)
    assert all(wait["retry_in_s"] <= settings.lease_s / 4 for wait in waits)


async def test_a_claim_under_way_when_the_record_starts_waiting_out_a_lock_claims_nothing_after_it(
    database_url: str, db: asyncpg.Connection
) -> None:
    await _count_deliveries_in_a_table(db)
    async with Receiver(before_answer=_together(2)) as receiver:
        await add_tenant(db, "acme", receiver.url)
        a, b = [await db.fetchval("SELECT reminderd.schedule('acme', $1, now())", ref) for ref in ("a", "b")]
        other = await asyncpg.connect(database_url)
        lock = other.transaction()
        await lock.start()
        await other.execute("UPDATE public.tally SET n = n")
        held = True
        try:
            with capture_logs() as logs:
                async with _daemon_like_worker(fast_settings(database_url, lease_s=8)) as worker:
                    await receiver.wait_for(lambda got: len(got) == 2)
                    # As if a claim were under way (the loop, polling every 0.2 s, is let through by
                    # `room` and then waits here) when the recorder meets the lock on public.tally.
                    async with worker.claims.lock:
                        await poll_until(lambda: _async(worker._record_blocked), timeout_s=15)
                        c = await db.fetchval("SELECT reminderd.schedule('acme', 'c', now())")
                    await poll_until(lambda: _async(len(_events(logs, "record_lock_wait")) >= 2), timeout_s=20)
                    c_during = (await row_by_id(db, c))["status"]
                    await lock.rollback()
                    held = False
                    for message_id in (a, b, c):
                        await poll_until(_reached(db, message_id, "sent"), timeout_s=15)
        finally:
            if held:  # a check above failed with the lock still held
                await lock.rollback()
            await other.close()
    assert c_during == "pending"  # the claim waiting at the lock looked again and claimed nothing
    assert {ref: len(got) for ref, got in receiver.by_ref().items()} == {"a": 1, "b": 1, "c": 1}


async def test_a_record_chosen_as_a_deadlocks_victim_is_written_again_as_after_an_outage(
    database_url: str, db: asyncpg.Connection, receiver: Receiver
) -> None:
    await add_tenant(db, "acme", receiver.url)
    await db.execute("""
        CREATE SEQUENCE public.deadlocks;
        CREATE FUNCTION public.deadlock_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('public.deadlocks') = 1 THEN  -- a sequence is not rolled back: the first try only
                RAISE EXCEPTION 'deadlock detected (by the test)' USING ERRCODE = '40P01';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER deadlock_once BEFORE INSERT ON reminderd.deliveries
            FOR EACH ROW EXECUTE FUNCTION public.deadlock_once();
    """)
    a = await db.fetchval("SELECT reminderd.schedule('acme', 'a', now())")
    with capture_logs() as logs:
        async with running_worker(fast_settings(database_url)):
            await poll_until(_reached(db, a, "sent"))
    assert len(receiver.received) == 1
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries") == 1
    [failed] = _events(logs, "record_failed")  # retried as a passing conflict: its locks went with it
    assert "DeadlockDetectedError: deadlock detected (by the test)" in failed["error"]
    assert not _events(logs, "record_lock_wait") and not _events(logs, "record_rejected")


async def _one_odd_row_and_one_due(db: asyncpg.Connection, receiver: Receiver, edit: str) -> tuple[int, int]:
    await add_tenant(db, "acme", receiver.url)
    odd = await db.fetchval("SELECT reminderd.schedule('acme', 'odd', now() + interval '1 hour')")
    await _written_by_hand(db, edit, odd)
    ordinary = await db.fetchval("SELECT reminderd.schedule('acme', 'b', now())")
    return odd, ordinary


async def test_a_time_beyond_the_year_9999_is_dead_lettered_and_the_claim_goes_on(
    database_url: str, db: asyncpg.Connection, receiver: Receiver
) -> None:
    odd, ordinary = await _one_odd_row_and_one_due(
        db, receiver,
        "UPDATE reminderd.scheduled_messages SET scheduled_for = '10000-01-01 00:00+00', fire_at = now() "
        "WHERE id = $1")
    with capture_logs() as logs:
        async with running_worker(fast_settings(database_url)) as worker:
            await poll_until(_reached(db, ordinary, "sent"))
            row = await poll_until(_reached(db, odd, "dead"))
    assert _counted(worker) == {"fired": 1, "dead_lettered": 1}  # ReminderdDeadLettersRising sees it
    assert row["last_event"] == "dead_lettered" and row["attempts"] == 0  # no attempt was made
    assert row["last_error"] == ("scheduled_for = 10000-01-01 00:00:00+00: outside the years 1 to 9999 "
                                 "the daemon can read")
    assert [r.message["ref_id"] for r in receiver.received] == ["b"]
    [line] = _events(logs, "claim_unreadable")
    assert line["message_id"] == odd and line["dead_lettered"] is True
    assert not _events(logs, "claim_failed")
    assert await db.fetchval("SELECT sum(dead) FROM reminderd.usage_daily WHERE tenant_id = 'acme'") == 1
    # The fix the log line names is one that exists and works once the value is corrected.
    assert f"SELECT reminderd.requeue({odd})" in line["fix"]
    await db.execute("UPDATE reminderd.scheduled_messages SET scheduled_for = now() WHERE id = $1", odd)
    assert await db.fetchval(f"SELECT reminderd.requeue({odd})") == 1


async def test_an_until_beyond_the_year_9999_is_dead_lettered_and_the_claim_goes_on(
    database_url: str, db: asyncpg.Connection, receiver: Receiver
) -> None:
    await add_tenant(db, "acme", receiver.url)
    daily = await db.fetchval("SELECT reminderd.schedule_cron('acme', 'daily', '0 9 * * *')")
    await _written_by_hand(db, "UPDATE reminderd.scheduled_messages SET until = '10000-01-01 00:00+00', "
                               "fire_at = now() WHERE id = $1", daily)
    ordinary = await db.fetchval("SELECT reminderd.schedule('acme', 'b', now())")
    with capture_logs() as logs:
        async with running_worker(fast_settings(database_url)):
            await poll_until(_reached(db, ordinary, "sent"))
            row = await poll_until(_reached(db, daily, "dead"))
    assert row["last_error"] == ("until = 10000-01-01 00:00:00+00: outside the years 1 to 9999 "
                                 "the daemon can read")
    assert [r.message["ref_id"] for r in receiver.received] == ["b"]
    assert [line["message_id"] for line in _events(logs, "claim_unreadable")] == [daily]
    assert not _events(logs, "claim_failed")


# 1000000000 is the schema's limit (refuse_out_of_range, migration 0033): one more would be refused,
# and that refusal would fail every claim. Beyond it, a row written before the trigger or without it.
@pytest.mark.parametrize(("attempts", "reason"), [
    *((n, "at or beyond 1000000000, no further attempt can be counted")
      for n in (1000000000, 1000000001, 2147483646, 2147483647)),
    (-5, "below 0, no count of attempts"),  # the claim's -4 would be refused as well
])
async def test_attempts_at_the_limit_or_beyond_is_dead_lettered_and_the_claim_goes_on(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, attempts: int, reason: str
) -> None:
    odd, ordinary = await _one_odd_row_and_one_due(db, receiver, "UPDATE reminderd.scheduled_messages "
                                                   f"SET attempts = {attempts}, max_attempts = 5, "
                                                   "fire_at = now() WHERE id = $1")
    with capture_logs() as logs:
        async with running_worker(fast_settings(database_url)):
            await poll_until(_reached(db, ordinary, "sent"))
            row = await poll_until(_reached(db, odd, "dead"))
    assert row["attempts"] == attempts
    assert row["last_error"] == f"attempts = {attempts}: {reason}"
    assert [r.message["ref_id"] for r in receiver.received] == ["b"]
    assert [line["message_id"] for line in _events(logs, "claim_unreadable")] == [odd]
    assert not _events(logs, "claim_failed")


@pytest.mark.parametrize("runs", [1000000000, 2147483647])  # the schema's limit; beyond, as written by hand
async def test_runs_at_the_limit_or_beyond_is_recorded_once_and_stays_there(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, runs: int
) -> None:
    await add_tenant(db, "acme", receiver.url)
    daily = await db.fetchval("SELECT reminderd.schedule_cron('acme', 'daily', '0 9 * * *')")
    await _written_by_hand(db, f"UPDATE reminderd.scheduled_messages SET runs = {runs}, fire_at = now() "
                               "WHERE id = $1", daily)
    with capture_logs() as logs:
        async with running_worker(fast_settings(database_url, lease_s=2.5, callback_timeout_s=1)):
            row = await poll_until(_reached(db, daily, "pending"), timeout_s=10)  # planned for tomorrow 09:00
            assert row["last_event"] == "fired"
    assert row["runs"] == runs
    assert len(receiver.received) == 1
    assert not _events(logs, "record_rejected")


async def _refuse(db: asyncpg.Connection, message_id: int, when: str) -> None:
    """A trigger standing in for any refusal of the daemon's UPDATE of this row."""
    await db.execute(f"""
        CREATE FUNCTION public.refuse_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22023'; END $$;
        CREATE TRIGGER refuse_outcome BEFORE UPDATE ON reminderd.scheduled_messages
            FOR EACH ROW WHEN (NEW.id = {int(message_id)} AND {when}) EXECUTE FUNCTION public.refuse_outcome();
    """)


async def test_a_refused_outcome_is_dead_lettered_with_the_reason_not_sent_again(
    database_url: str, db: asyncpg.Connection, receiver: Receiver
) -> None:
    await add_tenant(db, "acme", receiver.url)
    daily = await db.fetchval("SELECT reminderd.schedule_cron('acme', 'daily', '0 9 * * *')")
    ordinary = await db.fetchval("SELECT reminderd.schedule('acme', 'b', now())")
    await _refuse(db, daily, "NEW.status = 'pending' AND OLD.status = 'picked'")  # its next occurrence
    await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = now() WHERE id = $1", daily)
    with capture_logs() as logs:
        async with running_worker(fast_settings(database_url, lease_s=2.5, callback_timeout_s=1)) as worker:
            row = await poll_until(_reached(db, daily, "dead"), timeout_s=10)
            await poll_until(_reached(db, ordinary, "sent"))
    assert _counted(worker) == {"fired": 1, "dead_lettered": 1}  # the fallback's, not the refused outcome's
    assert row["last_error"] == ("delivered (HTTP 200, attempt 1), but its outcome could not be recorded: "
                                 "refused by the test; dead-lettered so that it is not sent again")
    assert await db.fetchval("SELECT reminderd.died_delivered(m) FROM reminderd.scheduled_messages m "
                             "WHERE id = $1", daily)
    assert sorted(r.message["ref_id"] for r in receiver.received) == ["b", "daily"]  # sent once
    [line] = _events(logs, "record_rejected")
    assert line["message_id"] == daily and line["outcome"] == "fired"
    delivery = await db.fetchrow(
        "SELECT status_code, event FROM reminderd.deliveries WHERE message_id = $1", daily)
    assert dict(delivery) == {"status_code": 200, "event": "dead_lettered"}  # the attempt is in the audit


def _together(count: int) -> Callable[[Received], Awaitable[None]]:
    """A receiver's hold: no answer before `count` requests came, so their outcomes are one batch."""
    arrived: list[Received] = []
    all_in = asyncio.Event()

    async def hold(request: Received) -> None:
        arrived.append(request)
        if len(arrived) >= count:
            all_in.set()
        await all_in.wait()

    return hold


async def _died_delivered(db: asyncpg.Connection, message_id: int) -> bool:
    died: bool = await db.fetchval(
        "SELECT reminderd.died_delivered(m) FROM reminderd.scheduled_messages m WHERE m.id = $1", message_id)
    return died


async def test_a_delivered_one_off_refused_at_recording_is_dead_lettered_as_delivered_the_rest_recorded(
    database_url: str, db: asyncpg.Connection
) -> None:
    async with Receiver(before_answer=_together(3)) as receiver:
        await add_tenant(db, "acme", receiver.url)
        a, odd, c = [await db.fetchval("SELECT reminderd.schedule('acme', $1, now())", ref)
                     for ref in ("a", "odd", "c")]
        await _refuse(db, odd, "NEW.status = 'sent'")  # a CHECK or a user's trigger refusing its next state
        with capture_logs() as logs:
            async with running_worker(fast_settings(database_url, lease_s=2.5, callback_timeout_s=1)):
                row = await poll_until(_reached(db, odd, "dead"), timeout_s=10)
                for other in (a, c):
                    await poll_until(_reached(db, other, "sent"))
    assert row["last_error"] == ("delivered (HTTP 200, attempt 1), but its outcome could not be recorded: "
                                 "refused by the test; dead-lettered so that it is not sent again")
    assert {ref: len(got) for ref, got in receiver.by_ref().items()} == {"a": 1, "odd": 1, "c": 1}
    assert [await _died_delivered(db, m) for m in (a, odd, c)] == [False, True, False]
    [line] = _events(logs, "record_rejected")
    assert line["message_id"] == odd and line["outcome"] == "fired"
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries WHERE status_code = 200") == 3


async def test_a_delivered_row_whose_attempt_cannot_be_logged_is_dead_lettered_not_sent_again(
    database_url: str, db: asyncpg.Connection
) -> None:
    async with Receiver(before_answer=_together(2)) as receiver:
        await add_tenant(db, "acme", receiver.url)
        odd = await db.fetchval("SELECT reminderd.schedule('acme', 'odd', now())")
        ordinary = await db.fetchval("SELECT reminderd.schedule('acme', 'b', now())")
        await db.execute(f"""
            CREATE FUNCTION public.refuse_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'no audit for you' USING ERRCODE = '22023'; END $$;
            CREATE TRIGGER refuse_delivery BEFORE INSERT ON reminderd.deliveries
                FOR EACH ROW WHEN (NEW.message_id = {int(odd)}) EXECUTE FUNCTION public.refuse_delivery();
        """)  # a table the record writes refuses this row's part (the dead letter writes it too)
        with capture_logs() as logs:
            async with running_worker(fast_settings(database_url, lease_s=2.5, callback_timeout_s=1)) as worker:
                row = await poll_until(_reached(db, odd, "dead"), timeout_s=10)
                await poll_until(_reached(db, ordinary, "sent"))
    assert row["last_error"] == ("delivered (HTTP 200, attempt 1), but its outcome could not be recorded: "
                                 "no audit for you; dead-lettered so that it is not sent again")
    assert {ref: len(got) for ref, got in receiver.by_ref().items()} == {"odd": 1, "b": 1}
    assert await _died_delivered(db, odd)
    assert _counted(worker) == {"fired": 1, "dead_lettered": 1}
    assert not _events(logs, "record_fallback_rejected")
    [line] = _events(logs, "record_rejected")
    assert line["message_id"] == odd


async def test_an_undelivered_attempt_whose_record_is_refused_is_left_to_its_lease_and_retried_not_dead(
    database_url: str, db: asyncpg.Connection
) -> None:
    async with Receiver(script={"flaky": [503]}) as receiver:
        await add_tenant(db, "acme", receiver.url)
        flaky = await db.fetchval("SELECT reminderd.schedule('acme', 'flaky', now())")
        await db.execute("""
            CREATE FUNCTION public.refuse_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'no audit for you' USING ERRCODE = '22023'; END $$;
            CREATE TRIGGER refuse_delivery BEFORE INSERT ON reminderd.deliveries
                FOR EACH ROW WHEN (NEW.status_code = 503) EXECUTE FUNCTION public.refuse_delivery();
        """)  # its retry and its dead letter both write the 503 attempt: both refused
        with capture_logs() as logs:
            async with running_worker(fast_settings(database_url, lease_s=2.5, callback_timeout_s=1)):
                row = await poll_until(_reached(db, flaky, "sent"), timeout_s=15)
    assert [r.status for r in receiver.received] == [503, 200]  # retried once its lease ran out
    assert row["attempts"] == 2 and row["last_event"] == "fired"
    assert not await _died_delivered(db, flaky)
    assert await db.fetchval("SELECT array_agg(status_code) FROM reminderd.deliveries") == [200]
    assert [line["message_id"] for line in _events(logs, "lease_expired")] == [flaky]
    [line] = _events(logs, "record_fallback_rejected")
    assert line["message_id"] == flaky and line["delivered"] is False
    assert line["consequence"] == ("left to its lease: the attempt (not delivered, not logged) is made again "
                                   "once its lease runs out")
    assert not _events(logs, "record_rejected") and not _events(logs, "dead_lettered")


async def test_an_outcome_refused_even_as_a_dead_letter_is_left_to_its_lease_and_said_loudly(
    database_url: str, db: asyncpg.Connection, receiver: Receiver
) -> None:
    await add_tenant(db, "acme", receiver.url)
    odd = await db.fetchval("SELECT reminderd.schedule('acme', 'odd', now())")
    await _refuse(db, odd, "OLD.status = 'picked'")
    with capture_logs() as logs:
        async with running_worker(fast_settings(database_url, lease_s=30)):
            await receiver.wait_for(lambda got: len(got) == 1)
            await poll_until(lambda: _async(_events(logs, "record_fallback_rejected")))
    [line] = _events(logs, "record_fallback_rejected")
    assert line["message_id"] == odd and line["log_level"] == "critical"
    assert (await row_by_id(db, odd))["status"] == "picked"


async def _async(value: Any) -> Any:
    return value


async def test_an_outcome_still_locked_at_shutdown_is_left_to_its_lease(
    database_url: str, db: asyncpg.Connection
) -> None:
    release = asyncio.Event()

    async def hold(_: Received) -> None:
        await release.wait()

    async with Receiver(before_answer=hold) as receiver:
        await add_tenant(db, "acme", receiver.url)
        a = await db.fetchval("SELECT reminderd.schedule('acme', 'a', now())")
        settings = fast_settings(database_url, lease_s=30, callback_timeout_s=1.5, shutdown_timeout_s=1)
        other = await asyncpg.connect(database_url)
        lock = other.transaction()
        try:
            with capture_logs() as logs:
                async with _daemon_like_worker(settings):
                    await receiver.wait_for(lambda got: len(got) == 1)
                    await lock.start()
                    await other.execute(
                        "UPDATE reminderd.scheduled_messages SET payload = '{}' WHERE id = $1", a)
                    release.set()
                    await poll_until(lambda: _async(_events(logs, "record_row_locked")))
                # stopped (the worker's run returned within its bound), the row still locked
        finally:
            await lock.rollback()
            await other.close()
    [line] = _events(logs, "record_abandoned")
    assert line["message_id"] == a
    assert (await row_by_id(db, a))["status"] == "picked"  # its lease hands it on
    assert len(receiver.received) == 1
