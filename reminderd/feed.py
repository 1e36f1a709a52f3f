"""The live feed: fires pushed to every open dashboard as they are recorded.

One `FeedHub` per `reminderd serve` process holds one LISTEN connection (reminderd_feed: the
trigger events_count_fires notifies the ids of the fires each statement records, at commit),
reads those events once by primary key, and hands each to every subscriber whose filter takes it.
So the database does the same work for one browser or for fifty, and nothing polls. If the LISTEN
connection drops, the hub reconnects and catches up from the last event id it saw; a browser that
reconnects catches up the same way from its Last-Event-ID (Server-Sent Events do that themselves).
A subscriber too slow to keep up is dropped (its browser reconnects and catches up) rather than
let its queue grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field

import structlog

from .dashboard_rows import FIRES, FeedEntry
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
        "id": entry.id,
        "at": entry.created_at.isoformat(timespec="milliseconds"),
        "message_id": entry.message_id,
        "tenant_id": entry.tenant_id,
        "ref_id": entry.ref_id,
        "event": entry.event,
        "status": entry.status,
        "fire_at": None if entry.fire_at is None else entry.fire_at.isoformat(timespec="seconds"),
        "reason": entry.reason,
    }, ensure_ascii=False)


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
        self._ids: list[int] = []
        self._wake = asyncio.Event()
        self._last_id = 0
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

    def _notified(self, ids: list[int]) -> None:
        self._ids.extend(ids)
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
                if self._last_id == 0:
                    await self._remember_newest()
                elif not self._caught_up:
                    await self._catch_up()
            await self._wake.wait()
            self._wake.clear()
            ids, self._ids = self._ids, []
            if ids:
                try:
                    self._publish(await self._store.feed_events(ids))
                except Exception as exc:  # the database is away: catch up once it is back
                    log.warning("feed_read_failed", error=describe(exc))
                    self._caught_up = False
                    await self._listener.close()

    async def _remember_newest(self) -> None:
        """At start: the newest fire so far, from which a reconnect catches up."""
        try:
            newest = await self._store.feed_recent(None, limit=1)
        except Exception as exc:
            log.warning("feed_read_failed", error=describe(exc))
            await self._listener.close()
            return
        self._last_id = newest[0].id if newest else -1  # -1: none yet, catch up from the start
        self._caught_up = True

    async def _catch_up(self) -> None:
        """After a reconnect: the fires recorded while the hub was not listening."""
        try:
            missed = await self._store.feed_recent(None, after_id=max(self._last_id, 0), limit=CATCH_UP)
        except Exception as exc:
            log.warning("feed_read_failed", error=describe(exc))
            await self._listener.close()
            return
        self._caught_up = True
        self._publish(sorted(missed, key=lambda e: e.id))

    def _publish(self, entries: Collection[FeedEntry]) -> None:
        for entry in entries:
            self._last_id = max(self._last_id, entry.id)
            for subscription in tuple(self._subscriptions):
                subscription.offer(entry)
        self.published += len(entries)
