"""The daemon's own HTTP endpoints: /healthz (liveness), /readyz (readiness), /metrics."""

from __future__ import annotations

import asyncio
import socket
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .settings import Settings
from .store import Store
from .worker import Worker

READY_QUERY_TIMEOUT_S = 2.0


class HealthServer:
    def __init__(self, settings: Settings, worker: Worker, store: Store, head_revision: str | None) -> None:
        self._settings = settings
        self._worker = worker
        self._store = store
        self._head = head_revision
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        self._app = app

    @property
    def port(self) -> int:
        assert self._runner is not None
        return int(self._runner.addresses[0][1])

    async def start(self, listening: socket.socket | None = None) -> None:
        """Serve on `listening` (a bound, listening socket), or on REMINDERD_HTTP_HOST and _PORT."""
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site: web.BaseSite
        if listening is not None:
            site = web.SockSite(self._runner, listening)
        else:
            site = web.TCPSite(self._runner, self._settings.http_host, self._settings.http_port)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def healthz(self, _request: web.Request) -> web.Response:
        """200 while the event loop turns (this answer proves it) and the claim loop keeps coming
        round, also while the database does not answer (restarting would not help: the loop
        waits for it with bounded queries); `database` says whether it answers."""
        database = self._database()
        if self._worker.alive:
            return web.json_response({"healthy": True, "ticks": self._worker.ticks, "database": database})
        return web.json_response({"healthy": False, "reason": "claim loop is wedged", "database": database},
                                 status=503)

    def _database(self) -> dict[str, object]:
        health = self._store.health
        if health.failing_since is None:
            return {"answering": True}
        return {"answering": False, "failing_for_s": round(time.monotonic() - health.failing_since, 1),
                "error": health.last_error}

    async def readyz(self, _request: web.Request) -> web.Response:
        """200 only when the database answers and its schema is at the migration head."""
        if self._worker.stopping:
            return _not_ready("shutting down")
        try:
            revision = await asyncio.wait_for(self._store.schema_revision(), READY_QUERY_TIMEOUT_S)
        except TimeoutError:
            return _not_ready(f"database did not answer within {READY_QUERY_TIMEOUT_S:g}s")
        except Exception as exc:
            return _not_ready(f"database unreachable: {type(exc).__name__}")
        if revision != self._head:
            return _not_ready(f"migrations pending: schema at {revision}, code expects {self._head}")
        return web.json_response({"ready": True, "schema": revision})

    async def metrics(self, _request: web.Request) -> web.Response:
        response = web.Response(body=self._worker.metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


def _not_ready(reason: str) -> web.Response:
    return web.json_response({"ready": False, "reason": reason}, status=503)
