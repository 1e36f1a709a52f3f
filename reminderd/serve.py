"""`reminderd serve`: the HTTP API as its own process. Wires settings, logs, the database, the
API's housekeeping and the aiohttp server together; handles signals.

Stateless: run as many as you like behind a load balancer (each keeps its own key cache and rate
limit buckets: docs/api.md). SIGTERM (or SIGINT) drains: /readyz turns 503 at once, the listening
socket closes, requests in flight get REMINDERD_SHUTDOWN_TIMEOUT to finish, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog
from aiohttp import web

from . import __version__, housekeeping, logs
from .api import SERVER_LIMITS, Api
from .exceptions import EX_CONFIG, ConfigError
from .migrate import head_revision
from .settings import Settings
from .store import Store

log = structlog.get_logger("reminderd.api")


class Server:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self.port: int | None = None
        self.api: Api | None = None

    def request_stop(self, signame: str) -> None:
        log.info("signal", signal=signame)
        if self.api is not None:
            self.api.stopping = True
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._reopen_logs)
        logs.OUTPUT.on_broken = lambda: loop.call_soon_threadsafe(self.request_stop, "EPIPE")  # as the daemon
        settings = self.settings
        log.info("starting", version=__version__, host=settings.api_host, port=settings.api_port)
        try:
            store = await Store.connect_retrying(
                settings.database_url,
                self._stop,
                max_size=settings.api_pool_size,
                pgbouncer=settings.pgbouncer,
                application_name="reminderd-api",
                on_unreachable=lambda exc, delay_s: log.error(
                    "database_unreachable", error=str(exc), retry_in_s=round(delay_s, 2)
                ),
            )
        except ConfigError as exc:
            log.error("configuration_error", error=str(exc))
            return EX_CONFIG
        if store is None:
            return 0
        try:
            expected = head_revision(settings.database_url)
            actual = await store.schema_revision()
            if actual != expected:
                log.error(
                    "schema_not_ready", expected=expected, actual=actual, fix="run `reminderd migrate` first"
                )
                return EX_CONFIG
            api = self.api = Api(settings, store, head_revision=expected)
            api.metrics.watch_pool(store.pool_in_use, store.pool_idle)
            api.metrics.database_up.set(1)
            runner = web.AppRunner(
                api.app(),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=settings.shutdown_timeout_s,
                **SERVER_LIMITS,
            )
            await runner.setup()
            try:
                site = web.TCPSite(runner, settings.api_host, settings.api_port, backlog=1024)
                await site.start()
            except OSError as exc:
                await runner.cleanup()
                log.error(
                    "http_listen_failed",
                    host=settings.api_host,
                    port=settings.api_port,
                    error=exc.strerror,
                    fix="choose another REMINDERD_API_PORT",
                )
                return EX_CONFIG
            self.port = int(runner.addresses[0][1])
            log.info(
                "listening",
                host=settings.api_host,
                port=self.port,
                url=f"http://{settings.api_host}:{self.port}",
            )
            chores = housekeeping.for_api(store, api.keys.take_usage)
            wake = asyncio.Event()
            background = asyncio.create_task(chores.run(wake))
            try:
                await self._stop.wait()
            finally:
                log.info("draining", timeout_s=settings.shutdown_timeout_s)
                await runner.cleanup()  # stops listening, lets requests in flight finish
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
                with contextlib.suppress(Exception):
                    await chores.run_once()  # the last key usage
                log.info("stopped")
            return 0
        finally:
            await store.close()

    def _reopen_logs(self) -> None:
        try:
            logs.configure(self.settings.log_level, log_file=self.settings.log_file)
        except ConfigError as exc:  # its directory went away: the file open now is kept
            log.error("reload_failed", error=str(exc), keeping="the current log file")
            return
        log.warning("reloaded", log_file=self.settings.log_file)
