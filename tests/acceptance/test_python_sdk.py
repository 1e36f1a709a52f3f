"""reminderd.client against a real `reminderd serve` and PostgreSQL: every method, pagination over
several pages, problems as ApiError, and retries through a failing proxy that prove exactly one
message is created (the proxy fails before the server sees the request, or cuts the connection
after the server committed)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from live_api import LiveApi, TenantKey, new_tenant
from support import near

from reminderd.client import (
    ApiError,
    ReminderdClient,
    RetryPolicy,
    ScheduleRequest,
    Status,
    SyncReminderdClient,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

FAST = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05)
IN_AN_HOUR = timedelta(hours=1)


@pytest_asyncio.fixture(loop_scope="module")
async def rd(live_api: LiveApi, tenant_key: TenantKey) -> AsyncIterator[ReminderdClient]:
    async with ReminderdClient(live_api.url, tenant_key.key, retry=FAST) as client:
        yield client


async def rows(db: asyncpg.Connection, tenant: str, ref: str | None = None) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await db.fetch(
        "SELECT * FROM reminderd.scheduled_messages WHERE tenant_id = $1 AND ($2::text IS NULL OR ref_id = $2)"
        " ORDER BY id", tenant, ref)
    return found


# Scheduling


async def test_schedule_creates_a_message_and_the_same_call_returns_it(
        rd: ReminderdClient, tenant_key: TenantKey, api_db: asyncpg.Connection) -> None:
    fire_at = datetime.now(UTC).replace(microsecond=0) + IN_AN_HOUR
    scheduled = await rd.schedule("booking:b7d2:24h", fire_at=fire_at, payload={"to": "+441632960961"},
                                  category="reminders", max_attempts=5)
    assert (scheduled.ref_id, scheduled.status, scheduled.fire_at, scheduled.result) == \
        ("booking:b7d2:24h", Status.PENDING, fire_at, "created")
    assert scheduled.description.startswith("once, at ")
    again = await rd.schedule("booking:b7d2:24h", fire_at=fire_at, payload={"to": "+441632960961"},
                              category="reminders", max_attempts=5)
    assert (again.id, again.result) == (scheduled.id, "unchanged")
    (row,) = await rows(api_db, tenant_key.tenant)
    assert row["id"] == scheduled.id and row["category"] == "reminders" and row["max_attempts"] == 5
    assert json.loads(row["payload"]) == {"to": "+441632960961"}


async def test_scheduling_a_live_ref_again_replaces_it(
        rd: ReminderdClient, tenant_key: TenantKey, api_db: asyncpg.Connection) -> None:
    first = await rd.schedule("cart:1", fire_in="2h")
    second = await rd.schedule("cart:1", fire_in="3h")
    assert second.result == "replaced" and second.id != first.id
    assert [(row["id"], row["status"]) for row in await rows(api_db, tenant_key.tenant, "cart:1")] == \
        [(first.id, "cancelled"), (second.id, "pending")]


async def test_every_way_to_say_when(rd: ReminderdClient, api_db: asyncpg.Connection) -> None:
    now = datetime.now(UTC)
    in_two_hours = await rd.schedule("when:fire_in", fire_in=timedelta(hours=2))
    assert near(in_two_hours.fire_at, now + timedelta(hours=2))
    nine = (now + timedelta(days=20)).replace(hour=9, minute=0, second=0, microsecond=0, tzinfo=None)
    wall = await rd.schedule("when:local", local_time=nine, timezone="Asia/Kolkata")
    assert wall.fire_at == nine.replace(tzinfo=UTC) - timedelta(hours=5, minutes=30)
    cron = await rd.schedule("when:cron", cron="0 9 * * 1-5", timezone="Asia/Kolkata", max_runs=3)
    every = await rd.schedule("when:every", every="weekdays at 09:15", timezone="Europe/London",
                              until=nine + timedelta(days=180))
    rrule = await rd.schedule("when:rrule", rrule="FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9", timezone="Europe/London",
                              calendar="GB", holiday_rule="skip", backfill="latest", max_lateness="1h")
    assert "Monday through Friday" in cron.description and "Asia/Kolkata" in cron.description
    assert "09:15" in every.description and "first Monday" in rrule.description
    assert {cron.status, every.status, rrule.status} == {Status.PENDING}
    row = await api_db.fetchrow("SELECT * FROM reminderd.scheduled_messages WHERE id = $1", rrule.id)
    assert (row["calendar"], row["backfill"], row["max_lateness"]) == ("GB", "latest", timedelta(hours=1))


async def test_schedule_many_creates_every_message_in_one_call(
        rd: ReminderdClient, tenant_key: TenantKey, api_db: asyncpg.Connection) -> None:
    batch = await rd.schedule_many([ScheduleRequest(f"batch:{i}", fire_in=f"{i}h", payload={"i": i})
                                    for i in range(1, 6)])
    assert (batch.created, batch.replaced, batch.unchanged, batch.failed) == (5, 0, 0, 0)
    assert [item.index for item in batch.results] == [0, 1, 2, 3, 4]
    assert [item.ref_id for item in batch.results] == [f"batch:{i}" for i in range(1, 6)]
    assert len(await rows(api_db, tenant_key.tenant)) == 5


async def test_an_atomic_batch_with_an_invalid_item_schedules_nothing_and_names_the_item(
        rd: ReminderdClient, tenant_key: TenantKey, api_db: asyncpg.Connection) -> None:
    with pytest.raises(ApiError) as raised:
        await rd.schedule_many([ScheduleRequest("ok:1", fire_in="1h"), ScheduleRequest("bad:1", fire_in="no")])
    error = raised.value
    assert (error.status, error.type) == (422, "urn:reminderd:problem:invalid-request")
    assert [e.pointer for e in error.errors] == ["/messages/1/fire_in"]
    assert await rows(api_db, tenant_key.tenant) == []


async def test_a_batch_that_is_not_atomic_keeps_the_valid_items(
        rd: ReminderdClient, tenant_key: TenantKey, api_db: asyncpg.Connection) -> None:
    items = [ScheduleRequest("ok:1", fire_in="1h"), ScheduleRequest("bad:1", fire_in="no")]
    batch = await rd.schedule_many(items, atomic=False)
    assert (batch.created, batch.failed) == (1, 1)
    ok, bad = batch.results
    assert ok.result == "created" and ok.id is not None
    assert bad.result == "error" and bad.error is not None
    assert bad.error.errors[0].pointer == "/messages/1/fire_in"
    assert [row["ref_id"] for row in await rows(api_db, tenant_key.tenant)] == ["ok:1"]


# Reading


async def test_get_answers_the_message_with_its_audit_trail(rd: ReminderdClient) -> None:
    scheduled = await rd.schedule("get:1", fire_in="1h", payload={"amount": 12345678901234567.5, "note": "ü"})
    await rd.pause(scheduled.id)
    message = await rd.get(scheduled.id)
    assert (message.id, message.ref_id, message.status) == (scheduled.id, "get:1", Status.PAUSED)
    assert message.payload == {"amount": 12345678901234567.5, "note": "ü"}
    assert [event.event for event in message.events] == ["created", "paused"]
    assert message.deliveries == ()
    assert message.created_at.tzinfo is not None


async def test_a_payloads_numbers_are_read_and_sent_again_as_written(
        rd: ReminderdClient, api_db: asyncpg.Connection) -> None:
    """Fractions are read as Decimal (a float would round 12345678901234567.5), and a Decimal is
    sent as its digits: a payload read back and sent again is the one stored."""
    written = {"big": Decimal("12345678901234567.5"), "price": Decimal("1.50"), "n": 7}
    scheduled = await rd.schedule("num:1", fire_in="1h", payload=written)
    message = await rd.get(scheduled.id)
    assert message.payload == written and str(message.payload["big"]) == "12345678901234567.5"
    assert str(message.payload["price"]) == "1.50" and type(message.payload["n"]) is int
    stored = "SELECT payload::text FROM reminderd.scheduled_messages WHERE id = $1"
    before = await api_db.fetchval(stored, scheduled.id)
    again = await rd.update(scheduled.id, payload=message.payload)
    assert again.payload == written and await api_db.fetchval(stored, scheduled.id) == before
    assert "12345678901234567.5" in before


async def test_list_walks_every_page_newest_first_with_its_filters(rd: ReminderdClient) -> None:
    ids = [(await rd.schedule(f"page:{i:02}", fire_in=f"{i}h")).id for i in range(1, 12)]
    await rd.schedule("other:1", fire_in="1h")
    pages = [page async for page in rd.list(ref_prefix="page:", page_size=4)]
    assert [len(page.messages) for page in pages] == [4, 4, 3]
    assert [m.id for page in pages for m in page.messages] == sorted(ids, reverse=True)
    assert pages[-1].next_cursor is None and all(page.next_cursor for page in pages[:-1])
    soonest = [m.ref_id async for m in rd.list(ref_prefix="page:", order="soonest", page_size=5).messages()]
    assert soonest == [f"page:{i:02}" for i in range(1, 12)]


async def test_list_filters_by_status_ref_and_fire_at(rd: ReminderdClient) -> None:
    now = datetime.now(UTC)
    early = await rd.schedule("f:early", fire_at=now + timedelta(hours=1))
    late = await rd.schedule("f:late", fire_at=now + timedelta(hours=5))
    await rd.pause(late.id)
    paused = [m.id async for m in rd.list(status=Status.PAUSED).messages()]
    assert paused == [late.id]
    both = [m.id async for m in rd.list(status=["pending", "paused"], ref_prefix="f:").messages()]
    assert both == [late.id, early.id]
    assert [m.id async for m in rd.list(ref="f:early").messages()] == [early.id]
    window = rd.list(fire_after=now + timedelta(hours=2), fire_before=now + timedelta(hours=6),
                     status=["pending", "paused"])
    assert [m.id async for m in window.messages()] == [late.id]


async def test_list_resumes_from_a_cursor_kept_earlier(rd: ReminderdClient) -> None:
    for i in range(5):
        await rd.schedule(f"resume:{i}", fire_in=f"{i + 1}h")
    first = await anext(aiter(rd.list(page_size=2)))
    assert first.next_cursor is not None
    rest = [m.ref_id async for m in rd.list(page_size=2, cursor=first.next_cursor).messages()]
    assert [m.ref_id for m in first.messages] + rest == [f"resume:{i}" for i in reversed(range(5))]


# Changing


async def test_cancel_by_id_by_ref_and_by_pattern_count_what_they_cancel(rd: ReminderdClient) -> None:
    one = await rd.schedule("booking:b7d2:24h", fire_in="24h")
    await rd.schedule("booking:b7d2:1h", fire_in="1h")
    await rd.schedule("booking:b7d2:15m", fire_in="15m")
    await rd.schedule("booking:c9:1h", fire_in="1h")
    assert await rd.cancel(one.id) == 1
    assert await rd.cancel(one.id) == 0  # no longer live: still an answer, not an error
    assert await rd.cancel_ref("booking:b7d2:1h") == 1
    assert await rd.cancel_ref("booking:b7d2:1h") == 0
    assert await rd.cancel_matching("booking:b7d2:%") == 1
    assert [m.ref_id async for m in rd.list(status="pending").messages()] == ["booking:c9:1h"]


async def test_update_reschedules_and_replaces_the_payload(rd: ReminderdClient) -> None:
    scheduled = await rd.schedule("upd:1", fire_in="1h", payload={"v": 1})
    new_time = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0) + timedelta(days=10)
    moved = await rd.reschedule(scheduled.id, fire_at=new_time)
    assert moved.fire_at == new_time and moved.payload == {"v": 1}
    edited = await rd.update(scheduled.id, payload={"v": 2})
    assert edited.payload == {"v": 2} and edited.fire_at == new_time
    wall = new_time.replace(tzinfo=None) + timedelta(days=1)
    both = await rd.update(scheduled.id, local_time=wall, payload=None)  # in the message's timezone, UTC
    assert both.payload is None and both.fire_at == new_time + timedelta(days=1)


async def test_pause_resume_send_now_and_requeue(rd: ReminderdClient, api_db: asyncpg.Connection) -> None:
    scheduled = await rd.schedule("life:1", fire_in="3h")
    assert (await rd.pause(scheduled.id)).status == Status.PAUSED
    assert (await rd.resume(scheduled.id)).status == Status.PENDING
    now = await rd.send_now(scheduled.id)
    assert (now.id, now.extra_occurrence, now.held) == (scheduled.id, False, None)
    assert near(now.fire_at, datetime.now(UTC))
    with pytest.raises(ApiError) as raised:
        await rd.requeue(scheduled.id)
    assert (raised.value.status, raised.value.type) == (409, "urn:reminderd:problem:not-live")
    await api_db.execute("UPDATE reminderd.scheduled_messages SET status = 'dead', attempts = 3 WHERE id = $1",
                         scheduled.id)
    requeued = await rd.requeue(scheduled.id)
    assert requeued.status == Status.PENDING and requeued.last_event == "requeued"


async def test_requeue_of_one_that_died_delivered_needs_resend(rd: ReminderdClient, api_db: asyncpg.Connection
                                                                ) -> None:
    scheduled = await rd.schedule("life:2", fire_in="3h")
    async with api_db.transaction():  # as the daemon leaves one delivered, then refused at recording
        await api_db.execute("SET LOCAL session_replication_role = replica")
        await api_db.execute(
            "UPDATE reminderd.scheduled_messages SET status = 'dead', picked_at = now() - interval '1 minute', "
            "sent_at = now(), scheduled_for = fire_at WHERE id = $1", scheduled.id)
    with pytest.raises(ApiError) as raised:
        await rd.requeue(scheduled.id)
    assert (raised.value.status, raised.value.type) == (409, "urn:reminderd:problem:conflict")
    assert raised.value.problem.hint == "add ?resend=true to send it again all the same"
    requeued = await rd.requeue(scheduled.id, resend=True)
    assert requeued.status == Status.PENDING and requeued.last_event == "requeued"


async def test_send_now_of_a_recurring_message_is_an_extra_occurrence(rd: ReminderdClient) -> None:
    recurring = await rd.schedule("pulse", cron="0 9 * * *", timezone="Asia/Kolkata")
    extra = await rd.send_now(recurring.id)
    assert extra.extra_occurrence and extra.id != recurring.id and extra.ref_id == "pulse"
    assert (await rd.get(extra.id)).extra_of == recurring.id
    assert (await rd.send_now(recurring.id)).id == extra.id  # asked again while it waits: the same one


async def test_send_now_in_quiet_hours_says_it_is_held(rd: ReminderdClient) -> None:
    local = datetime.now(UTC)
    start, end = (local - timedelta(hours=1)).strftime("%H:00"), (local + timedelta(hours=2)).strftime("%H:00")
    await rd.update_tenant(quiet_hours=f"{start}-{end}")
    scheduled = await rd.schedule("promo:1", fire_in="5h", category="marketing")
    held = await rd.send_now(scheduled.id)
    assert held.held is not None and "quiet" in held.held.reason
    assert held.held.until is not None and held.held.until > datetime.now(UTC)


# The tenant and the numbers


async def test_the_tenants_settings_are_read_changed_and_cleared(
        rd: ReminderdClient, tenant_key: TenantKey) -> None:
    tenant = await rd.tenant()
    assert (tenant.id, tenant.paused, tenant.quiet_hours) == (tenant_key.tenant, False, None)
    changed = await rd.update_tenant(quiet_hours="21:00-08:00", calendar="IN", quiet_exempt=["otp"],
                                     holiday_rule="send", callback_url="https://hooks.example.com/reminderd")
    assert (changed.quiet_hours, changed.calendar, changed.quiet_exempt, changed.holiday_rule) == \
        ("21:00-08:00", "IN", ("otp",), "send")
    assert changed.callback_url == "https://hooks.example.com/reminderd"
    cleared = await rd.update_tenant(quiet_hours=None, calendar=None)
    assert (cleared.quiet_hours, cleared.calendar, cleared.quiet_exempt) == (None, None, ("otp",))


async def test_pausing_the_tenant_holds_its_messages_until_resumed(rd: ReminderdClient) -> None:
    for i in range(3):
        await rd.schedule(f"hold:{i}", fire_in="1h")
    paused = await rd.pause_tenant()
    assert (paused.paused, paused.messages) == (True, 3)
    assert (await rd.tenant()).paused
    resumed = await rd.resume_tenant()
    assert (resumed.paused, resumed.messages) == (False, 3)


async def test_rotating_the_secret_shows_the_new_one_once(
        rd: ReminderdClient, tenant_key: TenantKey, api_db: asyncpg.Connection) -> None:
    rotated = await rd.rotate_secret(grace="1h")
    assert rotated.secret.startswith("whsec_") and rotated.secret not in repr(rotated)
    stored = await api_db.fetchval("SELECT signing_secret FROM reminderd.tenants WHERE id = $1",
                                   tenant_key.tenant)
    assert stored == rotated.secret
    expires = (await rd.tenant()).previous_secret_expires_at
    assert near(expires, datetime.now(UTC) + timedelta(hours=1))


async def test_the_rotation_answer_says_until_when_the_old_secret_signs(rd: ReminderdClient) -> None:
    rotated = await rd.rotate_secret(grace="1h")
    assert near(rotated.previous_secret_valid_until, datetime.now(UTC) + timedelta(hours=1))


async def test_stats_count_the_tenants_messages(rd: ReminderdClient) -> None:
    for i in range(3):
        await rd.schedule(f"stat:{i}", fire_in=f"{i + 1}h")
    cancelled = await rd.schedule("stat:x", fire_in="1h")
    await rd.cancel(cancelled.id)
    stats = await rd.stats()
    assert (stats.counts["pending"], stats.counts["cancelled"]) == (3, 1)
    assert sum(hour.messages for hour in stats.upcoming_by_hour) == 3
    assert stats.last_24h.delivered == 0 and stats.lateness_ms.p50 is None


async def test_preview_lists_fire_times_without_creating_anything(
        rd: ReminderdClient, tenant_key: TenantKey, api_db: asyncpg.Connection) -> None:
    preview = await rd.preview(cron="0 9 * * 1-5", timezone="Asia/Kolkata", n=3,
                               from_=datetime(2026, 12, 24, tzinfo=UTC))
    assert preview.timezone == "Asia/Kolkata" and "Monday through Friday" in preview.description
    assert [fire.utc for fire in preview.fires] == \
        [datetime(2026, 12, day, 3, 30, tzinfo=UTC) for day in (24, 25, 28)]
    assert preview.fires[0].local == "2026-12-24T09:00:00+05:30"
    assert await rows(api_db, tenant_key.tenant) == []


# Problems


async def test_refusals_are_api_errors_carrying_the_problem(rd: ReminderdClient) -> None:
    with pytest.raises(ApiError) as raised:
        await rd.schedule("bad:1", fire_in="1h", cron="0 9 * * *")
    error = raised.value
    assert (error.status, error.type, error.title) == \
        (422, "urn:reminderd:problem:invalid-request", "The request is invalid")
    assert error.detail == "give only one of fire_in, cron" and error.errors[0].pointer == "/cron"
    assert error.problem.instance and error.attempts == 1
    with pytest.raises(ApiError) as missing:
        await rd.get(987654321)
    assert (missing.value.status, missing.value.type) == (404, "urn:reminderd:problem:not-found")


async def test_another_tenants_message_is_not_found(live_api: LiveApi, api_db: asyncpg.Connection,
                                                    rd: ReminderdClient) -> None:
    theirs = await new_tenant(api_db)
    async with ReminderdClient(live_api.url, theirs.key) as other:
        their_message = await other.schedule("secret:1", fire_in="1h")
    for call in (rd.get(their_message.id), rd.pause(their_message.id), rd.send_now(their_message.id)):
        with pytest.raises(ApiError) as raised:
            await call
        assert raised.value.status == 404
    assert await rd.cancel_ref("secret:1") == 0


async def test_a_revoked_or_wrong_key_is_401_and_a_read_only_key_may_not_write(
        live_api: LiveApi, api_db: asyncpg.Connection, tenant_key: TenantKey) -> None:
    wrong = tenant_key.key[:-4] + ("AAAA" if not tenant_key.key.endswith("AAAA") else "BBBB")
    async with ReminderdClient(live_api.url, wrong, retry=FAST) as rd:
        with pytest.raises(ApiError) as raised:
            await rd.tenant()
    assert (raised.value.status, raised.value.type, raised.value.attempts) == \
        (401, "urn:reminderd:problem:unauthorized", 1)
    assert wrong not in str(raised.value) and tenant_key.key not in str(raised.value)
    reader = await new_tenant(api_db, read_only=True)
    async with ReminderdClient(live_api.url, reader.key) as rd:
        assert (await rd.tenant()).id == reader.tenant
        with pytest.raises(ApiError) as forbidden:
            await rd.schedule("nope", fire_in="1h")
    assert (forbidden.value.status, forbidden.value.type) == (403, "urn:reminderd:problem:forbidden")


async def test_the_same_idempotency_key_for_another_request_is_refused(rd: ReminderdClient) -> None:
    first = await rd.schedule("idem:1", fire_in="1h", idempotency_key="order-7")
    replay = await rd.schedule("idem:1", fire_in="1h", idempotency_key="order-7")
    assert replay == first  # the first answer again, byte for byte
    with pytest.raises(ApiError) as raised:
        await rd.schedule("idem:2", fire_in="1h", idempotency_key="order-7")
    assert (raised.value.status, raised.value.type) == (422, "urn:reminderd:problem:idempotency-mismatch")


# Retries through a failing proxy


@dataclass
class FailingProxy:
    """Forwards to the real server, but first fails as `script` says, one step per request:
    (status, headers) answered without forwarding, or CUT_AFTER_COMMIT (forward, then drop the
    connection without answering: the server has committed, the client never hears it)."""

    upstream: str
    script: list[tuple[int, dict[str, str]] | str] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)  # headers of each request that arrived
    upstream_answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    url: str = ""
    _session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(dict(request.headers))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, tuple):
            status, headers = step
            problem = {"type": "about:blank", "title": "proxy says no", "status": status, "detail": "scripted"}
            return web.json_response(problem, status=status, headers=headers,
                                     content_type="application/problem+json")
        assert self._session is not None
        forwarded = {name: value for name, value in request.headers.items()
                     if name.lower() in ("authorization", "content-type", "idempotency-key", "accept")}
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=forwarded,
                                         data=body or None) as answer:
            content = await answer.read()
            self.upstream_answers.append((answer.status, dict(answer.headers)))
            if step == CUT_AFTER_COMMIT:
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)  # never reaches the client
            headers = {name: value for name, value in answer.headers.items()
                       if name.lower() in ("content-type", "retry-after", "idempotent-replayed")}
            return web.Response(status=answer.status, body=content, headers=headers)


CUT_AFTER_COMMIT = "cut after commit"


@pytest_asyncio.fixture(loop_scope="module")
async def proxy(live_api: LiveApi) -> AsyncIterator[FailingProxy]:
    failing = FailingProxy(live_api.url)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", failing.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    failing.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession() as session:
        failing._session = session
        yield failing
    await runner.cleanup()


@pytest.mark.parametrize("failures", [
    [(503, {}), (503, {})],
    [(429, {"Retry-After": "1"})],
    [(502, {}), (500, {}), (504, {})],
], ids=["503-twice", "429-retry-after", "502-500-504"])
async def test_through_failures_a_schedule_is_retried_and_creates_exactly_one_message(
        proxy: FailingProxy, tenant_key: TenantKey, api_db: asyncpg.Connection,
        failures: list[tuple[int, dict[str, str]] | str]) -> None:
    proxy.script = list(failures)
    async with ReminderdClient(proxy.url, tenant_key.key, retry=FAST) as rd:
        scheduled = await rd.schedule("retried:1", fire_in="1h", payload={"n": 1})
    assert scheduled.result == "created"
    assert len(proxy.requests) == len(failures) + 1
    assert len({headers["Idempotency-Key"] for headers in proxy.requests}) == 1
    assert [row["id"] for row in await rows(api_db, tenant_key.tenant)] == [scheduled.id]


async def test_a_connection_cut_after_the_server_committed_is_retried_and_answered_with_the_first_answer(
        proxy: FailingProxy, tenant_key: TenantKey, api_db: asyncpg.Connection) -> None:
    proxy.script = [CUT_AFTER_COMMIT]
    async with ReminderdClient(proxy.url, tenant_key.key, retry=FAST) as rd:
        scheduled = await rd.schedule("cut:1", fire_in="1h", payload={"n": 1})
    (first_status, first_headers), (second_status, second_headers) = proxy.upstream_answers
    assert first_status == 201 and "Idempotent-Replayed" not in first_headers  # done, but never heard
    assert second_status == 201 and second_headers["Idempotent-Replayed"] == "true"  # the stored answer
    assert scheduled.result == "created"
    assert proxy.requests[0]["Idempotency-Key"] == proxy.requests[1]["Idempotency-Key"]
    assert [row["id"] for row in await rows(api_db, tenant_key.tenant)] == [scheduled.id]


async def test_a_cut_batch_is_not_scheduled_twice(
        proxy: FailingProxy, tenant_key: TenantKey, api_db: asyncpg.Connection) -> None:
    proxy.script = [CUT_AFTER_COMMIT, (503, {})]
    async with ReminderdClient(proxy.url, tenant_key.key, retry=FAST) as rd:
        batch = await rd.schedule_many([ScheduleRequest(f"cutb:{i}", fire_in="1h") for i in range(20)])
    assert batch.created == 20
    assert len(await rows(api_db, tenant_key.tenant)) == 20


async def test_the_servers_own_rate_limit_is_waited_out(
        live_api: LiveApi, api_db: asyncpg.Connection, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="reminderd.client")
    slow = await new_tenant(api_db)
    await api_db.execute("UPDATE reminderd.tenants SET api_rate_limit = 1 WHERE id = $1", slow.tenant)
    async with ReminderdClient(live_api.url, slow.key, retry=RetryPolicy(attempts=5, base_s=0.05)) as rd:
        created = await asyncio.gather(*(rd.schedule(f"limited:{i}", fire_in="1h") for i in range(3)))
    assert {item.result for item in created} == {"created"}
    assert "429 urn:reminderd:problem:rate-limited" in caplog.text
    assert len(await rows(api_db, slow.tenant)) == 3
    assert slow.key not in caplog.text


# The sync client


async def test_the_sync_client_does_the_same_without_an_event_loop(
        live_api: LiveApi, tenant_key: TenantKey) -> None:
    def blocking() -> tuple[int, Status, list[str]]:
        with SyncReminderdClient(live_api.url, tenant_key.key) as rd:
            scheduled = rd.schedule("sync:1", fire_in="1h")
            rd.schedule("sync:2", fire_in="2h")
            rd.schedule("sync:3", fire_in="3h")
            paused = rd.pause(scheduled.id)
            refs = [m.ref_id for m in rd.messages(page_size=2)]
            return scheduled.id, paused.status, refs

    message_id, status, refs = await asyncio.to_thread(blocking)
    assert message_id > 0 and status == Status.PAUSED
    assert refs == ["sync:3", "sync:2", "sync:1"]
