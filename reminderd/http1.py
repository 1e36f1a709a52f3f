"""A small HTTP/1.1 client for callbacks: POST a short body, read the status and a body's first bytes.

It does only what callbacks need, in plain sight (bench/http_clients.py measures why not aiohttp):
- a pool of keep-alive connections per (scheme, host, port), optionally limited per endpoint;
- names resolved by an injectable resolver, every address checked by the SSRF guard, and the
  connection made to the very address that was checked (TLS still verifies, and sends as SNI, the
  URL's host);
- the request written in one go; the response parsed by httptools (llhttp, Node's parser);
- one deadline for the whole exchange, waiting for a slot, resolving and connecting included (on
  the common path, a request on an idle keep-alive connection, it is one timer on the answer);
- at most EXCERPT_BYTES of a body kept and at most DRAIN_BYTES read to keep a connection, else the
  connection is closed; 1xx answers skipped; redirects never followed; nothing decompressed (no
  compression is asked for).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import httptools
from yarl import URL

from .exceptions import CallbackFailed, CallbackRefused
from .settings import Network
from .ssrf import Resolver, checked_addresses, refusal, system_resolver

EXCERPT_BYTES = 256  # never keep more of a response body than this
DRAIN_BYTES = 64 * 1024  # read (and drop) at most this much of a body to reuse its connection
MAX_HEAD_BYTES = 64 * 1024  # status line and headers, informational answers included
IDLE_S = 15.0  # an idle connection older than this is closed, never reused
MAX_URLS_PER_ENDPOINT = 1024  # request heads kept per endpoint (most tenants use one URL)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    retry_after: str | None
    excerpt: bytes  # the body's first EXCERPT_BYTES at most


class Http1Client:
    """POSTs over pooled keep-alive connections. `max_connections_per_endpoint` caps the exchanges
    in flight to one (scheme, host, port); None leaves that to the caller's own concurrency."""

    def __init__(
        self,
        allowed: Sequence[Network],
        *,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
        headers: Sequence[tuple[str, str]] = (),
        max_connections_per_endpoint: int | None = None,
        idle_s: float = IDLE_S,
    ) -> None:
        self._allowed = tuple(allowed)
        self._resolve = resolver
        self._ssl_context = ssl_context
        self._fixed_headers = "".join(f"{name}: {value}\r\n" for name, value in headers)
        self._limit = max_connections_per_endpoint
        self._idle_s = idle_s
        self._endpoints: dict[tuple[str, str, int], _Endpoint] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    async def post(
        self, url: URL, body: bytes, headers: Sequence[tuple[str, str]], timeout_s: float
    ) -> Response:
        """The final answer to one POST, or CallbackRefused, CallbackFailed or TimeoutError."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + timeout_s
        endpoint = self._endpoint(url)
        request = endpoint.head(url, len(body), headers) + body
        endpoint.active += 1
        try:
            if endpoint.slots is None and (connection := endpoint.take_idle(now - self._idle_s)) is not None:
                try:
                    return await self._use(endpoint, connection, request, deadline)
                except _Stale:
                    pass  # the server closed it while idle, as our request crossed: once more, fresh
            async with asyncio.timeout_at(deadline):
                if endpoint.slots is None:
                    return await self._exchange(endpoint, request, deadline)
                async with endpoint.slots:
                    return await self._exchange(endpoint, request, deadline)
        finally:
            endpoint.active -= 1

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for endpoint in self._endpoints.values():
            for connection in endpoint.idle:
                connection.abort()
        self._endpoints.clear()

    def _endpoint(self, url: URL) -> _Endpoint:
        host, port = url.raw_host or "", url.port or 0
        key = (url.scheme, host, port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = _Endpoint(url, self._fixed_headers, self._limit)
            self._schedule_sweep()
        return endpoint

    async def _exchange(self, endpoint: _Endpoint, request: bytes, deadline: float) -> Response:
        connection = endpoint.take_idle(asyncio.get_running_loop().time() - self._idle_s)
        if connection is not None:
            try:
                return await self._use(endpoint, connection, request)
            except _Stale:
                pass  # the server closed it while idle, as our request crossed: once more, fresh
        connection = await self._connect(endpoint, deadline)
        try:
            return await self._use(endpoint, connection, request)
        except _Stale as stale:
            raise CallbackFailed(stale.reason) from None

    async def _use(
        self, endpoint: _Endpoint, connection: _Connection, request: bytes, deadline: float | None = None
    ) -> Response:
        """One exchange on `connection`; TimeoutError at `deadline` when given (else the caller's
        asyncio.timeout bounds it)."""
        waiter = connection.exchange(request)
        timer = None if deadline is None else asyncio.get_running_loop().call_at(deadline, _time_out, waiter)
        try:
            response = await waiter
        except BaseException:
            connection.abort()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if connection.reusable:
            connection.idle_since = asyncio.get_running_loop().time()
            endpoint.idle.append(connection)
            self._schedule_sweep()
        else:
            connection.abort()
        return response

    async def _connect(self, endpoint: _Endpoint, deadline: float) -> _Connection:
        if endpoint.literal is not None:
            reason = refusal(endpoint.literal, self._allowed)
            if reason:
                raise CallbackRefused(reason)
            addresses = [endpoint.literal]
        else:
            try:
                addresses = await checked_addresses(endpoint.host, endpoint.port, self._resolve, self._allowed)
            except OSError as exc:
                raise CallbackFailed(f"cannot resolve {endpoint.host}: {_strerror(exc)}") from None
            except UnicodeError as exc:  # not a name DNS can hold (an empty label, one over 63 characters)
                why = exc.__cause__ or exc  # the idna codec's own reason, under "encoding … failed"
                raise CallbackRefused(
                    f"callback_url host {endpoint.host!r} is not a valid host name ({why})"
                ) from None
            if not addresses:
                raise CallbackFailed(f"cannot resolve {endpoint.host}: no address")
        loop = asyncio.get_running_loop()
        failure = CallbackFailed("connection failed")
        for index, address in enumerate(addresses):
            left = len(addresses) - index
            if left == 1:
                return await self._open(endpoint, address)
            # Leave the later addresses their share of the time: a silent first one must not eat it all.
            try:
                async with asyncio.timeout((deadline - loop.time()) / left):
                    return await self._open(endpoint, address)
            except TimeoutError:
                failure = CallbackFailed(f"connection failed: no answer from {address}")
            except CallbackFailed as exc:
                failure = exc
        raise failure

    async def _open(self, endpoint: _Endpoint, address: str) -> _Connection:
        context = None
        if endpoint.tls:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()  # loading the CAs costs ~20 ms: once
            context = self._ssl_context
        loop = asyncio.get_running_loop()
        try:
            _transport, connection = await loop.create_connection(
                lambda: _Connection(loop), address, endpoint.port,
                ssl=context, server_hostname=endpoint.server_name if context else None,
            )
        except ssl.SSLCertVerificationError as exc:
            raise CallbackFailed(f"TLS certificate not accepted: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise CallbackFailed(f"TLS failed: {exc.reason or exc}") from None
        except OSError as exc:
            where = f"{address} port {endpoint.port}"
            raise CallbackFailed(f"connection failed: {_strerror(exc)} ({where})") from None
        return connection

    def _schedule_sweep(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._idle_s, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle too long; forget endpoints with nothing open or in flight."""
        self._sweeper = None
        oldest = asyncio.get_running_loop().time() - self._idle_s
        for key, endpoint in list(self._endpoints.items()):
            kept = []
            for connection in endpoint.idle:
                if connection.closed or connection.idle_since <= oldest:
                    connection.abort()
                else:
                    kept.append(connection)
            endpoint.idle = kept
            if not kept and not endpoint.active:
                del self._endpoints[key]
        if self._endpoints:
            self._schedule_sweep()


