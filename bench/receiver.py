"""A minimal, fast webhook receiver for the benchmark, run in its own process.

HTTP/1.1 keep-alive over an asyncio.Protocol on uvloop: parses the request line and headers,
reads a Content-Length body, answers `200 OK` with an empty body. Told to, it answers `503` to a
share of requests (drawn at random) and holds every answer for a fixed latency. Pipelined requests
on one connection are answered in one write. For each request it records, cheaply, the arrival
time (time.time()), the webhook-id header, the raw body and the status answered; the body's
"ref_id" and "scheduled_for" are extracted only when the bench asks for a dump, never on the hot
path.

The bench process talks to it over a multiprocessing Pipe (see ReceiverProcess), so the receiver
never shares an event loop, or a core's worth of Python, with the client under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import re
import socket
import time
from multiprocessing.connection import Connection
from typing import Any, cast

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEAD = 64 * 1024

_REF = re.compile(rb'"ref_id":"((?:[^"\\]|\\.)*)"')
_SCHEDULED = re.compile(rb'"scheduled_for":"([^"]*)"')


class Recorder:
    """What arrived: parallel lists, appended to on the hot path and read on request."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.ids: list[bytes] = []
        self.bodies: list[bytes] = []
        self.statuses: list[int] = []
        self.errors = 0
        self.connections = 0
        self.fail_ratio = 0.0
        self.latency_s = 0.0
        self.rng = random.Random(16)

    def reset(self) -> None:
        self.times = []
        self.ids = []
        self.bodies = []
        self.statuses = []
        self.errors = 0
        self.connections = 0
        self.fail_ratio = 0.0
        self.latency_s = 0.0

    def answers(self) -> list[tuple[float, str, str, str, int]]:
        """dump(), with the status each request was answered."""
        return [(*row, status) for row, status in zip(self.dump(), self.statuses, strict=True)]

    def dump(self) -> list[tuple[float, str, str, str]]:
        """(arrival time, webhook-id, ref_id, scheduled_for) per request, in arrival order."""
        rows = []
        for arrived, webhook_id, body in zip(self.times, self.ids, self.bodies, strict=True):
            ref = _REF.search(body)
            scheduled = _SCHEDULED.search(body)
            rows.append((
                arrived,
                webhook_id.decode("latin-1"),
                ref.group(1).decode() if ref else "",
                scheduled.group(1).decode() if scheduled else "",
            ))
        return rows


class HttpProtocol(asyncio.Protocol):
    __slots__ = ("buffer", "recorder", "transport")

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # create_server gives a stream transport
        self.recorder.connections += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        answered = 0
        replies: list[bytes] = []
        recorder = self.recorder
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self._reject()
                    return
                break
            head = bytes(buffer[:end])
            lowered = head.lower()
            length = 0
            at = lowered.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lowered.find(b"\r\n", at + 2)
                try:
                    length = int(lowered[at + 17 : stop if stop >= 0 else None])
                except ValueError:
                    self._reject()
                    return
            elif b"\r\ntransfer-encoding:" in lowered:
                self._reject()  # the clients under test always send Content-Length
                return
            total = end + 4 + length
            if len(buffer) < total:
                break
            recorder.times.append(time.time())
            at = lowered.find(b"\r\nwebhook-id:")
            if at >= 0:
                stop = lowered.find(b"\r\n", at + 2)
                recorder.ids.append(head[at + 13 : stop if stop >= 0 else None].strip())
            else:
                recorder.ids.append(b"")
            recorder.bodies.append(bytes(buffer[end + 4 : total]))
            del buffer[:total]
            if recorder.fail_ratio and recorder.rng.random() < recorder.fail_ratio:
                recorder.statuses.append(503)
                replies.append(UNAVAILABLE)
            else:
                recorder.statuses.append(200)
                replies.append(RESPONSE)
            answered += 1
        if answered and self.transport is not None:
            reply = b"".join(replies) if answered > 1 else replies[0]
            if recorder.latency_s:  # the same delay for every answer keeps each connection's order
                asyncio.get_running_loop().call_later(recorder.latency_s, self._answer, reply)
            else:
                self.transport.write(reply)

    def _answer(self, reply: bytes) -> None:
        if self.transport is not None:
            self.transport.write(reply)

    def _reject(self) -> None:
        self.recorder.errors += 1
        if self.transport is not None:
            self.transport.write(BAD_REQUEST)
            self.transport.close()
        self.buffer.clear()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None


