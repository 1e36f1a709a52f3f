"""reminderd.client's retries and idempotency keys against a scripted HTTP server on loopback, for
the cases a real server will not produce on demand: a cut connection, a timeout, a proxy's 502
page, a Retry-After, giving up. (tests/acceptance/test_python_sdk.py runs the client against the
real `reminderd serve`, a failing proxy in front of it included.)"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from reminderd.client import ApiError, ReminderdClient, RetryPolicy, SecretShownOnce, SyncReminderdClient
from reminderd.testing import free_port

KEY = "rk_abcdefghijkm_" + "s3cr3t" * 7 + "x"
FAST = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05)
SCHEDULED = {"id": 1, "ref_id": "r", "status": "pending", "fire_at": "2026-12-24T03:30:00Z",
             "description": "once, at 2026-12-24 03:30 UTC", "result": "created"}
CUT = "cut"  # close the connection without answering
HOLD = "hold"  # answer only after 2 s


def problem(status: int, kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": f"urn:reminderd:problem:{kind}", "title": kind.replace("-", " ").capitalize(),
            "status": status, "detail": f"scripted {kind}", **extra}


Step = tuple[int, dict[str, str], Any] | str


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Scripted:
    """Answers each request with the next step of `script` (then 200 with `final`)."""

    script: list[Step] = field(default_factory=list)
    final: Any = field(default_factory=lambda: SCHEDULED)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, dict(request.query), dict(request.headers), body,
                              time.monotonic()))
        step: Step = self.script.pop(0) if self.script else (201 if request.method == "POST" else 200, {},
                                                             self.final)
        if step == CUT:
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        if step == HOLD:
            await asyncio.sleep(2)  # longer than the client's timeout: what is under test
            return web.json_response(self.final)
        assert not isinstance(step, str)
        status, headers, payload = step
        if isinstance(payload, bytes):
            return web.Response(status=status, headers=headers, body=payload)
        content_type = "application/problem+json" if status >= 400 else "application/json"
        return web.Response(status=status, headers=headers, body=json.dumps(payload).encode(),
                            content_type=content_type)


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    scripted = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    scripted.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield scripted
    await runner.cleanup()


@pytest.fixture
async def rd(server: Scripted) -> AsyncIterator[ReminderdClient]:
    async with ReminderdClient(server.url, KEY, retry=FAST, timeout_s=1.0) as client:
        yield client


def keys(server: Scripted) -> list[str | None]:
    return [seen.headers.get("Idempotency-Key") for seen in server.seen]


@pytest.mark.parametrize("failure", [
    (503, {}, problem(503, "unavailable")),
    (500, {}, problem(500, "internal")),
    (502, {}, b"<html>bad gateway</html>"),
    (429, {"Retry-After": "0"}, problem(429, "rate-limited")),
    (409, {}, problem(409, "idempotency-in-flight")),
    CUT,
    HOLD,
], ids=["503", "500", "502-page", "429", "409-in-flight", "cut", "timeout"])
async def test_a_failed_write_is_retried_with_the_same_body_and_idempotency_key(
        server: Scripted, rd: ReminderdClient, failure: Step) -> None:
    server.script = [failure, failure]
    scheduled = await rd.schedule("r", fire_in="2h", payload={"to": "+1"})
    assert scheduled.id == 1
    assert len(server.seen) == 3
    assert len(set(keys(server))) == 1 and keys(server)[0] is not None
    assert len({seen.body for seen in server.seen}) == 1
    assert json.loads(server.seen[0].body) == {"ref_id": "r", "fire_in": "2h", "payload": {"to": "+1"}}


async def test_each_call_has_its_own_key_and_a_key_given_is_sent_as_given(
        server: Scripted, rd: ReminderdClient) -> None:
    await rd.schedule("a", fire_in=60)
    await rd.schedule("a", fire_in=60)
    await rd.schedule("a", fire_in=60, idempotency_key="order-42:reminder")
    first, second, third = keys(server)
    assert first != second and first is not None and second is not None
    assert third == "order-42:reminder"


async def test_a_read_carries_no_idempotency_key_and_is_retried_too(
        server: Scripted, rd: ReminderdClient) -> None:
    server.final = {"counts": {"pending": 2}, "upcoming_by_hour": [], "last_1h": {"delivered": 0, "retried": 0,
                    "dead": 0}, "last_24h": {"delivered": 1, "retried": 0, "dead": 0},
                    "lateness_ms": {"p50": 12.5, "p99": None}}
    server.script = [(503, {}, problem(503, "unavailable"))]
    stats = await rd.stats()
    assert stats.counts == {"pending": 2} and stats.last_24h.delivered == 1 and stats.lateness_ms.p50 == 12.5
    assert keys(server) == [None, None]
    assert server.seen[0].headers["Authorization"] == f"Bearer {KEY}"


async def test_retry_after_is_waited_for(server: Scripted, rd: ReminderdClient) -> None:
    server.script = [(429, {"Retry-After": "1"}, problem(429, "rate-limited"))]
    await rd.schedule("r", fire_in=60)
    first, second = server.seen
    assert second.at - first.at >= 0.95


async def test_a_retry_after_longer_than_the_policy_allows_fails_at_once(server: Scripted) -> None:
    server.script = [(429, {"Retry-After": "3600"}, problem(429, "rate-limited"))]
    async with ReminderdClient(server.url, KEY, retry=RetryPolicy(max_retry_after_s=60)) as rd:
        with pytest.raises(ApiError) as raised:
            await rd.schedule("r", fire_in=60)
    assert (raised.value.status, raised.value.type, raised.value.attempts) == \
        (429, "urn:reminderd:problem:rate-limited", 1)
    assert len(server.seen) == 1


async def test_out_of_attempts_the_last_problem_is_raised(server: Scripted, rd: ReminderdClient) -> None:
    server.script = [(503, {}, problem(503, "unavailable"))] * 5
    with pytest.raises(ApiError) as raised:
        await rd.schedule("r", fire_in=60)
    assert raised.value.status == 503 and raised.value.attempts == 4
    assert str(raised.value) == "Unavailable (503): scripted unavailable"
    assert len(server.seen) == 4 and len(set(keys(server))) == 1


@pytest.mark.parametrize(("status", "kind"), [
    (422, "invalid-request"), (409, "not-live"), (404, "not-found"), (401, "unauthorized"),
    (400, "invalid-json"), (422, "idempotency-mismatch"),
])
async def test_a_refusal_is_raised_at_once_with_its_problem(
        server: Scripted, rd: ReminderdClient, status: int, kind: str) -> None:
    server.script = [(status, {}, problem(status, kind, errors=[{"pointer": "/fire_at", "detail": "bad"}]))]
    with pytest.raises(ApiError) as raised:
        await rd.schedule("r", fire_at="tomorrow")
    error = raised.value
    assert (error.status, error.type, error.attempts) == (status, f"urn:reminderd:problem:{kind}", 1)
    assert error.errors[0].pointer == "/fire_at" and error.errors[0].detail == "bad"
    assert len(server.seen) == 1


async def test_a_rotation_whose_answer_was_lost_raises_secret_shown_once(
        server: Scripted, rd: ReminderdClient) -> None:
    """The first try rotated but its answer was cut; the retry (same key, so no second rotation) gets
    the server's 409 instead of the secret: its own error, raised at once, never retried."""
    server.script = [CUT, (409, {}, problem(409, "secret-shown-once"))]
    with pytest.raises(SecretShownOnce) as raised:
        await rd.rotate_secret(grace="1h")
    assert (raised.value.status, raised.value.attempts) == (409, 2)
    assert raised.value.type == "urn:reminderd:problem:secret-shown-once"
    assert [seen.path for seen in server.seen] == ["/v1/tenant/rotate-secret"] * 2
    assert len(set(keys(server))) == 1


