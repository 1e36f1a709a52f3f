"""Client CPU per signed callback POST, for the HTTP clients reminderd could send callbacks with.

    .venv/bin/python bench/http_clients.py                 # every client, 5 interleaved reps
    .venv/bin/python bench/http_clients.py --reps 3 --n 10000 aiohttp-uvloop http1-uvloop

Each client runs in its own process against bench/receiver.py (another process, uvloop, keep-alive,
200 with an empty body): 64 requests in flight, each a ~330-byte JSON body signed with
reminderd.signing.sign (Standard Webhooks headers), a warm-up, then `--n` timed requests. The figure
is the client process's CPU time (time.process_time: user + system, every thread) per request, so
the shared machine's noise weighs less than in wall time; the median of the reps is reported.
Loopback only. pycurl is measured only when it is installed (it is not a dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: `bench` and `reminderd` from this checkout

from bench.receiver import ReceiverProcess  # noqa: E402
from reminderd.signing import generate_secret, sign  # noqa: E402

IN_FLIGHT = 64
WARMUP = 2_000
SECRET = generate_secret()
BODY = json.dumps(
    {"id": 123456, "tenant_id": "acme", "ref_id": "booking-reminder-8f14e45f", "scheduled_for":
     "2026-12-24T03:30:00.000Z", "attempt": 1, "payload": {"to": "+15555550123", "template":
     "appointment_reminder", "text": "x" * 150}},
    separators=(",", ":"),
).encode()

Post = Callable[[int], Awaitable[int]]  # post(request number) -> status; signs the body itself

CLIENTS = ["aiohttp-stock", "aiohttp-uvloop", "http1-stock", "http1-uvloop", "callbackclient-uvloop",
           "pycurl-uvloop"]


def signed_headers(index: int) -> list[tuple[str, str]]:
    webhook_id = f"msg_{index}_1798083000000"
    timestamp = int(time.time())
    return [("webhook-id", webhook_id), ("webhook-timestamp", str(timestamp)),
            ("webhook-signature", sign(SECRET, webhook_id, timestamp, BODY))]


async def drive(post: Post, n: int) -> dict[str, float]:
    """WARMUP requests, then n timed ones, IN_FLIGHT at a time; the CPU and wall time of the n."""
    async def run(count: int) -> None:
        counter = iter(range(count))

        async def lane() -> None:
            for index in counter:
                status = await post(index)
                if status != 200:
                    raise RuntimeError(f"status {status}")

        await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))

    await run(WARMUP)
    cpu, wall = time.process_time(), time.perf_counter()
    await run(n)
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


async def with_aiohttp(url: str, n: int) -> dict[str, float]:
    import aiohttp

    # Configured as reminderd's CallbackClient was before reminderd.http1.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=IN_FLIGHT, enable_cleanup_closed=True),
        timeout=aiohttp.ClientTimeout(total=10),
        headers={"user-agent": "reminderd/bench", "content-type": "application/json"},
        trust_env=False, auto_decompress=False,
    ) as session:
        async def post(index: int) -> int:
            headers = dict(signed_headers(index))
            async with session.post(url, data=BODY, headers=headers, allow_redirects=False) as resp:
                await resp.content.read(64 * 1024)
                return resp.status

        return await drive(post, n)


async def with_http1(url: str, n: int) -> dict[str, float]:
    import ipaddress

    from yarl import URL

    from reminderd.http1 import Http1Client

    client = Http1Client(
        (ipaddress.ip_network("127.0.0.1/32"),),
        headers=(("User-Agent", "reminderd/bench"), ("Content-Type", "application/json")),
    )
    target = URL(url)

    async def post(index: int) -> int:
        return (await client.post(target, BODY, signed_headers(index), 10.0)).status

    try:
        return await drive(post, n)
    finally:
        await client.close()


async def with_callback_client(url: str, n: int) -> dict[str, float]:
    """The daemon's own CallbackClient.send: URL check, body, signing, headers, judging, result."""
    import ipaddress
    from dataclasses import replace
    from datetime import UTC, datetime

    from reminderd.callback import CallbackClient
    from reminderd.jobs import Job
    from reminderd.settings import Settings

    client = CallbackClient(Settings(database_url="postgresql://bench@127.0.0.1:1/bench",
                                     allowed_callback_networks=(ipaddress.ip_network("127.0.0.1/32"),)))
    job = Job(id=1, tenant_id="acme", ref_id="booking-reminder-8f14e45f",
              payload_json=json.dumps(json.loads(BODY)["payload"]), callback_url=url,
              scheduled_for=datetime(2026, 12, 24, 3, 30, tzinfo=UTC), attempt=1, max_attempts=None,
              signing_secret=SECRET)
    jobs = [replace(job, id=index) for index in range(IN_FLIGHT)]

    async def post(index: int) -> int:
        result = await client.send(jobs[index % IN_FLIGHT])
        return result.status_code or 0

    try:
        return await drive(post, n)
    finally:
        await client.close()


