"""The live feed: fires pushed to every open dashboard as they are recorded.

One `FeedHub` per `reminderd serve` process holds one LISTEN connection (reminderd_feed: the
triggers events_count_fires and deliveries_count_fires notify the ids of the fires each statement
records, at commit), reads those rows once by primary key, and hands each to every subscriber
whose filter takes it. So the database does the same work for one browser or for fifty, and
nothing polls. A fire is a row of either table of the trail (an attempt's change is on its
deliveries row, every other fire is an event), and each table numbers its rows in its own
sequence: where a feed is, is a `FeedCursor` of both ids. If the LISTEN connection drops, the hub
reconnects and catches up from the cursor it had; a browser that reconnects catches up the same
way from its Last-Event-ID (Server-Sent Events do that themselves), the cursor of the last fire
it got.
A subscriber too slow to keep up is dropped (its browser reconnects and catches up) rather than
let its queue grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
from collections.abc import Collection
from dataclasses import dataclass, field

import structlog

from .dashboard_rows import FEED_START, FIRES, FeedCursor, FeedEntry
from .guard import describe
from .store import FeedListener, Store

log = structlog.get_logger("reminderd")

QUEUE_SIZE = 1000
RECONNECT_MAX_S = 10.0
CATCH_UP = 1000


@dataclass(frozen=True)
class FeedFilter:
    """What one browser asked to see; `tenant_id` None is every tenant (an operator's view)."""

    tenant_id: str | None = None
    kinds: frozenset[str] = frozenset(FIRES)
    ref_prefix: str = ""

    def matches(self, entry: FeedEntry) -> bool:
        return ((self.tenant_id is None or entry.tenant_id == self.tenant_id)
                and entry.event in self.kinds and entry.ref_id.startswith(self.ref_prefix))

    @property
    def narrowed(self) -> bool:
        """Whether it filters by more than the tenant (such a feed looks back over fewer events)."""
        return bool(self.ref_prefix) or self.kinds != frozenset(FIRES)


def entry_json(entry: FeedEntry) -> str:
    """One fire as the browser receives it."""
    return json.dumps({
        "id": entry.key,
        "at": entry.created_at.isoformat(timespec="milliseconds"),
        "message_id": entry.message_id,
        "tenant_id": entry.tenant_id,
        "ref_id": entry.ref_id,
        "event": entry.event,
        "status": entry.status,
        "fire_at": None if entry.fire_at is None else entry.fire_at.isoformat(timespec="seconds"),
        "reason": entry.reason,
    }, ensure_ascii=False)


def oldest_first(entries: Collection[FeedEntry]) -> list[FeedEntry]:
    """Fires in the order to send them: each table's by its ids, so that a cursor moved past one
    has had every earlier one of that table; the two merged by the time they were recorded."""
    events = sorted((e for e in entries if e.event_id is not None), key=lambda e: e.event_id or 0)
    deliveries = sorted((e for e in entries if e.delivery_id is not None), key=lambda e: e.delivery_id or 0)
    return list(heapq.merge(events, deliveries, key=lambda e: e.created_at))


@dataclass(eq=False)
class Subscription:
    filter: FeedFilter
    queue: asyncio.Queue[FeedEntry | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: bool = False

    def offer(self, entry: FeedEntry) -> None:
        if self.dropped or not self.filter.matches(entry):
            return
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped = True
            self.queue.get_nowait()  # room for the end-of-stream marker
            self.queue.put_nowait(None)


class FeedHub:
    def __init__(self, store: Store, database_url: str) -> None:
        self._store = store
        self._listener = FeedListener(database_url, self._notified, self._lost)
        self._subscriptions: set[Subscription] = set()
        self._event_ids: list[int] = []
        self._delivery_ids: list[int] = []
        self._wake = asyncio.Event()
        self._cursor: FeedCursor | None = None  # None: not read yet
        self._caught_up = True
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    async def start(self) -> None:
        """LISTEN (once here, so a server that starts is listening; again in the background
        whenever the connection is lost), then hand fires on as they come."""
        try:
            await self._listener.connect()
        except Exception as exc:
            log.warning("feed_listen_failed", error=describe(exc), retry_in_s=0.5)
        else:
            await self._remember_newest()
        self._task = asyncio.create_task(self._run(), name="reminderd-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._listener.close()
        for subscription in self._subscriptions:
            with contextlib.suppress(asyncio.QueueFull):
                subscription.queue.put_nowait(None)

    def subscribe(self, wanted: FeedFilter) -> Subscription:
        subscription = Subscription(wanted)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def _notified(self, event_ids: list[int], delivery_ids: list[int]) -> None:
        self._event_ids.extend(event_ids)
        self._delivery_ids.extend(delivery_ids)
        self._wake.set()

    def _lost(self) -> None:
        self._caught_up = False
        self._wake.set()

    async def _run(self) -> None:
        delay_s = 0.5
        while True:
            if not self._listener.connected:
                try:
                    await self._listener.connect()
                except Exception as exc:
                    log.warning("feed_listen_failed", error=describe(exc), retry_in_s=delay_s)
                    await asyncio.sleep(delay_s)
                    delay_s = min(2 * delay_s, RECONNECT_MAX_S)
                    continue
                delay_s = 0.5
                if self._cursor is None:
                    await self._remember_newest()
                elif not self._caught_up:
                    await self._catch_up()
            await self._wake.wait()
            self._wake.clear()
            event_ids, self._event_ids = self._event_ids, []
            delivery_ids, self._delivery_ids = self._delivery_ids, []
            if event_ids or delivery_ids:
                try:
                    self._publish(oldest_first(await self._store.feed_entries(event_ids, delivery_ids)))
                except Exception as exc:  # the database is away: catch up once it is back
                    log.warning("feed_read_failed", error=describe(exc))
                    self._caught_up = False
                    await self._listener.close()

    async def _remember_newest(self) -> None:
        """At start: the newest fires so far, from which a reconnect catches up."""
        try:
            self._cursor = await self._store.feed_newest()
        except Exception as exc:
            log.warning("feed_read_failed", error=describe(exc))
            await self._listener.close()
            return
        self._caught_up = True

    async def _catch_up(self) -> None:
        """After a reconnect: the fires recorded while the hub was not listening."""
        try:
            missed = await self._store.feed_recent(None, after=self._cursor or FEED_START, limit=CATCH_UP)
        except Exception as exc:
            log.warning("feed_read_failed", error=describe(exc))
            await self._listener.close()
            return
        self._caught_up = True
        self._publish(oldest_first(missed))

    def _publish(self, entries: Collection[FeedEntry]) -> None:
        for entry in entries:
            self._cursor = (self._cursor or FEED_START).past(entry)
            for subscription in tuple(self._subscriptions):
                subscription.offer(entry)
        self.published += len(entries)
