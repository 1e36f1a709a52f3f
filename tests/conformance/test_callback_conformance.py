"""Conformance of the callback client, through the interface the daemon uses (`send(job)`), against
real servers on 127.0.0.1 and ::1 only: keep-alive, framing, timeouts, 1xx, redirects, Retry-After,
IPv6, TLS with a test CA, SSRF decided on the address connected to, and receivers that misbehave
(issue 16). Names are resolved by an injected resolver: no test depends on real DNS.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import ipaddress
import socket
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from support import TEST_SECRET, make_job
from yarl import URL

from conformance.scripted_server import (
    Answer,
    Client,
    ScriptedServer,
    chunked,
    dribble,
    fixed_dns,
    headers_without_body,
    huge_body,
    informational,
    never_answers,
    raw,
    reset,
    respond,
)
from reminderd.callback import callback_body
from reminderd.exceptions import CallbackRefused
from reminderd.http1 import Http1Client
from reminderd.outcome import AttemptResult
from reminderd.settings import Network

MakeClient = Callable[..., Client]
LOOPBACK_V4: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.1/32"),)
LOOPBACK_V6: tuple[Network, ...] = (ipaddress.ip_network("::1/128"),)
ALL_LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@asynccontextmanager
async def serving(*script: Answer, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
                  ) -> AsyncIterator[ScriptedServer]:
    server = await ScriptedServer(script or (respond(200),), host=host, ssl_context=tls).start()
    try:
        yield server
    finally:
        await server.stop()
    assert server.failures == []


async def send(client: Client, url: str, **job: Any) -> AttemptResult:
    return await client.send(make_job(callback_url=url, **job))


def is_failed_attempt(result: AttemptResult) -> bool:
    """Not delivered, worth retrying: neither permanent nor poison."""
    return not result.delivered and not result.permanent and not result.poison


def assert_refused(result: AttemptResult, reason: str) -> None:
    assert not result.delivered and result.status_code is None
    assert result.permanent and result.poison and result.refused, result
    assert result.error is not None and result.error.startswith("refused: ")
    assert reason in result.error, result.error


# The request itself


async def test_posts_the_signed_body_with_the_documented_headers(make_client: MakeClient) -> None:
    async with serving() as server:
        job = make_job(callback_url=server.url("/hooks/in?source=reminderd"))
        result = await make_client().send(job)
    assert result.delivered and result.status_code == 200 and result.error is None
    [request] = server.requests
    assert (request.method, request.target) == ("POST", "/hooks/in?source=reminderd")
    assert request.version == "HTTP/1.1"
    assert request.body == callback_body(job)
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["content-length"] == str(len(request.body))
    assert request.headers["user-agent"].startswith("reminderd/")
    assert request.headers["webhook-id"] == job.webhook_id
    Webhook(TEST_SECRET).verify(request.body, request.headers)  # raises unless the signature verifies
    # No compression asked for: an error body's excerpt must be readable text, not gzip.
    assert request.headers.get("accept-encoding", "identity") == "identity"


async def test_credentials_in_the_url_go_as_basic_auth(make_client: MakeClient) -> None:
    async with serving(respond(500, b"no")) as server:
        result = await send(make_client(), server.url().replace("://", "://hook%20user:s3cr%40t@"))
    [request] = server.requests
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"hook user:s3cr@t").decode()
    assert result.error == "HTTP 500: no"


# Keep-alive


async def test_sequential_callbacks_reuse_one_connection(make_client: MakeClient) -> None:
    client = make_client()
    async with serving() as server:
        results = [await send(client, server.url(), id=n) for n in range(5)]
    assert all(result.delivered for result in results)
    assert (server.connections, len(server.requests)) == (1, 5)


async def test_concurrent_callbacks_open_one_connection_each_and_reuse_them(make_client: MakeClient) -> None:
    client = make_client()
    async with serving() as server:
        first = await asyncio.gather(*(send(client, server.url(), id=n) for n in range(8)))
        opened = server.connections
        second = await asyncio.gather(*(send(client, server.url(), id=n) for n in range(8)))
    assert all(result.delivered for result in first + second)
    assert 1 <= opened <= 8
    assert server.connections == opened  # the second round found them all idle
    assert len(server.requests) == 16


async def test_connection_close_is_honoured(make_client: MakeClient) -> None:
    client = make_client()
    async with serving(respond(200, close=True)) as server:
        results = [await send(client, server.url(), id=n) for n in range(3)]
    assert all(result.delivered for result in results)
    assert (server.connections, len(server.requests)) == (3, 3)


async def test_an_http_1_0_answer_closes_the_connection(make_client: MakeClient) -> None:
    client = make_client()
    async with serving(respond(200, version="HTTP/1.0")) as server:
        results = [await send(client, server.url(), id=n) for n in range(2)]
    assert all(result.delivered for result in results)
    assert server.connections == 2


async def test_a_connection_the_receiver_closed_while_idle_is_not_reused(make_client: MakeClient) -> None:
    # The receiver answers keep-alive, then closes anyway (idle timeout): the next callback goes out
    # on a new connection, as one attempt, with no error.
    client = make_client()
    async with serving(raw(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as server:
        first = await send(client, server.url(), id=1)
        second = await send(client, server.url(), id=2)
    assert first.delivered and second.delivered and second.error is None
    assert (server.connections, len(server.requests)) == (2, 2)


async def test_a_close_crossing_a_request_on_a_reused_connection_is_retried_once_fresh(
    make_client: MakeClient,
) -> None:
    # The receiver's idle close races our next request: it reads it and closes without a byte of an
    # answer. The client sends it once more on a fresh connection, as curl and Go do for requests
    # carrying an idempotency key (webhook-id): the receiver deduplicates by it.
    async def close_silently(*_: Any) -> bool:
        return False

    client = make_client()
    async with serving(respond(200), close_silently, respond(200)) as server:
        first = await send(client, server.url(), id=1)
        second = await send(client, server.url(), id=2)
    assert first.delivered and second.delivered
    assert server.connections == 2
    assert [r.connection for r in server.requests] == [1, 1, 2]
    assert server.requests[1].headers["webhook-id"] == server.requests[2].headers["webhook-id"]


async def test_a_fresh_connection_closed_without_an_answer_is_one_failed_attempt(
    make_client: MakeClient,
) -> None:
    async def close_silently(*_: Any) -> bool:
        return False

    async with serving(close_silently) as server:
        result = await send(make_client(), server.url())
    assert is_failed_attempt(result) and result.status_code is None
    assert result.error == "connection closed by the receiver before any answer"
    assert (server.connections, len(server.requests)) == (1, 1)


async def test_the_per_endpoint_limit_caps_exchanges_in_flight() -> None:
    # Http1Client's own knob (issue 15 will set it per endpoint): 5 callbacks, at most 2 at a time.
    release = asyncio.Semaphore(0)
    in_flight = peak = 0

    async def held(_request: Any, _reader: Any, writer: asyncio.StreamWriter) -> bool:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await release.acquire()
        in_flight -= 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return True

    client = Http1Client(LOOPBACK_V4, max_connections_per_endpoint=2)
    try:
        async with serving(held) as server:
            posts = [asyncio.ensure_future(client.post(URL(server.url()), b"{}", (), 5)) for _ in range(5)]
            for arrived in (2, 3, 4, 5, 5):
                await server.wait_for_requests(arrived)
                release.release()
            responses = await asyncio.gather(*posts)
    finally:
        await client.close()
    assert [response.status for response in responses] == [200] * 5
    assert peak == 2 and server.connections == 2


# Framing of the answer


async def test_chunked_answers(make_client: MakeClient) -> None:
    client = make_client()
    async with serving(chunked(200, b"ok"), chunked(500, b"the data", b"base is ", b"down")) as server:
        delivered = await send(client, server.url(), id=1)
        failed = await send(client, server.url(), id=2)
    assert delivered.delivered
    assert failed.status_code == 500 and failed.error == "HTTP 500: the database is down"
    assert server.connections == 1  # a complete chunked answer keeps the connection


async def test_content_length_answers_keep_the_connection(make_client: MakeClient) -> None:
    client = make_client()
    async with serving(respond(503, b"busy,\r\n  try   later"), respond(204)) as server:
        failed = await send(client, server.url(), id=1)
        delivered = await send(client, server.url(), id=2)
    assert failed.error == "HTTP 503: busy, try later"  # whitespace folded
    assert is_failed_attempt(failed)
    assert delivered.delivered and delivered.status_code == 204
    assert server.connections == 1


async def test_a_body_ended_by_closing_the_connection(make_client: MakeClient) -> None:
    async with serving(raw(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\nupstream is down")) as server:
        result = await send(make_client(), server.url())
    assert result.status_code == 502 and result.error == "HTTP 502: upstream is down"


async def test_permanent_and_retryable_statuses(make_client: MakeClient) -> None:
    client = make_client()
    async with serving(respond(404), respond(410), respond(408), respond(429), respond(500)) as server:
        results = [await send(client, server.url(), id=n) for n in range(5)]
    assert [(r.status_code, r.permanent) for r in results] == [
        (404, True), (410, True), (408, False), (429, False), (500, False)
    ]
    assert not any(r.poison or r.refused for r in results)


@pytest.mark.parametrize("status", [200, 500])
async def test_a_long_body_is_dropped_after_the_excerpt(make_client: MakeClient, status: int) -> None:
    client = make_client()
    text = b"0123456789" * 100_000  # 1 MB
    async with serving(respond(status, text)) as server:
        first = await send(client, server.url(), id=1)
        second = await send(client, server.url(), id=2)
    assert first.delivered is (status == 200)
    if status == 500:
        assert first.error is not None
        assert first.error == "HTTP 500: " + text[:200].decode()
    assert second.status_code == status
    assert server.connections == 2  # not read to its end: the connection was dropped, not reused


async def test_a_compressed_error_body_stays_as_sent(make_client: MakeClient) -> None:
    # Nothing is decompressed (and nothing compressed asked for): the excerpt is what came, bounded.
    gzipped = bytes(range(256)) * 4
    async with serving(respond(500, gzipped, [("Content-Encoding", "gzip")])) as server:
        result = await send(make_client(), server.url())
    assert result.status_code == 500 and result.error is not None
    assert "\x00" not in result.error and len(result.error) <= len("HTTP 500: ") + 200


# Timeout


async def test_a_slow_receiver_hits_the_total_timeout(make_client: MakeClient) -> None:
    async with serving(never_answers) as server:
        result = await send(make_client(callback_timeout_s=0.5), server.url())
    assert is_failed_attempt(result) and result.status_code is None
    assert result.error == "timed out after 0.5s"
    assert 450 <= result.duration_ms < 2500
    assert (server.connections, len(server.requests)) == (1, 1)


# 1xx


async def test_informational_answers_are_skipped(make_client: MakeClient) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    busy = b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy"
    client = make_client()
    script = raw(informational(100, 103) + ok, keep_open=True), raw(informational(102) + busy)
    async with serving(*script) as server:
        delivered = await send(client, server.url(), id=1)
        failed = await send(client, server.url(), id=2)
    assert delivered.delivered and delivered.status_code == 200
    assert failed.status_code == 503 and failed.error == "HTTP 503: busy"
    assert server.connections == 1


async def test_an_unasked_protocol_switch_is_a_failed_attempt(make_client: MakeClient) -> None:
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    async with serving(raw(answer, keep_open=True)) as server:
        result = await send(make_client(callback_timeout_s=1), server.url())
    assert is_failed_attempt(result) and result.error is not None
    assert "timed out" not in result.error


async def test_garbage_instead_of_http_is_a_failed_attempt(make_client: MakeClient) -> None:
    async with serving(raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", keep_open=True)) as server:
        result = await send(make_client(callback_timeout_s=1), server.url())
    assert is_failed_attempt(result) and result.error is not None
    assert "timed out" not in result.error


# Redirects


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_failed_attempts_never_followed(make_client: MakeClient, status: int) -> None:
    async with serving() as target, serving(respond(status, headers=[("Location", target.url())])) as server:
        result = await send(make_client(), server.url())
    assert is_failed_attempt(result) and result.status_code == status
    assert result.error is not None and result.error.startswith(f"HTTP {status}")
    assert "redirects are not followed: point the callback_url at the final address" in result.error
    assert target.connections == 0


# Retry-After


async def test_retry_after_in_seconds_and_as_an_http_date(make_client: MakeClient) -> None:
    an_hour_on = email.utils.formatdate(time.time() + 3600, usegmt=True)
    client = make_client()
    async with serving(
        respond(503, headers=[("Retry-After", "120")]),
        respond(429, headers=[("retry-after", an_hour_on)]),
        respond(503, headers=[("Retry-After", "soon")]),
    ) as server:
        seconds, date, garbage = [await send(client, server.url(), id=n) for n in range(3)]
    assert (seconds.status_code, seconds.retry_after_s) == (503, 120.0)
    assert date.status_code == 429 and date.retry_after_s is not None and 3590 <= date.retry_after_s <= 3600
    assert not date.permanent
    assert garbage.status_code == 503 and garbage.retry_after_s is None


# IPv6 loopback


async def test_ipv6_loopback_literal(make_client: MakeClient) -> None:
    client = make_client(allowed_callback_networks=LOOPBACK_V6)
    async with serving(host="::1") as server:
        results = [await send(client, server.url(), id=n) for n in range(3)]
    assert all(result.delivered for result in results)
    assert server.connections == 1
    assert server.requests[0].headers["host"] == f"[::1]:{server.port}"


async def test_a_name_with_only_an_ipv6_answer(make_client: MakeClient) -> None:
    resolver, asked = fixed_dns({"v6.hooks.test": ["::1"]})
    client = make_client(resolver=resolver, allowed_callback_networks=LOOPBACK_V6)
    async with serving(host="::1") as server:
        result = await send(client, server.url(host="v6.hooks.test"))
    assert result.delivered and asked == ["v6.hooks.test"]
    assert server.requests[0].headers["host"] == f"v6.hooks.test:{server.port}"


# TLS


async def test_tls_verifies_the_name_and_sends_it_as_sni(
    make_client: MakeClient, server_tls: Callable[[], ssl.SSLContext], client_tls: ssl.SSLContext
) -> None:
    resolver, _ = fixed_dns({"hooks.test": ["127.0.0.1"]})
    client = make_client(resolver=resolver, ssl_context=client_tls)
    async with serving(tls=server_tls()) as server:
        results = [await send(client, server.url(host="hooks.test"), id=n) for n in range(3)]
    assert all(result.delivered for result in results)
    assert server.server_names == ["hooks.test"]  # one handshake: the connection was reused
    assert server.connections == 1


async def test_tls_to_an_address_in_the_certificate(
    make_client: MakeClient, server_tls: Callable[[], ssl.SSLContext], client_tls: ssl.SSLContext
) -> None:
    async with serving(tls=server_tls()) as server:
        result = await send(make_client(ssl_context=client_tls), server.url())
    assert result.delivered
    assert server.server_names == [None]  # no SNI for an address


async def test_tls_refuses_a_certificate_for_another_name(
    make_client: MakeClient, server_tls: Callable[[], ssl.SSLContext], client_tls: ssl.SSLContext
) -> None:
    resolver, _ = fixed_dns({"other.test": ["127.0.0.1"]})
    client = make_client(resolver=resolver, ssl_context=client_tls)
    async with serving(tls=server_tls()) as server:
        result = await send(client, server.url(host="other.test"))
    assert is_failed_attempt(result) and result.status_code is None
    assert result.error is not None and result.error.startswith("TLS certificate not accepted: ")
    assert "other.test" in result.error or "mismatch" in result.error.lower()
    assert server.server_names == ["other.test"] and server.requests == []


async def test_tls_refuses_a_certificate_from_an_unknown_ca(
    make_client: MakeClient, server_tls: Callable[[], ssl.SSLContext]
) -> None:
    resolver, _ = fixed_dns({"hooks.test": ["127.0.0.1"]})
    client = make_client(resolver=resolver, ssl_context=ssl.create_default_context())
    async with serving(tls=server_tls()) as server:
        result = await send(client, server.url(host="hooks.test"))
    assert is_failed_attempt(result)
    assert result.error is not None and result.error.startswith("TLS certificate not accepted: ")
    assert server.requests == []


async def test_https_to_a_plain_http_server_fails_within_the_timeout(make_client: MakeClient) -> None:
    async with serving(never_answers) as server:
        result = await send(make_client(callback_timeout_s=0.5), server.url(scheme="https"))
    assert is_failed_attempt(result) and result.error == "timed out after 0.5s"  # no ServerHello comes


# SSRF: decided on the address actually connected to. 127.0.0.1 is allowed; 127.0.0.2 (where a
# server counts any connection) and ::1 stand for the operator's internal network.


@pytest.fixture
async def internal() -> AsyncIterator[ScriptedServer]:
    async with serving(host="127.0.0.2") as server:
        yield server
    assert server.connections == 0, "BUG: the client connected to a refused address"


async def test_a_literal_refused_address(make_client: MakeClient, internal: ScriptedServer) -> None:
    result = await send(make_client(), internal.url())
    assert_refused(result, "callback address 127.0.0.2 is not a public address")


@pytest.mark.parametrize("host", ["2130706434", "127.2", "0x7f.2", "0x7f000002", "127.0.2"])
async def test_numeric_host_forms_are_refused(
    make_client: MakeClient, internal: ScriptedServer, host: str
) -> None:
    result = await send(make_client(), internal.url(host=host))
    assert_refused(result, "is an address in a non-standard form")


async def test_an_ipv4_mapped_ipv6_literal_is_judged_by_its_ipv4(
    make_client: MakeClient, internal: ScriptedServer
) -> None:
    result = await send(make_client(), internal.url(host="::ffff:127.0.0.2"))
    assert_refused(result, "127.0.0.2 is not a public address")


async def test_a_name_resolving_to_a_refused_address(make_client: MakeClient, internal: ScriptedServer) -> None:
    resolver, asked = fixed_dns({"internal.test": ["127.0.0.2"]})
    result = await send(make_client(resolver=resolver), internal.url(host="internal.test"))
    assert_refused(result, "internal.test resolves to 127.0.0.2 is not a public address")
    assert asked == ["internal.test"]


@pytest.mark.parametrize(
    "answers",
    [["127.0.0.1", "127.0.0.2"], ["127.0.0.2", "127.0.0.1"], ["::1", "127.0.0.1"], ["127.0.0.1", "::1"]],
    ids=["allowed-first", "refused-first", "aaaa-refused", "aaaa-refused-last"],
)
async def test_mixed_answers_with_one_refused_address_refuse_the_name(
    make_client: MakeClient, internal: ScriptedServer, answers: list[str]
) -> None:
    async with serving() as allowed:
        resolver, _ = fixed_dns({"mixed.test": answers})
        result = await send(make_client(resolver=resolver), allowed.url(host="mixed.test"))
    assert_refused(result, "mixed.test resolves to ")
    assert allowed.connections == 0  # not even the allowed address: a mixed answer is a rebinding attempt


async def test_the_connection_goes_to_the_checked_address_and_each_connection_is_checked(
    make_client: MakeClient, internal: ScriptedServer
) -> None:
    # A rebinding name: allowed at the first lookup, internal at the next. The client connects to
    # what it checked (the name is unknown to the system's DNS), and checks again for a new connection.
    answers = [["127.0.0.1"], ["127.0.0.2"]]

    async def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0)

    client = make_client(resolver=rebinding)
    async with serving(respond(200, close=True)) as allowed:
        url = allowed.url(host="rebind.test")
        first = await send(client, url, id=1)
        second = await send(client, url, id=2)
    assert first.delivered
    assert allowed.requests[0].headers["host"] == f"rebind.test:{allowed.port}"
    assert_refused(second, "rebind.test resolves to 127.0.0.2 is not a public address")


async def test_a_name_is_resolved_once_per_connection_not_per_callback(make_client: MakeClient) -> None:
    resolver, asked = fixed_dns({"hooks.test": ["127.0.0.1"]})
    client = make_client(resolver=resolver)
    async with serving() as server:
        results = [await send(client, server.url(host="hooks.test"), id=n) for n in range(4)]
    assert all(result.delivered for result in results)
    assert asked == ["hooks.test"]


async def test_the_next_address_is_tried_when_one_refuses_the_connection(make_client: MakeClient) -> None:
    async with serving(host="127.0.0.3") as server:
        with socket.socket() as probe:  # make sure nothing listens on 127.0.0.1 at that port
            assert probe.connect_ex(("127.0.0.1", server.port)) != 0
        resolver, _ = fixed_dns({"two.test": ["127.0.0.1", "127.0.0.3"]})
        client = make_client(resolver=resolver, allowed_callback_networks=ALL_LOOPBACK)
        result = await send(client, server.url(host="two.test"))
    assert result.delivered and server.connections == 1


async def test_an_unknown_name_is_a_failed_attempt(make_client: MakeClient) -> None:
    resolver, _ = fixed_dns({})
    result = await send(make_client(resolver=resolver), "http://nowhere.test:8080/cb")
    assert is_failed_attempt(result)
    assert result.error == "cannot resolve nowhere.test: Name or service not known"


@pytest.mark.parametrize(("host", "why"), [
    ("exa..mple.com", "with an empty label"), ("a" * 64 + ".example", "with a label longer than 63 characters"),
], ids=["empty-label", "label-over-63"])
async def test_a_host_that_is_no_valid_name_is_refused_not_a_crash(
    make_client: MakeClient, host: str, why: str
) -> None:
    # The system's resolver would give up on such a name before asking any DNS server (its IDNA
    # encoding fails: a UnicodeError, no OSError); the callback URL rule refuses it first. Every
    # attempt would fail alike: a refusal naming the host (dead-lettered at once), not an
    # exception out of send().
    result = await send(make_client(), f"http://{host}:8080/cb")
    assert_refused(result, f'callback_url has host "{host}" {why}')


async def test_the_http1_client_refuses_a_name_the_resolver_cannot_encode() -> None:
    # Behind the rule above: should a name pass it and still fail the system resolver's IDNA
    # encoding (a UnicodeError, no OSError), the client refuses it, naming the host and the reason.
    async def resolve(host: str, port: int) -> list[str]:
        raise UnicodeError("encoding with 'idna' codec failed") from UnicodeError("label empty or too long")

    client = Http1Client([ipaddress.ip_network("127.0.0.0/8")], resolver=resolve)
    try:
        with pytest.raises(CallbackRefused) as refused:
            await client.post(URL("http://odd.example:8080/cb"), b"{}", [], 1.0)
    finally:
        await client.close()
    assert str(refused.value) == ("callback_url host 'odd.example' is not a valid host name "
                                  "(label empty or too long)")


async def test_a_closed_port_is_a_failed_attempt(make_client: MakeClient) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = await send(make_client(), f"http://127.0.0.1:{port}/cb")
    assert is_failed_attempt(result)
    assert result.error == f"connection failed: Connection refused (127.0.0.1 port {port})"


# Receivers that misbehave (issue 16): each costs one attempt bounded by the timeout, keeps no more
# than the excerpt, and never holds up another endpoint.

TIMEOUT_S = 0.6


def dribbling() -> Answer:
    return dribble(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", interval_s=0.05)


async def test_a_receiver_dribbling_bytes_hits_the_total_timeout(make_client: MakeClient) -> None:
    async with serving(dribbling()) as server:
        result = await send(make_client(callback_timeout_s=TIMEOUT_S), server.url())
    assert is_failed_attempt(result) and result.error == f"timed out after {TIMEOUT_S:g}s"
    assert TIMEOUT_S * 1000 - 50 <= result.duration_ms < TIMEOUT_S * 1000 + 2000
    assert (server.connections, len(server.requests)) == (1, 1)


async def test_a_receiver_sending_headers_and_never_a_body_hits_the_timeout(make_client: MakeClient) -> None:
    async with serving(headers_without_body()) as server:
        result = await send(make_client(callback_timeout_s=TIMEOUT_S), server.url())
    assert is_failed_attempt(result) and result.error == f"timed out after {TIMEOUT_S:g}s"
    assert (server.connections, len(server.requests)) == (1, 1)


@pytest.mark.parametrize("status", [200, 500])
async def test_a_100_mb_answer_is_cut_after_the_excerpt(make_client: MakeClient, status: int) -> None:
    client = make_client(callback_timeout_s=5)
    server = await ScriptedServer([], host="127.0.0.1").start()
    server.script = [huge_body(server, status, 100 * 1024 * 1024)]
    try:
        tracemalloc.start()
        try:
            result = await send(client, server.url())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        await server.stop()
    assert result.status_code == status and result.delivered is (status == 200)
    if status == 500:
        assert result.error == "HTTP 500: " + "x" * 200
    assert peak < 2 * 1024 * 1024, f"the client held {peak / 1e6:.1f} MB for a 100 MB answer"
    assert server.bytes_sent < 20 * 1024 * 1024  # the client hung up long before the end
    assert len(server.requests) == 1


async def test_a_receiver_resetting_mid_request_is_one_failed_attempt(make_client: MakeClient) -> None:
    async with serving(reset) as server:
        result = await send(make_client(callback_timeout_s=TIMEOUT_S), server.url())
    assert is_failed_attempt(result) and result.status_code is None
    assert result.error is not None and "reset" in result.error
    assert (server.connections, len(server.requests)) == (1, 1)  # no silent second try


# Its own timeout: a healthy callback here shares the event loop with the test's servers (one of
# them streaming 100 MB), so on a loaded machine it can take a few hundred milliseconds; what the
# test proves is that it never waits for a bad one's timeout (it takes less than half of it).
HOLD_UP_TIMEOUT_S = 2.0


async def test_misbehaving_receivers_never_hold_up_a_healthy_endpoint(make_client: MakeClient) -> None:
    client = make_client(callback_timeout_s=HOLD_UP_TIMEOUT_S)
    async with (
        serving() as healthy,
        serving(dribbling()) as dribbler,
        serving(headers_without_body()) as mute,
        serving(never_answers) as silent,
        serving(reset) as resetter,
    ):
        server = await ScriptedServer([], host="127.0.0.1").start()
        server.script = [huge_body(server, 200, 100 * 1024 * 1024)]
        bad_urls = [dribbler.url(), mute.url(), silent.url(), resetter.url(), server.url()]
        bad = [asyncio.ensure_future(send(client, url, id=n)) for n in range(3) for url in bad_urls]
        healthy_results: list[AttemptResult] = []
        # The dribbler, the mute and the silent one end only at the timeout; the others sooner.
        slow_bad = [task for index, task in enumerate(bad) if index % 5 in (0, 1, 2)]
        while not all(task.done() for task in slow_bad):
            healthy_results.append(await send(client, healthy.url(), id=1000 + len(healthy_results)))
        bad_results = await asyncio.gather(*bad)
        await server.stop()
    assert len(healthy_results) >= 20, "the healthy endpoint's callbacks stopped flowing"
    assert all(result.delivered for result in healthy_results)
    assert max(result.duration_ms for result in healthy_results) < HOLD_UP_TIMEOUT_S * 1000 / 2
    assert all(not result.delivered or result.status_code == 200 for result in bad_results)
    assert all(result.duration_ms < HOLD_UP_TIMEOUT_S * 1000 + 2000 for result in bad_results)
    assert healthy.connections == 1