async def with_pycurl(url: str, n: int) -> dict[str, float]:
    """pycurl's CurlMulti driven by the asyncio loop (socket and timer callbacks)."""
    import pycurl  # type: ignore[import-untyped]  # no stubs; an optional, bench-only comparison

    loop = asyncio.get_running_loop()
    multi = pycurl.CurlMulti()
    timer: list[asyncio.TimerHandle | None] = [None]
    free: list[Any] = []

    def done() -> None:
        while True:
            queued, finished, failed = multi.info_read()
            for handle in finished:
                multi.remove_handle(handle)
                handle.future.set_result(handle.getinfo(pycurl.RESPONSE_CODE))
                free.append(handle)
            for handle, _errno, message in failed:
                multi.remove_handle(handle)
                handle.future.set_exception(RuntimeError(message))
                free.append(handle)
            if not queued:
                return

    def act(fd: int, events: int) -> None:
        while multi.socket_action(fd, events)[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        done()

    def on_socket(what: int, fd: int, _multi: Any, _data: Any) -> None:
        loop.remove_reader(fd)
        loop.remove_writer(fd)
        if what in (pycurl.POLL_IN, pycurl.POLL_INOUT):
            loop.add_reader(fd, act, fd, pycurl.CSELECT_IN)
        if what in (pycurl.POLL_OUT, pycurl.POLL_INOUT):
            loop.add_writer(fd, act, fd, pycurl.CSELECT_OUT)

    def on_timer(timeout_ms: int) -> None:
        if timer[0] is not None:
            timer[0].cancel()
        timer[0] = None if timeout_ms < 0 else loop.call_later(timeout_ms / 1000, act, pycurl.SOCKET_TIMEOUT, 0)

    multi.setopt(pycurl.M_SOCKETFUNCTION, on_socket)
    multi.setopt(pycurl.M_TIMERFUNCTION, on_timer)

    def new_handle() -> Any:
        handle = pycurl.Curl()
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.POST, 1)
        handle.setopt(pycurl.WRITEFUNCTION, lambda _chunk: None)
        handle.setopt(pycurl.TIMEOUT_MS, 10_000)
        handle.setopt(pycurl.NOSIGNAL, 1)
        return handle

    async def post(index: int) -> int:
        headers = signed_headers(index)
        handle = free.pop() if free else new_handle()
        handle.setopt(pycurl.POSTFIELDS, BODY)
        handle.setopt(pycurl.HTTPHEADER, ["User-Agent: reminderd/bench", "Content-Type: application/json",
                                          "Expect:", *(f"{name}: {value}" for name, value in headers)])
        handle.future = loop.create_future()
        multi.add_handle(handle)
        return int(await handle.future)

    return await drive(post, n)


RUNNERS: dict[str, Callable[[str, int], Coroutine[Any, Any, dict[str, float]]]] = {
    "aiohttp": with_aiohttp, "http1": with_http1, "callbackclient": with_callback_client, "pycurl": with_pycurl,
}


def child(client: str, url: str, n: int) -> None:
    name, loop = client.rsplit("-", 1)
    coroutine = RUNNERS[name](url, n)
    if loop == "uvloop":
        import uvloop

        figures: dict[str, float] = uvloop.run(coroutine)
    else:
        figures = asyncio.run(coroutine)
    print(json.dumps(figures))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clients", nargs="*", default=CLIENTS)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--n", type=int, default=20_000, help="timed requests per run")
    parser.add_argument("--child", nargs=2, metavar=("CLIENT", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.n)
        return 0
    clients = list(args.clients)
    if "pycurl-uvloop" in clients and importlib.util.find_spec("pycurl") is None:
        clients.remove("pycurl-uvloop")
        print("pycurl is not installed: skipped", file=sys.stderr)
    receiver = ReceiverProcess()
    runs: dict[str, list[dict[str, float]]] = {client: [] for client in clients}
    try:
        for rep in range(args.reps):
            for client in clients:  # interleaved, so a noisy minute hits every client alike
                receiver.reset()
                done = subprocess.run(
                    [sys.executable, __file__, "--n", str(args.n), "--child", client, receiver.url],
                    capture_output=True, text=True, check=False, timeout=600,
                )
                if done.returncode:
                    print(f"{client}: failed\n{done.stderr}", file=sys.stderr)
                    return 2
                runs[client].append(json.loads(done.stdout))
                print(f"rep {rep + 1} {client}: {runs[client][-1]['cpu_s'] / args.n * 1e6:.1f} µs/request",
                      file=sys.stderr)
                assert receiver.count() == WARMUP + args.n, "the receiver did not get every request"
    finally:
        receiver.stop()
    print(f"\n| client | CPU µs/request (median of {args.reps}) | min-max | requests/s (wall) |")
    print("|---|---|---|---|")
    for client, figures in runs.items():
        per_request = sorted(run["cpu_s"] / args.n * 1e6 for run in figures)
        rate = statistics.median(args.n / run["wall_s"] for run in figures)
        print(f"| {client} | {statistics.median(per_request):.0f} | {per_request[0]:.0f}-{per_request[-1]:.0f} "
              f"| {rate:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