class _Endpoint:
    """One (scheme, host, port): its idle connections, its slots and its fixed request head."""

    def __init__(self, url: URL, fixed_headers: str, limit: int | None) -> None:
        self.tls = url.scheme == "https"
        self.host = url.raw_host or ""
        self.port = url.port or 0
        self.server_name = url.raw_host or ""  # an A-label as written: URL.host decodes it, and may raise
        try:
            ipaddress.ip_address(self.server_name)
        except ValueError:
            self.literal: str | None = None  # a name: resolved, and its answers checked, per connection
        else:
            self.literal = self.server_name
        host = f"[{self.host}]" if ":" in self.host else self.host
        if not url.is_default_port():
            host += f":{self.port}"
        self._fixed = f" HTTP/1.1\r\nHost: {host}\r\n{fixed_headers}"
        self._starts: dict[URL, str] = {}
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(limit) if limit is not None else None
        self.active = 0

    def head(self, url: URL, length: int, headers: Sequence[tuple[str, str]]) -> bytes:
        start = self._starts.get(url)
        if start is None:  # the request line and the fixed headers of this URL: once
            start = f"POST {url.raw_path_qs}{self._fixed}"
            if url.raw_user is not None:
                credentials = f"{url.user or ''}:{url.password or ''}".encode()
                start += f"Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"
            if len(self._starts) >= MAX_URLS_PER_ENDPOINT:
                self._starts.clear()
            self._starts[url] = start
        varying = "".join([f"{name}: {value}\r\n" for name, value in headers])
        return f"{start}Content-Length: {length}\r\n{varying}\r\n".encode("latin-1")

    def take_idle(self, oldest: float) -> _Connection | None:
        """The most recently used open connection (the least likely to be stale), if any."""
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed and connection.idle_since > oldest:
                return connection
            connection.abort()
        return None


