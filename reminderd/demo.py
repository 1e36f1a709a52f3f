"""`reminderd demo`: everything in one process, on a throwaway database, in about ten seconds.

A local PostgreSQL cluster, the migrations, a tenant, a receiver that verifies signatures, a few
messages, and the daemon delivering them: one is refused once by the receiver and retried with the
same webhook-id, one is cancelled and never fires. `reminderd serve` runs beside it, and one
message is scheduled over HTTP (the curl equivalent is printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg

from . import logs
from .callback import CallbackClient
from .lifecycle import Status
from .migrate import upgrade
from .schedule import QuietHours
from .settings import Settings
from .store import Store
from .testing import (
    SUPERUSER,
    ClusterError,
    DaemonProcess,
    Received,
    Receiver,
    add_api_key,
    api_listening_port,
    daemon_env,
    throwaway_cluster,
)
from .validation import Recurrence, ScheduleRequest
from .worker import Worker

MESSAGES = [  # (ref, seconds from now, payload)
    ("welcome:alice", 1, {"to": "+14155550100", "text": "Welcome aboard, Alice!"}),
    ("booking:b7d2:24h", 3, {"to": "+447700900123", "text": "Reminder: your table is tomorrow 19:30"}),
    ("cart:991:nudge", 5, {"to": "+919876543210", "text": "You left something in your cart"}),
    ("booking:b7d2:1h", 6, {"to": "+447700900123", "text": "This one is cancelled before it fires"}),
]
FLAKY_REF = "cart:991:nudge"  # the receiver answers 503 the first time
CANCELLED_REF = "booking:b7d2:1h"
RECURRING_REF = "pulse"  # every 2 seconds, twice (max_runs), then finished
RECURRING_RUNS = 2
QUIET_REF = "promo:spring-sale"  # marketing, inside the tenant's quiet hours: deferred, not sent
HTTP_REF = "welcome:bob"  # scheduled over HTTP, through `reminderd serve`


def say(text: str) -> None:
    print(text, flush=True)


def show(item: Received) -> None:
    """One line per callback the app's receiver got: it checks each signature, as a real one must."""
    message = item.message
    late_ms = (item.received_at - datetime.fromisoformat(message["scheduled_for"]).timestamp()) * 1000
    say(
        f"  receiver <- {message['ref_id']:<18} attempt {message['attempt']}  "
        f"webhook-id {item.webhook_id}  signature {'ok' if item.verified else 'BAD'}  "
        f"{late_ms:5.0f} ms after its time  -> answering {item.status}"
    )


def delivered(received: list[Received]) -> list[str]:
    return [item.message["ref_id"] for item in received if item.status == 200]


async def demo(database_url: str) -> int:
    say("reminderd demo: applying migrations")
    await asyncio.to_thread(upgrade, database_url)
    store = await Store.connect(database_url)
    secret = await store.add_tenant("demo", None)
    # The receiver answers 503 to the flaky message the first time.
    receiver = await Receiver(secret, script={FLAKY_REF: [503]}, on_receive=show).start()
    url = receiver.url
    say(f"reminderd demo: receiver listening on {url}")

    now = datetime.now(UTC)
    for ref, seconds, payload in MESSAGES:
        fire_at = now + timedelta(seconds=seconds)
        request = ScheduleRequest("demo", ref, json.dumps(payload), url, fire_at=fire_at)
        message_id = await store.schedule(request)
        say(f"  scheduled #{message_id} {ref:<18} at {fire_at.time().isoformat('milliseconds')} UTC")
    say(f"  cancelled {CANCELLED_REF}: {await store.cancel('demo', CANCELLED_REF)} row")
    message_id = await store.schedule(ScheduleRequest(
        "demo", RECURRING_REF, '{"text": "tick"}', url, timezone="Europe/London",
        recurrence=Recurrence(cron="*/2 * * * * *"), max_runs=RECURRING_RUNS,
    ))
    say(f'  scheduled #{message_id} {RECURRING_REF:<18} cron "*/2 * * * * *" (every 2 s), '
        f"max_runs {RECURRING_RUNS}")
    # Quiet hours around the present hour in Kolkata: a marketing message there waits for their end.
    kolkata = ZoneInfo("Asia/Kolkata")
    local_now = now.astimezone(kolkata)
    quiet = QuietHours((local_now - timedelta(hours=1)).time().replace(second=0, microsecond=0),
                       (local_now + timedelta(hours=2)).time().replace(second=0, microsecond=0))
    await store.set_tenant("demo", calendar=None, holiday_rule=None, quiet=quiet, quiet_exempt=None)
    message_id = await store.schedule(ScheduleRequest(
        "demo", QUIET_REF, '{"text": "20% off today"}', url, fire_at=now + timedelta(seconds=1),
        timezone="Asia/Kolkata", category="marketing",
    ))
    say(f"  scheduled #{message_id} {QUIET_REF:<18} marketing, for Asia/Kolkata, where it is "
        f"{local_now:%H:%M}: inside the tenant's quiet hours {quiet}")

    api = await _start_api(database_url)
    try:
        return await _deliver(database_url, store, receiver, api, url)
    finally:
        await api.stop()


