"""The real `reminderd serve` in a subprocess, as a login role granted reminderd_api: its probes,
SIGTERM draining a request in flight, a retry after the connection was cut once the server had
committed, the docs' curl examples run as written, and schemathesis against the live server."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from support import api_role_url, fast_daemon_env, poll_until

from reminderd.testing import (
    DaemonProcess,
    Receiver,
    add_api_key,
    add_tenant,
    api_listening_port,
    running_daemon,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    process: DaemonProcess
    url: str
    port: int
    key: str


@pytest.fixture
async def served(db: asyncpg.Connection, database_url: str, receiver: Receiver) -> AsyncIterator[Served]:
    await add_tenant(db, "acme", receiver.url)
    key = await add_api_key(db, "acme", name="acceptance")
    env = fast_daemon_env(
        await api_role_url(db, database_url),
        REMINDERD_API_PORT="0",
        REMINDERD_API_KEY_CACHE="0",
        REMINDERD_SHUTDOWN_TIMEOUT="10",
    )
    async with running_daemon(env, command="serve") as process:
        port = await api_listening_port(process)
        yield Served(process, f"http://127.0.0.1:{port}", port, key)


async def raw_exchange(port: int, request: bytes, *, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 10) if read else b""
    writer.close()
    await writer.wait_closed()
    return answer


def post(path: str, key: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode() + body


async def test_probes_and_a_schedule_over_http(served: Served, db: asyncpg.Connection) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{served.url}/readyz") as ready:
            assert ready.status == 200 and (await ready.json())["ready"] is True
        async with session.post(
            f"{served.url}/v1/messages",
            headers={"Authorization": f"Bearer {served.key}"},
            json={"ref_id": "r1", "fire_in": "1h"},
        ) as made:
            assert made.status == 201
            assert made.headers["X-Request-Id"]
    row = await db.fetchrow("SELECT ref_id, status FROM reminderd.scheduled_messages")
    assert (row["ref_id"], row["status"]) == ("r1", "pending")
    lines = [line for line in served.process.log if line.get("event") == "request"]
    assert any(
        line["route"] == "/v1/messages" and line["status"] == 201 and line["tenant"] == "acme" for line in lines
    )
    assert served.key not in served.process.output()  # a key never reaches the log


async def test_sigterm_lets_a_request_in_flight_finish_and_exits_0(
    served: Served, db: asyncpg.Connection, database_url: str
) -> None:
    # The request waits in the database for the ref's lock, held here: it is in flight at SIGTERM.
    holder = await asyncpg.connect(database_url)
    await holder.execute("BEGIN")
    await holder.execute("SELECT pg_advisory_xact_lock(hashtextextended('acme' || chr(31) || 'in-flight', 0))")
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(post("/v1/messages", served.key, b'{"ref_id": "in-flight", "fire_in": "1h"}'))
    await writer.drain()

    async def waiting() -> bool:
        return bool(
            await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )

    await poll_until(waiting)
    served.process.send_signal(signal.SIGTERM)
    await served.process.wait_logged("draining")
    async with aiohttp.ClientSession() as session:  # not ready any more, nor listening
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{served.url}/readyz")
    await holder.execute("ROLLBACK")
    await holder.close()
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer
    assert await served.process.exit_code() == 0
    assert (
        await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE ref_id = 'in-flight'") == 1
    )


async def test_a_retry_after_the_connection_was_cut_gets_the_same_message(
    served: Served, db: asyncpg.Connection
) -> None:
    body = b'{"ref_id": "order:77", "fire_in": "2h", "payload": {"n": 1}}'
    request = post("/v1/messages", served.key, body, "Idempotency-Key: order-77\r\n")
    _, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(request)
    await writer.drain()

    async def committed() -> int | None:
        found: int | None = await db.fetchval(
            "SELECT id FROM reminderd.scheduled_messages WHERE ref_id = 'order:77'"
        )
        stored = await db.fetchval("SELECT count(*) FROM reminderd.idempotency_keys WHERE key = 'order-77'")
        return found if stored else None

    first_id = await poll_until(committed)  # the server committed...
    writer.transport.abort()  # ...and the client is gone before reading a byte of the answer
    answer = await raw_exchange(served.port, request)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201") and b"Idempotent-Replayed: true" in head
    assert f'"id":{first_id},'.encode() in payload
    without_key = await raw_exchange(served.port, post("/v1/messages", served.key, body))
    assert without_key.startswith(b"HTTP/1.1 200") and f'"id":{first_id},'.encode() in without_key  # SQL's rule
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 1


async def test_serve_refuses_an_unmigrated_database_with_78(empty_database_url: str) -> None:
    env = fast_daemon_env(empty_database_url, REMINDERD_API_PORT="0")
    process = await DaemonProcess.start(env, command="serve")
    assert await process.exit_code() == 78
    assert process.events("schema_not_ready")


def curl_blocks() -> list[str]:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    return [block for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL) if block.startswith("curl")]


async def test_the_docs_curl_examples_work_as_written(served: Served, db: asyncpg.Connection) -> None:
    await db.execute("UPDATE reminderd.config SET value = '20 years' WHERE key = 'horizon'")  # as api.md says
    blocks = curl_blocks()
    assert len(blocks) >= 12
    env = {**os.environ, "API_URL": served.url, "KEY": served.key}
    for block in blocks:
        script = 'curl() { command curl --fail-with-body --max-time 10 "$@"; }\nset -e\n' + block
        done = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/tmp",
        )
        assert done.returncode == 0, f"{block}\n{done.stdout}\n{done.stderr}"


async def test_schemathesis_finds_no_5xx_and_no_answer_outside_the_document(
    served: Served, db: asyncpg.Connection, database_url: str
) -> None:
    """Property-based: every operation with generated input, good and bad; every answer must be
    documented (status, content type, schema) and none a 5xx. Bounded: a few examples each."""
    await db.execute("UPDATE reminderd.tenants SET api_rate_limit = 100000")
    command = [
        str(ROOT / ".venv" / "bin" / "schemathesis")
        if (ROOT / ".venv" / "bin" / "schemathesis").exists()
        else "schemathesis",
        "run",
        f"{served.url}/openapi.json",
        "--url",
        served.url,
        "--header",
        f"Authorization: Bearer {served.key}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,response_headers_conformance",
        "--max-examples",
        "40",
        "--phases",
        "examples,coverage,fuzzing",
        "--mode",
        "all",
        "--request-timeout",
        "10",
        "--seed",
        "7",
        "--no-color",
    ]
    done = await asyncio.to_thread(
        subprocess.run,
        command,
        capture_output=True,
        text=True,
        timeout=240,
        cwd="/tmp",
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    assert done.returncode == 0, done.stdout[-30000:] + done.stderr[-3000:]
    await poll_until(lambda: asyncio.sleep(0, result=served.process.process.returncode is None))
