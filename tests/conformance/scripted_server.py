"""A real HTTP/1.1 server on a loopback address whose answers each test scripts byte by byte.

It counts connections, records every request and the TLS server name (SNI) each handshake asked
for, and answers with the next `Answer` of its script (the last one repeats). An answer writes
whatever it likes and says whether the connection stays open for another request.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from reminderd.jobs import Job
from reminderd.outcome import AttemptResult
from reminderd.ssrf import Resolver


class Client(Protocol):
    """What the daemon uses of a callback client: the interface under test."""

    async def send(self, job: Job) -> AttemptResult: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    connection: int  # 1 for the server's first connection, 2 for its second, …


Answer = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class ScriptedServer:
    script: Sequence[Answer]
    host: str = "127.0.0.1"
    ssl_context: ssl.SSLContext | None = None
    port: int = 0
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    bytes_sent: int = 0  # by answers that count what they write (huge bodies)
    failures: list[BaseException] = field(default_factory=list)  # the server's own bugs: none expected
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> ScriptedServer:
        if self.ssl_context is not None:
            self.ssl_context.sni_callback = self._sni
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.ssl_context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def url(self, path: str = "/cb", host: str | None = None, scheme: str | None = None) -> str:
        host = host or self.host
        if ":" in host:
            host = f"[{host}]"
        scheme = scheme or ("https" if self.ssl_context else "http")
        return f"{scheme}://{host}:{self.port}{path}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_for_requests(self, count: int, timeout_s: float = 5) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.requests) < count:
                self._changed.clear()
                await self._changed.wait()

    def _sni(self, _sslobj: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        number = self.connections
        try:
            while True:
                request = await _read_request(reader, number)
                if request is None:
                    break
                self.requests.append(request)
                self._changed.set()
                answer = self.script[min(len(self.requests), len(self.script)) - 1]
                if not await answer(request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away: what several tests do on purpose
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failures.append(exc)
        finally:
            self._handlers.discard(task)
            writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader, connection: int) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, version = request_line.split(" ", 2)
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, target, version, headers, body, connection)


# Answers


def respond(
    status: int = 200, body: bytes = b"", headers: Sequence[tuple[str, str]] = (), *, close: bool = False,
    reason: str = "Whatever", version: str = "HTTP/1.1",
) -> Answer:
    """A Content-Length answer; `close` adds `Connection: close` and closes after it."""
    head = [f"{version} {status} {reason}", f"Content-Length: {len(body)}", *(f"{n}: {v}" for n, v in headers)]
    if close:
        head.append("Connection: close")
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

    async def answer(_request: Request, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return not close and version == "HTTP/1.1"

    return answer


def raw(data: bytes, *, keep_open: bool = False) -> Answer:
    """Exactly these bytes; then the connection closes unless `keep_open`."""

    async def answer(_request: Request, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return keep_open

    return answer


def chunked(status: int, *chunks: bytes) -> Answer:
    """A chunked answer, each chunk written (and drained) on its own."""

    async def answer(_request: Request, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(f"HTTP/1.1 {status} Chunked\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        for chunk in chunks:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    return answer


async def never_answers(_request: Request, reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> bool:
    """Holds the request until the client gives up and closes (read returns at its EOF or reset)."""
    while await reader.read(1024):
        pass
    return False


def dribble(data: bytes, interval_s: float) -> Answer:
    """One byte every `interval_s`, each a sign of life that only a total deadline can stop."""

    async def answer(_request: Request, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        for index in range(len(data)):
            writer.write(data[index : index + 1])
            await writer.drain()
            await asyncio.sleep(interval_s)  # the misbehaviour under test, not synchronisation
        return False

    return answer


def headers_without_body(status: int = 200, length: int = 100) -> Answer:
    """Promises a body (Content-Length) and never sends it."""

    async def answer(request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(f"HTTP/1.1 {status} OK\r\nContent-Length: {length}\r\n\r\n".encode())
        await writer.drain()
        return await never_answers(request, reader, writer)

    return answer


def huge_body(server: ScriptedServer, status: int, size: int, chunk: int = 64 * 1024) -> Answer:
    """A `size`-byte body written as fast as the client reads it; counts what went out."""
    block = b"x" * chunk

    async def answer(_request: Request, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(f"HTTP/1.1 {status} Big\r\nContent-Length: {size}\r\n\r\n".encode())
        left = size
        while left > 0:
            writer.write(block[: min(chunk, left)])
            await writer.drain()
            server.bytes_sent += min(chunk, left)
            left -= chunk
        return False

    return answer


async def reset(_request: Request, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Resets the connection (RST, not FIN) once the request is in, before any answer."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    return False


def informational(*statuses: int) -> bytes:
    """1xx answers to send ahead of a final one."""
    return b"".join(b"HTTP/1.1 %d Informational\r\n\r\n" % status for status in statuses)


# Names


def fixed_dns(answers: Mapping[str, Sequence[str]]) -> tuple[Resolver, list[str]]:
    """A resolver answering from `answers` (other names do not exist), and the names it was asked."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(answers[host])

    return resolve, asked
