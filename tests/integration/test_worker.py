"""The worker in-process against a real database and a real local HTTP receiver.

Most tests run it in burst mode (`drain`: Worker.run(until_idle=True)) and assert on the state it
leaves; the ones about the running loop itself (waking on time, stopping, leases running out)
run it in the background.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs
from support import TEST_SECRET, drain, fast_settings, poll_until, row_by_ref, running_worker

from reminderd import housekeeping as housekeeping_module
from reminderd import outcome as outcome_module
from reminderd import worker as worker_module
from reminderd.callback import CallbackClient
from reminderd.jobs import Job, Unplanned
from reminderd.outcome import AttemptResult, Plan
from reminderd.testing import Receiver


async def test_delivers_a_due_message_signed_for_standard_webhooks(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload) "
        "VALUES ('acme', 'booking:1', now(), '{\"to\": \"+441234\", \"text\": \"héllo\"}')"
    )
    await drain(fast_settings(database_url))
    row = await row_by_ref(db, "booking:1")

    assert row["status"] == "sent" and len(receiver.received) == 1
    got = receiver.received[0]
    verified = Webhook(TEST_SECRET).verify(got.body, got.headers)
    assert verified["payload"] == {"to": "+441234", "text": "héllo"}
    assert verified["ref_id"] == "booking:1" and verified["tenant_id"] == "acme"
    assert verified["attempt"] == 1 and verified["id"] == row["id"]
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"].startswith("reminderd/")
    assert "." not in got.webhook_id
    assert row["sent_at"] is not None and row["attempts"] == 1
    delivery = await db.fetchrow("SELECT * FROM reminderd.deliveries WHERE message_id = $1", row["id"])
    assert delivery["status_code"] == 200 and delivery["webhook_id"] == got.webhook_id


async def test_retry_then_success_keeps_one_webhook_id(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script["flaky"] = [503, 500, 429]
    await db.execute("SELECT reminderd.schedule('acme', 'flaky', now())")
    await drain(fast_settings(database_url))
    row = await row_by_ref(db, "flaky")

    assert row["status"] == "sent"
    attempts = receiver.by_ref()["flaky"]
    assert [a.message["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert len({a.webhook_id for a in attempts}) == 1
    assert {a.message["scheduled_for"] for a in attempts} == {attempts[0].message["scheduled_for"]}
    assert row["attempts"] == 4 and row["last_error"] is None
    codes = await db.fetch(
        "SELECT status_code FROM reminderd.deliveries WHERE message_id = $1 ORDER BY attempt", row["id"]
    )
    assert [c["status_code"] for c in codes] == [503, 500, 429, 200]


async def test_dead_letters_after_max_attempts(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script["doomed"] = [503] * 10
    await db.execute("SELECT reminderd.schedule('acme', 'doomed', now())")
    await drain(fast_settings(database_url, max_attempts=3))
    row = await row_by_ref(db, "doomed")

    assert row["status"] == "dead" and row["attempts"] == 3
    assert "gave up after 3 attempts" in row["last_error"] and "HTTP 503" in row["last_error"]
    assert len(receiver.by_ref()["doomed"]) == 3


async def test_row_max_attempts_overrides_the_setting(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script["once"] = [500] * 10
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, max_attempts) "
        "VALUES ('acme', 'once', now(), 1)"
    )
    await drain(fast_settings(database_url, max_attempts=5))
    row = await row_by_ref(db, "once")
    assert row["status"] == "dead" and row["attempts"] == 1 and len(receiver.received) == 1


async def test_404_dead_letters_at_once(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script["gone"] = [404]
    await db.execute("SELECT reminderd.schedule('acme', 'gone', now())")
    await drain(fast_settings(database_url))
    row = await row_by_ref(db, "gone")
    assert row["status"] == "dead" and row["attempts"] == 1
    assert row["last_error"].startswith("permanent failure: HTTP 404")
    assert len(receiver.received) == 1


async def test_redirect_is_a_failed_attempt_not_followed(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script["moved"] = [(302, {"Location": "http://169.254.169.254/latest/meta-data"})]
    await db.execute("SELECT reminderd.schedule('acme', 'moved', now())")
    await drain(fast_settings(database_url))
    row = await row_by_ref(db, "moved")
    assert row["status"] == "sent"
    first = await db.fetchval(
        "SELECT error FROM reminderd.deliveries WHERE message_id = $1 AND attempt = 1", row["id"]
    )
    assert first.startswith("HTTP 302") and "redirects are not followed" in first
    assert len(receiver.received) == 2  # the retry, never the redirect target


async def test_retry_after_is_honoured(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script["busy"] = [(429, {"Retry-After": "60"})]
    await db.execute("SELECT reminderd.schedule('acme', 'busy', now())")
    await drain(fast_settings(database_url, retry_cap_s=3600))
    row = await row_by_ref(db, "busy")
    wait_s = await db.fetchval(
        "SELECT extract(epoch FROM fire_at - now()) FROM reminderd.scheduled_messages WHERE id = $1",
        row["id"],
    )
    assert row["status"] == "pending" and len(receiver.received) == 1
    assert 55 < wait_s <= 60
    assert "HTTP 429" in row["last_error"] and row["scheduled_for"] is not None


async def test_cancel_and_replace_sends_only_the_replacement(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute("SELECT reminderd.schedule('acme', 'cart:7', now() + interval '1 second', '{\"v\": 1}')")
    await db.execute("SELECT reminderd.schedule('acme', 'cart:7', now() + interval '1 second', '{\"v\": 2}')")
    await db.execute("SELECT reminderd.schedule('acme', 'cart:8', now() + interval '1 second')")
    assert await db.fetchval("SELECT reminderd.cancel('acme', 'cart:8')") == 1
    await drain(fast_settings(database_url), due_within_s=5)  # they are due in a second

    assert (await row_by_ref(db, "cart:7"))["status"] == "sent"
    assert [r.message["payload"] for r in receiver.received] == [{"v": 2}]
    statuses = await db.fetch("SELECT ref_id, status FROM reminderd.scheduled_messages ORDER BY id")
    assert [tuple(s) for s in statuses] == [
        ("cart:7", "cancelled"), ("cart:7", "sent"), ("cart:8", "cancelled")
    ]


async def test_missed_beyond_lookback_expires_with_reason_and_never_fires(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) VALUES "
        "('acme', 'stale', now() - interval '10 minutes'), ('acme', 'fresh', now() - interval '30 seconds')"
    )
    await drain(fast_settings(database_url, lookback_s=120))
    stale = await row_by_ref(db, "stale")
    assert stale["status"] == "expired" and (await row_by_ref(db, "fresh"))["status"] == "sent"
    assert "REMINDERD_LOOKBACK" in stale["last_error"]
    assert [r.message["ref_id"] for r in receiver.received] == ["fresh"]


async def test_private_callback_address_is_refused_and_dead_lettered(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute("SELECT reminderd.schedule('acme', 'ssrf-name', now())")  # localhost by name
    await db.execute(
        "SELECT reminderd.schedule('acme', 'ssrf-literal', now(), '{}', 'http://169.254.169.254/latest')"
    )
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET callback_url = replace($1, '127.0.0.1', 'localhost') "
        "WHERE ref_id = 'ssrf-name'",
        receiver.url,
    )
    await drain(fast_settings(database_url, allowed_callback_networks=()))
    by_name, literal = await row_by_ref(db, "ssrf-name"), await row_by_ref(db, "ssrf-literal")
    assert by_name["status"] == literal["status"] == "dead"
    assert by_name["last_error"].startswith("refused:") and "not a public address" in by_name["last_error"]
    assert "169.254.169.254" in literal["last_error"]
    assert receiver.received == []


async def test_a_callback_host_that_is_no_valid_name_is_refused_once_not_retried_as_a_crash(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    # A row that reaches the daemon with such a URL (written before write-time checks refused it):
    # the system's resolver fails on the name before asking DNS.
    await db.execute("SELECT reminderd.schedule('acme', 'odd', now(), max_attempts => 3)")
    async with db.transaction():  # the write-time check (migration 0019) would refuse it
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute("UPDATE reminderd.scheduled_messages SET callback_url = 'http://exa..mple.com/cb'")
    with capture_logs() as logs:
        await drain(fast_settings(database_url))
    row = await row_by_ref(db, "odd")
    assert (row["status"], row["attempts"]) == ("dead", 1)
    assert row["last_error"] == 'refused: callback_url has host "exa..mple.com" with an empty label'
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries") == 1
    assert [e for e in logs if e["event"].endswith("_crashed")] == []


async def test_poisoned_rows_end_dead_with_a_reason_and_the_daemon_keeps_going(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    # Rows the insert trigger now refuses, written before it did (as a database upgraded from 0004
    # may hold them): the trigger is off for this one transaction only.
    async with db.transaction():
        await db.execute("ALTER TABLE reminderd.scheduled_messages DISABLE TRIGGER scheduled_messages_admit")
        await db.execute(
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron, timezone) VALUES "
            "('acme', 'bad-cron', '61 * * * *', 'UTC'), ('acme', 'bad-zone', '* * * * *', 'PST')"
        )
        await db.execute("ALTER TABLE reminderd.scheduled_messages ENABLE TRIGGER scheduled_messages_admit")
    await db.execute("SELECT reminderd.schedule('acme', 'good', now())")
    await drain(fast_settings(database_url))
    bad_cron, bad_zone = await row_by_ref(db, "bad-cron"), await row_by_ref(db, "bad-zone")
    assert bad_cron["status"] == bad_zone["status"] == "dead"
    assert (await row_by_ref(db, "good"))["status"] == "sent"
    assert '"61 * * * *"' in bad_cron["last_error"]
    assert 'unknown timezone "PST"' in bad_zone["last_error"]
    assert [r.message["ref_id"] for r in receiver.received] == ["good"]


async def test_recurring_row_is_planned_fired_and_advanced(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute("SELECT reminderd.schedule_cron('acme', 'monthly', '0 9 1 * *', 'Asia/Kolkata')")
    await drain(fast_settings(database_url))
    planned = await row_by_ref(db, "monthly")
    assert planned["fire_at"] is not None
    # Make the planned occurrence due now, as if the month had turned.
    occurrence = datetime(2026, 12, 1, 3, 30, tzinfo=UTC)
    await db.execute(
        "UPDATE reminderd.scheduled_messages SET fire_at = now() - interval '1 second', "
        "scheduled_for = $1 WHERE id = $2",
        occurrence, planned["id"],
    )
    await drain(fast_settings(database_url))
    advanced = await row_by_ref(db, "monthly")

    assert len(receiver.received) == 1 and advanced["fire_at"] > occurrence
    local = planned["fire_at"].astimezone(ZoneInfo("Asia/Kolkata"))
    assert (local.day, local.hour, local.minute) == (1, 9, 0)
    assert receiver.received[0].message["scheduled_for"] == "2026-12-01T03:30:00.000Z"
    assert advanced["fire_at"] == datetime(2027, 1, 1, 3, 30, tzinfo=UTC)
    assert advanced["status"] == "pending" and advanced["attempts"] == 0
    assert advanced["scheduled_for"] is None and advanced["sent_at"] is not None


async def test_recurring_occurrence_dead_letters_and_the_row_moves_on(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.script["hourly"] = [404]  # permanent (a 410 would disable the endpoint)
    message_id = await db.fetchval(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron, fire_at, max_lateness) "
        "VALUES ('acme', 'hourly', '0 * * * *', date_trunc('hour', now()), '1 hour') RETURNING id"
    )
    occurrence = await db.fetchval("SELECT fire_at FROM reminderd.scheduled_messages WHERE id = $1", message_id)
    await drain(fast_settings(database_url, lookback_s=3600))
    row = await row_by_ref(db, "hourly")
    assert row["status"] == "pending" and row["fire_at"] > occurrence
    assert row["fire_at"] == occurrence + timedelta(hours=1)
    assert "dead-lettered" in row["last_error"] and "HTTP 404" in row["last_error"]


async def test_a_message_scheduled_while_idle_fires_on_time_not_at_the_next_poll(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    async with running_worker(fast_settings(database_url, poll_interval_s=30)):
        fire_at = await db.fetchval("SELECT now() + interval '300 milliseconds'")
        await db.execute("SELECT reminderd.schedule('acme', 'soon', $1)", fire_at)
        await receiver.wait_for(lambda got: len(got) == 1, timeout_s=10)
    late_s = receiver.received[0].received_at - fire_at.timestamp()
    assert -0.05 < late_s < 2.0  # woken by NOTIFY and the known fire_at, not the 30 s poll


async def test_graceful_stop_finishes_in_flight_and_hands_back_the_rest(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.delay_s = 0.5
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) "
        "SELECT 'acme', 'bulk:' || i, now() FROM generate_series(1, 40) AS i"
    )
    async with running_worker(fast_settings(database_url, concurrency=4, batch_size=10)):
        await receiver.wait_for(lambda got: len(got) >= 4)
    counts = dict(await db.fetch("SELECT status, count(*) FROM reminderd.scheduled_messages GROUP BY status"))
    assert "picked" not in counts
    assert counts["sent"] >= 4 and counts["sent"] + counts.get("pending", 0) == 40
    never_tried = await db.fetchval(
        "SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'pending' AND attempts = 0"
    )
    assert never_tried == counts.get("pending", 0)  # handed back rows gave their attempt back
    assert len(receiver.received) == counts["sent"]  # nothing sent twice, nothing lost


async def test_a_damaged_signing_secret_dead_letters_at_once_without_leaking_it(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    async with db.transaction():  # a secret written before 0025 refused it: past the triggers, as then
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(
            "UPDATE reminderd.tenants SET signing_secret = 'whsec_!!not-base64!!' WHERE id = 'acme'")
    await db.execute("SELECT reminderd.schedule('acme', 'unsignable', now())")
    await drain(fast_settings(database_url))
    row = await row_by_ref(db, "unsignable")
    assert row["status"] == "dead"
    assert row["attempts"] == 1 and "cannot sign for tenant acme" in row["last_error"]
    assert "not-base64" not in row["last_error"]
    assert receiver.received == []


async def test_an_error_body_postgresql_cannot_store_does_not_block_other_outcomes(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    gzip_page = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03 broken"  # NUL bytes: not storable as text
    receiver.script["gzipped"] = [(500, {}, gzip_page)]
    await db.execute("SELECT reminderd.schedule('acme', 'gzipped', now())")
    await db.execute("SELECT reminderd.schedule('acme', 'bystander', now())")
    await drain(fast_settings(database_url))
    row = await row_by_ref(db, "gzipped")
    assert row["status"] == (await row_by_ref(db, "bystander"))["status"] == "sent"
    first = await db.fetchval(
        "SELECT error FROM reminderd.deliveries WHERE message_id = $1 AND attempt = 1", row["id"]
    )
    assert first.startswith("HTTP 500") and "\ufffd" in first
    assert sorted(r.message["ref_id"] for r in receiver.received) == ["bystander", "gzipped", "gzipped"]


async def test_a_message_deleted_while_in_flight_does_not_block_recording(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.delay_s = 0.5
    await db.execute("SELECT reminderd.schedule('acme', 'deleted', now())")
    await db.execute("SELECT reminderd.schedule('acme', 'kept', now())")
    draining = asyncio.create_task(drain(fast_settings(database_url)))
    await receiver.wait_for(lambda got: len(got) == 2)
    await db.execute("DELETE FROM reminderd.scheduled_messages WHERE ref_id = 'deleted'")
    await draining
    assert (await row_by_ref(db, "kept"))["status"] == "sent"
    assert await db.fetchval("SELECT count(*) FROM reminderd.deliveries") == 1


async def test_a_job_whose_lease_ran_out_in_the_queue_is_not_sent_twice(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.delay_s = 0.4
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) "
        "SELECT 'acme', 'slow:' || i, now() FROM generate_series(1, 8) AS i"
    )
    settings = fast_settings(database_url, concurrency=1, batch_size=8, lease_s=1.5, callback_timeout_s=1)
    async with running_worker(settings):

        async def all_sent() -> bool:
            count: int = await db.fetchval(
                "SELECT count(*) FROM reminderd.scheduled_messages WHERE status = 'sent'"
            )
            return count == 8

        await poll_until(all_sent, timeout_s=40)
    per_ref = receiver.by_ref()
    assert len(per_ref) == 8 and all(len(sends) == 1 for sends in per_ref.values())


async def test_a_job_left_unsent_for_want_of_lease_gives_its_attempt_back(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    # One sender, a receiver taking 1 s: the second and third jobs of a claim wait in the queue
    # until less of their 2.5 s lease is left than a 2 s request may take, and are handed back
    # unsent. Only requests made count: no row is dead-lettered before its third request.
    receiver.delay_s = 1.0
    receiver.script = {"r:1": [503], "r:2": [503]}
    await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, max_attempts)"
                     " SELECT 'acme', 'r:' || n, now(), 3 FROM generate_series(1, 3) n")

    async def ended() -> bool:
        done: int = await db.fetchval(
            "SELECT count(*) FROM reminderd.scheduled_messages WHERE status IN ('sent', 'dead')")
        return done == 3

    with capture_logs() as logs:
        settings = fast_settings(database_url, lease_s=2.5, callback_timeout_s=2, concurrency=1)
        async with running_worker(settings):
            await poll_until(ended, timeout_s=30)
    assert any(e["event"] == "lease_too_short" for e in logs)  # what is under test happened
    rows = await db.fetch(
        "SELECT id, ref_id, status, attempts FROM reminderd.scheduled_messages ORDER BY ref_id")
    assert [(r["ref_id"], r["status"], r["attempts"]) for r in rows] == [
        ("r:1", "sent", 2), ("r:2", "sent", 2), ("r:3", "sent", 1)]
    per_ref = receiver.by_ref()
    for row in rows:  # the callback's attempt counts requests: 1, 2, …, each logged once
        sent = [item.message["attempt"] for item in per_ref[row["ref_id"]]]
        assert sent == list(range(1, row["attempts"] + 1))
        logged = await db.fetch("SELECT attempt FROM reminderd.deliveries WHERE message_id = $1 ORDER BY id",
                                row["id"])
        assert [d["attempt"] for d in logged] == sent
    released = await db.fetch("SELECT reason FROM reminderd.events WHERE event = 'released'")
    assert released and all(r["reason"] == worker_module.LEASE_TOO_SHORT for r in released)


# Burst mode: Worker.run(until_idle=True) -----------------------------------------------------


async def test_burst_mode_sends_what_is_due_and_leaves_the_future_alone(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    await db.execute("SELECT reminderd.schedule('acme', 'now', now())")
    await db.execute("SELECT reminderd.schedule('acme', 'tomorrow', now() + interval '1 day')")
    await db.execute("SELECT reminderd.schedule('acme', 'soon', now() + interval '300 milliseconds')")

    worker = await drain(fast_settings(database_url), due_within_s=1)

    assert sorted(r.message["ref_id"] for r in receiver.received) == ["now", "soon"]
    assert (await row_by_ref(db, "tomorrow"))["status"] == "pending"
    assert worker.stopping and worker.ticks >= 2


async def test_burst_mode_on_an_empty_queue_returns_after_one_look(database_url: str, tenant: str) -> None:
    worker = await drain(fast_settings(database_url, poll_interval_s=30), timeout_s=5)
    assert worker.ticks == 1 and worker.ready.is_set()


# A bug costs the row, never the daemon ----------------------------------------------------------


async def test_a_crash_while_deciding_or_timing_dead_letters_only_that_row(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash_for(ref: str, step: Callable[..., Any]) -> Callable[..., Any]:
        def maybe_crash(job: Job, *args: Any) -> Any:
            if job.ref_id == ref:
                raise KeyError("a bug")
            return step(job, *args)

        return maybe_crash

    monkeypatch.setattr(worker_module, "decide", crash_for("decide-bug", outcome_module.decide))
    monkeypatch.setattr(worker_module, "before_sending", crash_for("timing-bug", outcome_module.before_sending))
    for ref in ("decide-bug", "timing-bug", "fine"):
        await db.execute("SELECT reminderd.schedule('acme', $1, now())", ref)

    await drain(fast_settings(database_url))

    decided = await row_by_ref(db, "decide-bug")
    assert decided["status"] == "dead"
    assert decided["last_error"] == "internal error after the attempt: KeyError: 'a bug'"
    timed = await row_by_ref(db, "timing-bug")
    assert (timed["status"], timed["last_error"]) == ("dead", "internal error while timing: KeyError: 'a bug'")
    assert (await row_by_ref(db, "fine"))["status"] == "sent"
    assert sorted(r.message["ref_id"] for r in receiver.received) == ["decide-bug", "fine"]


async def test_a_crash_while_sending_costs_one_attempt(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send = CallbackClient.send
    crashes = [RuntimeError("a bug in the client")]

    async def crash_once(self: CallbackClient, job: Job) -> AttemptResult:
        if crashes:
            raise crashes.pop()
        return await send(self, job)

    monkeypatch.setattr(CallbackClient, "send", crash_once)
    await db.execute("SELECT reminderd.schedule('acme', 'unlucky', now())")

    await drain(fast_settings(database_url))

    row = await row_by_ref(db, "unlucky")
    assert (row["status"], row["attempts"]) == ("sent", 2)
    errors = await db.fetch(
        "SELECT error FROM reminderd.deliveries WHERE message_id = $1 ORDER BY attempt", row["id"]
    )
    assert [e["error"] for e in errors] == [
        "internal error while sending: RuntimeError: a bug in the client", None,
    ]


async def test_a_crash_while_planning_dead_letters_only_that_row(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = outcome_module.plan  # what housekeeping calls

    def crash_for_one(row: Unplanned, *args: Any, **kwargs: Any) -> Plan:
        if row.ref_id == "plan-bug":
            raise ValueError("a bug")
        return plan(row, *args, **kwargs)

    monkeypatch.setattr(housekeeping_module, "plan", crash_for_one)
    await db.execute(  # inserted by hand: the daemon plans them
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron) VALUES "
        "('acme', 'plan-bug', '0 9 * * *'), ('acme', 'daily', '0 9 * * *')"
    )

    await drain(fast_settings(database_url))

    broken = await row_by_ref(db, "plan-bug")
    assert broken["status"] == "dead"
    assert broken["last_error"] == "internal error while planning: ValueError: a bug"
    daily = await row_by_ref(db, "daily")
    assert daily["status"] == "pending" and daily["fire_at"] is not None