class _Stale(Exception):
    """A reused connection closed before any byte of the answer: the request may go once more."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Connection(asyncio.Protocol):
    """One connection, one exchange at a time; the parser's callbacks fill in the answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._served = 0
        self._new_answer()

    def _new_answer(self) -> None:
        self._got_bytes = False
        self._head_bytes = 0
        self._final = False  # the final (non-1xx) status line and headers are in
        self._status = 0
        self._retry_after: str | None = None
        self._framed = False  # Content-Length or chunked; else the body ends when the connection does
        self._excerpt = b""
        self._body_bytes = 0

    def exchange(self, request: bytes) -> asyncio.Future[Response]:
        if self.closed or self._transport is None:
            raise _Stale("connection closed by the receiver before any answer")
        self._new_answer()
        self.reusable = False
        self._waiter = self._loop.create_future()
        self._transport.write(request)
        return self._waiter

    def abort(self) -> None:
        self.reusable = False
        if self._transport is not None and not self.closed:
            self._transport.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.abort()  # bytes nobody asked for (idle), or the rest of a body we stopped reading
            return
        self._got_bytes = True
        if not self._final:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("invalid HTTP response: an upgrade (101) that was not asked for")
        except httptools.HttpParserError as exc:
            self._fail(f"invalid HTTP response: {exc}")
        else:
            if not self._final and self._head_bytes > MAX_HEAD_BYTES:
                self._fail(f"invalid HTTP response: headers longer than {MAX_HEAD_BYTES // 1024} KiB")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._final and not self._framed and self._status not in (204, 304):
            self._finish(keep_alive=False)  # a body delimited by the end of the connection
            return
        if isinstance(exc, ConnectionResetError):
            reason = "connection reset by the receiver"
        elif exc is not None:
            reason = f"connection failed: {_strerror(exc)}"
        else:
            reason = "connection closed by the receiver"
        if not self._got_bytes:
            reason += " before any answer"
            if self._served:
                waiter.set_exception(_Stale(reason))
                return
        else:
            reason += " in the middle of its answer"
        waiter.set_exception(CallbackFailed(reason))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            self.abort()  # a second answer to one request
            return
        self._status, self._retry_after, self._framed = 0, None, False

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lowered in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if self._status >= 200:
            self._final = True

    def on_body(self, body: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            return
        if len(self._excerpt) < EXCERPT_BYTES:
            self._excerpt += body[: EXCERPT_BYTES - len(self._excerpt)]
        self._body_bytes += len(body)
        if self._body_bytes > DRAIN_BYTES:
            self._finish(keep_alive=False)  # the answer is known; reading on would only cost

    def on_message_complete(self) -> None:
        if self._status < 200:
            return  # informational (100 Continue, 103 Early Hints): the final answer follows
        if self._waiter is not None and not self._waiter.done():
            self._finish(keep_alive=self._parser.should_keep_alive())

    # ---

    def _finish(self, *, keep_alive: bool) -> None:
        assert self._waiter is not None
        self._served += 1
        self.reusable = keep_alive and not self.closed
        self._waiter.set_result(Response(self._status, self._retry_after, self._excerpt))

    def _fail(self, reason: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(CallbackFailed(reason))
        self.abort()


def _time_out(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _strerror(exc: BaseException) -> str:
    """The system's words for an OS error, without Python's "[Errno N]" or an address tuple."""
    errno = getattr(exc, "errno", None)
    if isinstance(errno, int) and errno > 0:
        return os.strerror(errno)
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