def serve(control: Connection, host: str = "127.0.0.1") -> None:
    """The receiver process's entry point: serve until told to stop over `control`."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        recorder = Recorder()
        server = await loop.create_server(
            lambda: HttpProtocol(recorder), host, 0, backlog=2048, reuse_address=True
        )
        port = server.sockets[0].getsockname()[1]
        stopped = loop.create_future()

        def on_control() -> None:
            while control.poll():
                try:
                    command, *args = control.recv()
                except EOFError:  # the bench died: stop with it
                    if not stopped.done():
                        stopped.set_result(None)
                    return
                reply: Any
                if command == "count":
                    reply = (len(recorder.times), recorder.errors)
                elif command == "reset":
                    recorder.reset()
                    reply = "ok"
                elif command == "dump":
                    reply = recorder.dump()
                elif command == "answers":
                    reply = recorder.answers()
                elif command == "fail":
                    recorder.fail_ratio = float(args[0])
                    reply = "ok"
                elif command == "latency":
                    recorder.latency_s = float(args[0])
                    reply = "ok"
                elif command == "stop":
                    reply = "bye"
                    if not stopped.done():
                        stopped.set_result(None)
                else:
                    reply = f"unknown command {command!r}"
                # The loop's reader made the pipe non-blocking; a dump is larger than the pipe
                # buffer, so send it blocking (the bench is waiting to read it).
                os.set_blocking(control.fileno(), True)
                control.send(reply)

        loop.add_reader(control.fileno(), on_control)
        control.send(("ready", port, os.getpid()))
        await stopped
        loop.remove_reader(control.fileno())
        server.close()

    uvloop.run(main())


class ReceiverProcess:
    """The receiver in a child process, driven over a Pipe from the bench."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._control, child = context.Pipe()
        self.process = context.Process(target=serve, args=(child,), name="bench-receiver", daemon=True)
        self.process.start()
        child.close()
        if not self._control.poll(30):
            self.process.kill()
            raise RuntimeError("the receiver process did not start within 30 s")
        tag, self.port, self.pid = self._control.recv()
        assert tag == "ready"
        self.url = f"http://127.0.0.1:{self.port}/callbacks"

    def _ask(self, *message: Any, timeout_s: float = 30.0) -> Any:
        self._control.send(message)
        if not self._control.poll(timeout_s):
            raise RuntimeError(f"the receiver did not answer {message[0]!r} within {timeout_s} s")
        return self._control.recv()

    def count(self) -> int:
        received, _errors = self._ask("count")
        return int(received)

    def errors(self) -> int:
        return int(self._ask("count")[1])

    def reset(self) -> None:
        self._ask("reset")

    def dump(self) -> list[tuple[float, str, str, str]]:
        return list(self._ask("dump", timeout_s=60))

    def answers(self) -> list[tuple[float, str, str, str, int]]:
        """(arrival time, webhook-id, ref_id, scheduled_for, status answered) per request."""
        return list(self._ask("answers", timeout_s=120))

    def fail(self, ratio: float) -> None:
        """Answer 503 to this share of requests from now on (at random); reset() sets it back to 0."""
        self._ask("fail", ratio)

    def latency(self, seconds: float) -> None:
        """Hold every answer this long, as a real receiver's work would; reset() sets it back to 0."""
        self._ask("latency", seconds)

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(RuntimeError, OSError, EOFError):
                self._ask("stop", timeout_s=5)
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._control.close()
