"""Sending limits hold across daemons: three real `reminderd run` processes on one database share a
tenant's max_per_second and an endpoint's max_in_flight, without a lock that serialises them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
from support import all_sent, fast_daemon_env, insert_due, poll_until

from reminderd.testing import DaemonProcess, Receiver, running_daemon

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def three_daemons(database_url: str, **settings: str) -> AsyncIterator[list[DaemonProcess]]:
    env = fast_daemon_env(database_url, **settings)
    async with running_daemon(env) as a, running_daemon(env) as b, running_daemon(env) as c:
        yield [a, b, c]


def most_in_any_window(times: list[float], window_s: float) -> int:
    """The most arrivals in any window of `window_s` (each window starting at an arrival)."""
    times = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


async def test_three_daemons_keep_a_tenants_max_per_second_together(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    limit = 20
    await db.execute("UPDATE reminderd.tenants SET max_per_second = $1 WHERE id = 'acme'", limit)
    await insert_due(db, 100)
    async with three_daemons(database_url, REMINDERD_BATCH_SIZE="10", REMINDERD_CONCURRENCY="16") as daemons:
        await poll_until(all_sent(db, 100), timeout_s=60)
        logs = [daemon.log for daemon in daemons]

    # picked_at: when a claim granted the row (each claim's transaction time), kept after sending.
    granted = [
        row["at"]
        for row in await db.fetch(
            "SELECT extract(epoch FROM picked_at)::float8 AS at FROM reminderd.scheduled_messages"
        )
    ]
    arrived = [item.received_at for item in receiver.received]
    assert len(arrived) == 100 and len({item.webhook_id for item in receiver.received}) == 100
    busiest_grant = most_in_any_window(granted, 1.0)
    busiest_arrival = most_in_any_window(arrived, 1.0)
    span_s = max(granted) - min(granted)
    print(
        f"max_per_second {limit}, 3 daemons: busiest rolling second {busiest_grant} claimed "
        f"({busiest_grant / limit:.2f} of the limit), {busiest_arrival} received "
        f"({busiest_arrival / limit:.2f}); 100 claimed over {span_s:.2f} s"
    )
    assert busiest_grant <= limit
    assert span_s >= 100 / limit - 1.1  # paced, not sent at once
    claimers = [sum(1 for line in log if line.get("event") == "fired") for log in logs]
    assert sum(1 for n in claimers if n) >= 2, claimers  # the work was shared, not serialised on one
    held = await db.fetchval("SELECT count(*) FROM reminderd.events WHERE event = 'held'")
    assert held > 0


async def test_three_daemons_keep_an_endpoints_max_in_flight_together(
    database_url: str, db: asyncpg.Connection, receiver: Receiver, tenant: str
) -> None:
    receiver.delay_s = 0.2
    endpoint = await db.fetchval("SELECT reminderd.endpoint_of($1)", receiver.url)
    await db.execute("UPDATE reminderd.endpoints SET max_in_flight = 4 WHERE endpoint = $1", endpoint)
    await insert_due(db, 40)
    async with three_daemons(database_url, REMINDERD_BATCH_SIZE="10", REMINDERD_CONCURRENCY="16"):
        await poll_until(all_sent(db, 40), timeout_s=60)

    print(
        f"max_in_flight 4, 3 daemons of concurrency 16: at most {receiver.max_in_flight} in flight "
        "at the receiver"
    )
    assert receiver.max_in_flight <= 4
    assert receiver.max_in_flight >= 2  # it was used, not starved
    assert len({item.webhook_id for item in receiver.received}) == 40