async def _start_api(database_url: str) -> DaemonProcess:
    """`reminderd serve` as its own process, as a login role granted reminderd_api only."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reminderd_demo_api') THEN "
            "CREATE ROLE reminderd_demo_api LOGIN IN ROLE reminderd_api; END IF; END $$"
        )
    finally:
        await connection.close()
    # On the demo's own cluster (trust authentication) as that role; on a server you named, as you.
    api_url = database_url.replace(f"//{SUPERUSER}@", "//reminderd_demo_api@", 1)
    return await DaemonProcess.start(daemon_env(api_url, REMINDERD_API_PORT="0"), command="serve")


async def _schedule_over_http(database_url: str, api: DaemonProcess, receiver_url: str) -> None:
    port = await api_listening_port(api)
    connection = await asyncpg.connect(database_url)
    try:
        key = await add_api_key(connection, "demo", name="demo-app")
    finally:
        await connection.close()
    base = f"http://127.0.0.1:{port}"
    body = {"ref_id": HTTP_REF, "fire_in": "2s", "callback_url": receiver_url,
            "payload": {"to": "+14155550111", "text": "Welcome, Bob (scheduled over HTTP)"}}
    say(f"reminderd demo: reminderd serve listening on {base}; the same call with curl:")
    say(f"  curl -X POST {base}/v1/messages -H 'Authorization: Bearer {key[:15]}_…' "
        f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'")
    async with aiohttp.ClientSession() as session, session.post(
        f"{base}/v1/messages", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as answer:
        made = await answer.json()
    say(f"  scheduled #{made['id']} {HTTP_REF:<18} over HTTP: {answer.status} {made['description']}")


async def _deliver(database_url: str, store: Store, receiver: Receiver, api: DaemonProcess, url: str) -> int:
    await _schedule_over_http(database_url, api, url)
    settings = Settings(
        database_url=database_url,
        poll_interval_s=1.0,
        retry_base_s=1.0,
        retry_cap_s=2.0,
        concurrency=8,
        allowed_callback_networks=(ipaddress.ip_network("127.0.0.1/32"),),  # the demo receiver
    )
    client = CallbackClient(settings)
    worker = Worker(settings, store, client)
    say("reminderd demo: daemon running (JSON log lines below are its own)\n")
    running = asyncio.create_task(worker.run())
    expected = [r for r, _, _ in MESSAGES if r != CANCELLED_REF] + [RECURRING_REF] * RECURRING_RUNS + [HTTP_REF]
    try:
        await receiver.wait_for(lambda received: len(delivered(received)) >= len(expected), timeout_s=30)
        # Give the recorder its moment to write the last outcome before stopping.
        await asyncio.sleep(0.2)
    except TimeoutError:
        say("reminderd demo: not every message arrived within 30 s")
    worker.stop()
    await running
    await client.close()
    await receiver.stop()

    say("\nreminderd demo: final state (what `reminderd status` and plain SQL show)")
    counts = {row.status: row.messages for row in await store.status_counts()}
    for status, messages in counts.items():
        say(f"  demo     {status:<10} {messages}")
    await store.close()
    # The pulse finished and the deferred promo pending:
    held = counts.get(Status.FINISHED) == 1 and counts.get(Status.PENDING) == 1
    ok = sorted(delivered(receiver.received)) == sorted(expected) and held
    say("reminderd demo: " + (
        f"every message fired once, on time; {RECURRING_REF} fired {RECURRING_RUNS} times and finished; "
        f"{QUIET_REF} waits for the end of quiet hours" if ok else "FAILED"))
    return 0 if ok else 1


@contextlib.contextmanager
def _database(database_url: str | None) -> Iterator[str]:
    if database_url:
        yield database_url
        return
    say("reminderd demo: starting a throwaway PostgreSQL cluster")
    with throwaway_cluster() as cluster:
        yield cluster.url()


def main(database_url: str | None = None) -> int:
    logs.configure("info", json=True)
    try:
        with _database(database_url) as url:
            return asyncio.run(demo(url))
    except ClusterError as exc:
        print(f"reminderd demo: {exc}", file=sys.stderr)
        return 1