async def test_an_answer_not_as_described_is_an_invalid_response_problem(
        server: Scripted, rd: ReminderdClient) -> None:
    server.script = [(201, {}, {"id": "one"})]
    with pytest.raises(ApiError) as raised:
        await rd.schedule("r", fire_in=60)
    assert raised.value.type == "urn:reminderd:client:invalid-response"
    assert "/id: int expected" in raised.value.detail


async def test_an_unreachable_server_is_an_unreachable_problem_after_every_attempt(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with ReminderdClient(url, KEY, retry=FAST) as rd:
        with pytest.raises(ApiError) as raised:
            await rd.schedule("r", fire_in=60)
    error = raised.value
    assert (error.type, error.status, error.attempts) == ("urn:reminderd:client:unreachable", 0, 4)
    assert error.detail.startswith("POST /v1/messages: ")
    assert [record.getMessage().split(" attempt ")[1][:1] for record in caplog.records
            if record.name == "reminderd.client"] == ["1", "2", "3"]
    shown = "".join(traceback.format_exception(error)) + repr(error) + caplog.text
    assert KEY not in shown and "s3cr3t" not in shown


async def test_the_key_is_in_no_log_line_and_no_error(
        server: Scripted, rd: ReminderdClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.script = [(503, {}, problem(503, "unavailable")), CUT, (401, {}, problem(401, "unauthorized"))]
    with pytest.raises(ApiError) as raised:
        await rd.schedule("r", fire_in=60)
    assert len(caplog.records) >= 2  # the two retries were logged
    shown = "".join(traceback.format_exception(raised.value)) + caplog.text
    assert KEY not in shown and "s3cr3t" not in shown and "Authorization" not in shown


async def test_list_follows_the_cursor_with_the_same_filters(server: Scripted, rd: ReminderdClient) -> None:
    message = {
        "id": 1, "ref_id": "b:1", "status": "pending", "fire_at": None, "scheduled_for": None,
        "timezone": "UTC", "cron": None, "rrule": None, "until": None, "max_runs": None, "runs": 0,
        "category": "transactional",
        "callback_url": None, "max_attempts": None, "attempts": 0, "calendar": None, "holiday_rule": None,
        "backfill": None, "max_lateness_s": None, "last_error": None, "last_event": "created",
        "created_at": "2026-12-01T10:00:00Z", "updated_at": "2026-12-01T10:00:00Z", "sent_at": None,
        "extra_of": None, "contact_id": None, "timezone_source": "message", "payload": {},
    }
    server.script = [(200, {}, {"messages": [message, {**message, "id": 2}], "next_cursor": "c1"}),
                     (200, {}, {"messages": [{**message, "id": 3}], "next_cursor": None})]
    ids = [m.id async for m in rd.list(ref_prefix="b:", status=["pending", "paused"], page_size=2).messages()]
    assert ids == [1, 2, 3]
    first, second = server.seen
    assert first.query == {"ref_prefix": "b:", "status": "pending,paused", "limit": "2"}
    assert second.query == {**first.query, "cursor": "c1"}


async def test_instants_in_the_query_keep_their_offset(server: Scripted, rd: ReminderdClient) -> None:
    server.final = {"messages": [], "next_cursor": None}
    pages = [page async for page in rd.list(fire_after="2026-12-24T09:00:00+05:30")]
    assert len(pages) == 1 and pages[0].messages == ()
    assert server.seen[0].query == {"fire_after": "2026-12-24T09:00:00+05:30"}


async def test_the_sync_client_retries_the_same_way_from_a_thread_without_a_loop(server: Scripted) -> None:
    server.script = [(503, {}, problem(503, "unavailable"))]

    def blocking() -> int:
        with SyncReminderdClient(server.url, KEY, retry=FAST) as rd:
            return rd.schedule("r", fire_in=60).id

    assert await asyncio.to_thread(blocking) == 1
    assert len(server.seen) == 2 and len(set(keys(server))) == 1


async def test_a_closed_sync_client_says_so() -> None:
    rd = SyncReminderdClient("http://127.0.0.1:9", KEY)
    rd.close()
    rd.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        rd.stats()
