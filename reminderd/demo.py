"""`reminderd demo`: everything in one process, on a throwaway database, in about ten seconds.

A local PostgreSQL cluster, the migrations, a tenant, a receiver that verifies signatures, a few
messages, and the daemon delivering them: one is refused once by the receiver and retried with the
same webhook-id, one is cancelled and never fires. `reminderd serve` runs beside it, and one
message is scheduled over HTTP through the Python SDK (reminderd.client; the curl equivalent is
printed).
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

from . import logs
from .callback import CallbackClient
from .client import ReminderdClient
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
    api_listening_port,
    api_login_role,
    daemon_env,
    new_api_key,
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
ON_TIME_MS = 500  # a first attempt later than this after its time is late (they take ~10 ms)


def say(text: str) -> None:
    print(text, flush=True)


def show(item: Received) -> None:
    """One line per callback the app's receiver got: it checks each signature, as a real one must."""
    message = item.message
    say(
        f"  receiver <- {message['ref_id']:<18} attempt {message['attempt']}  "
        f"webhook-id {item.webhook_id}  signature {'ok' if item.verified else 'BAD'}  "
        f"{lateness_ms(item):5.0f} ms after its time  -> answering {item.status}"
    )


def delivered(received: list[Received]) -> list[str]:
    return [item.message["ref_id"] for item in received if item.status == 200]


def lateness_ms(item: Received) -> float:
    """How long after its time a callback arrived."""
    return (item.received_at - datetime.fromisoformat(item.message["scheduled_for"]).timestamp()) * 1000


def late_first_attempts(received: list[Received]) -> list[str]:
    """The first attempts that arrived later than ON_TIME_MS after their time ("ref 2104 ms"). A
    retry is late by design (its backoff); the first attempt of each occurrence is what is timed."""
    return [f"{item.message['ref_id']} {lateness_ms(item):.0f} ms" for item in received
            if item.message["attempt"] == 1 and lateness_ms(item) > ON_TIME_MS]


async def demo(database_url: str) -> int:
    say("reminderd demo: applying migrations")
    await asyncio.to_thread(upgrade, database_url)
    store = await Store.connect(database_url)
    secret = await store.add_tenant("demo", None)
    # The receiver answers 503 to the flaky message the first time.
    receiver = await Receiver(secret, script={FLAKY_REF: [503]}, on_receive=show).start()
    url = receiver.url
    say(f"reminderd demo: receiver listening on {url}")
    # Quiet hours around the present hour in Kolkata: a marketing message there waits for their end.
    local_now = datetime.now(UTC).astimezone(ZoneInfo("Asia/Kolkata"))
    quiet = QuietHours((local_now - timedelta(hours=1)).time().replace(second=0, microsecond=0),
                       (local_now + timedelta(hours=2)).time().replace(second=0, microsecond=0))
    await store.set_tenant("demo", calendar=None, holiday_rule=None, quiet=quiet, quiet_exempt=None)

    # What delivers and what takes HTTP requests run before anything is scheduled: every message
    # is then due seconds after the moment it was scheduled, and arrives then, not after start-up.
    api = await _start_api(database_url)
    try:
        port = await api_listening_port(api)
        say(f"reminderd demo: reminderd serve listening on http://127.0.0.1:{port}")
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
        try:
            await _schedule(store, url, quiet, local_now)
            await _schedule_over_http(database_url, port, url)
            await _wait_for_deliveries(receiver)
        finally:
            worker.stop()
            await running
            await client.close()
            await receiver.stop()
    finally:
        await api.stop()
    return await _report(store, receiver)


async def _schedule(store: Store, url: str, quiet: QuietHours, local_now: datetime) -> None:
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
    message_id = await store.schedule(ScheduleRequest(
        "demo", QUIET_REF, '{"text": "20% off today"}', url, fire_at=now + timedelta(seconds=1),
        timezone="Asia/Kolkata", category="marketing",
    ))
    say(f"  scheduled #{message_id} {QUIET_REF:<18} marketing, for Asia/Kolkata, where it is "
        f"{local_now:%H:%M}: inside the tenant's quiet hours {quiet}")


async def _start_api(database_url: str) -> DaemonProcess:
    """`reminderd serve` as its own process, as a login role granted reminderd_api only."""
    await api_login_role(database_url, "reminderd_demo_api")
    # On the demo's own cluster (trust authentication) as that role; on a server you named, as you.
    api_url = database_url.replace(f"//{SUPERUSER}@", "//reminderd_demo_api@", 1)
    return await DaemonProcess.start(daemon_env(api_url, REMINDERD_API_PORT="0"), command="serve")


async def _schedule_over_http(database_url: str, port: int, receiver_url: str) -> None:
    key = await new_api_key(database_url, "demo", name="demo-app")
    base = f"http://127.0.0.1:{port}"
    payload = {"to": "+14155550111", "text": "Welcome, Bob (scheduled over HTTP)"}
    say("reminderd demo: one message through the Python SDK:")
    say(f'  async with reminderd.client.ReminderdClient("{base}", api_key) as rd:')
    say(f"      await rd.schedule({HTTP_REF!r}, fire_in='2s', callback_url={receiver_url!r},\n"
        f"                        payload={payload!r})")
    async with ReminderdClient(base, key) as rd:
        made = await rd.schedule(HTTP_REF, fire_in="2s", callback_url=receiver_url, payload=payload)
    body = {"ref_id": HTTP_REF, "fire_in": "2s", "callback_url": receiver_url, "payload": payload}  # as sent
    say("  the same call with curl:")
    say(f"  curl -X POST {base}/v1/messages -H 'Authorization: Bearer {key[:15]}_…' "
        f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'")
    say(f"  scheduled #{made.id} {HTTP_REF:<18} over HTTP: {made.result}, {made.description}")


EXPECTED = [r for r, _, _ in MESSAGES if r != CANCELLED_REF] + [RECURRING_REF] * RECURRING_RUNS + [HTTP_REF]


async def _wait_for_deliveries(receiver: Receiver) -> None:
    try:
        await receiver.wait_for(lambda received: len(delivered(received)) >= len(EXPECTED), timeout_s=30)
        # Give the recorder its moment to write the last outcome before stopping.
        await asyncio.sleep(0.2)
    except TimeoutError:
        say("reminderd demo: not every message arrived within 30 s")


async def _report(store: Store, receiver: Receiver) -> int:
    say("\nreminderd demo: final state (what `reminderd status` and plain SQL show)")
    counts = {row.status: row.messages for row in await store.status_counts()}
    for status, messages in counts.items():
        say(f"  demo     {status:<10} {messages}")
    await store.close()
    first = [lateness_ms(item) for item in receiver.received if item.message["attempt"] == 1]
    late = late_first_attempts(receiver.received)
    if first:
        say(f"reminderd demo: first attempts {min(first):.0f} to {max(first):.0f} ms after their time "
            f"(on time: within {ON_TIME_MS} ms)" + (f"; late: {', '.join(late)}" if late else ""))
    # The pulse finished and the deferred promo pending:
    held = counts.get(Status.FINISHED) == 1 and counts.get(Status.PENDING) == 1
    ok = sorted(delivered(receiver.received)) == sorted(EXPECTED) and held and not late
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
