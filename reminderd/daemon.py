"""`reminderd run`: wire settings, database, HTTP client, worker and health server together;
handle signals; speak systemd's notify protocol."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from typing import TYPE_CHECKING

import structlog

from . import __version__, logs, sdnotify
from .callback import CallbackClient
from .exceptions import EX_CONFIG, ConfigError
from .migrate import HEAD_REVISION
from .settings import Settings
from .store import QUERY_DEADLINE_S, DatabaseDefaults, Store
from .worker import Worker

if TYPE_CHECKING:
    from .health import HealthServer

log = structlog.get_logger("reminderd")

DEFAULTS_FIX = (
    "make reminderd.config's backfill, max_lateness and lookback equal to REMINDERD_BACKFILL, "
    "REMINDERD_MAX_LATENESS and REMINDERD_LOOKBACK: the database refuses late rows by the first, "
    "the daemon expires them by the second"
)
# Claim loop, recorder, housekeeping, liveness (heartbeat), one spare for /readyz; plus one LISTEN.
POOL_SIZE = 5


async def connect_with_retry(settings: Settings, stop: asyncio.Event) -> Store | None:
    """The daemon's pool, waiting for a database that is not up yet (Store.connect_retrying); every
    query it runs is bounded by QUERY_DEADLINE_S."""
    return await Store.connect_retrying(
        settings.database_url, stop, max_size=POOL_SIZE, pgbouncer=settings.pgbouncer,
        query_deadline_s=QUERY_DEADLINE_S, synchronous_commit=settings.synchronous_commit,
        on_unreachable=lambda exc, delay_s: log.error(
            "database_unreachable", error=str(exc), retry_in_s=round(delay_s, 2)),
    )


class Daemon:
    def __init__(self, settings: Settings, config_file: str | None = None) -> None:
        self.settings = settings
        self._config_file = config_file
        self._stop = asyncio.Event()
        self._worker: Worker | None = None
        self._health: HealthServer | None = None

    def request_stop(self, signame: str) -> None:
        log.info("signal", signal=signame)
        self._stop.set()
        if self._worker is not None:
            self._worker.stop()

    def reload(self) -> None:
        """SIGHUP: reopen the log file and take the log level from the environment and config
        file again. In-flight work is untouched."""
        try:
            fresh, _ = Settings.load(os.environ, self._config_file)
        except ConfigError as exc:
            log.error("reload_failed", error=str(exc), keeping="the current settings")
            return
        try:
            logs.configure(fresh.log_level, log_file=fresh.log_file)
        except ConfigError as exc:  # the new log file cannot be opened: the old one is still open
            log.error("reload_failed", error=str(exc), keeping="the current settings")
            return
        log.warning("reloaded", log_level=fresh.log_level, log_file=fresh.log_file)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        # stdout's reader went away (`| head`, journald restarted): stop as on SIGTERM, exit 1 (cli.py).
        logs.OUTPUT.on_broken = lambda: loop.call_soon_threadsafe(self.request_stop, "EPIPE")

        settings = self.settings
        log.info("starting", version=__version__, **_public_settings(settings))
        try:
            store = await connect_with_retry(settings, self._stop)
        except ConfigError as exc:
            log.error("configuration_error", error=str(exc))
            return EX_CONFIG
        if store is None:
            return 0
        try:
            expected = HEAD_REVISION
            actual = await store.schema_revision()
            if actual != expected:
                log.error("schema_not_ready", expected=expected, actual=actual,
                          fix="run `reminderd migrate` first")
                return EX_CONFIG
            if differences := defaults_differ(settings, await store.database_defaults()):
                log.warning("database_defaults_differ", **differences, fix=DEFAULTS_FIX)
            client = CallbackClient(settings)
            try:
                return await self._run_worker(store, client, expected)
            finally:
                await client.close()
        finally:
            await store.close()

    async def _run_worker(self, store: Store, client: CallbackClient, head: str | None) -> int:
        worker = self._worker = Worker(self.settings, store, client)
        worker.metrics.watch_pool(store.pool_in_use, store.pool_idle)
        if self._stop.is_set():
            return 0
        side_tasks = [asyncio.create_task(self._tell_systemd(worker))]
        if self.settings.http_port:
            try:  # bound now, so a port in use fails the start at once; served once claiming began
                listening = listening_socket(self.settings.http_host, self.settings.http_port)
            except OSError as exc:
                side_tasks[0].cancel()
                log.error("http_listen_failed", host=self.settings.http_host, port=self.settings.http_port,
                          error=exc.strerror, fix="choose another REMINDERD_HTTP_PORT, or 0 to disable")
                return EX_CONFIG
            side_tasks.append(asyncio.create_task(self._serve_probes(worker, store, head, listening)))
        try:
            await worker.run()
        finally:
            sdnotify.notify("STOPPING=1")
            for task in side_tasks:
                task.cancel()
            await asyncio.gather(*side_tasks, return_exceptions=True)
            if self._health is not None:
                await self._health.stop()
        return 0

    async def _serve_probes(
        self, worker: Worker, store: Store, head: str | None, listening: socket.socket
    ) -> None:
        """/healthz, /readyz and /metrics, from the first claim on: the HTTP server's import (aiohttp,
        0.15 s) is not on the way to the first callback."""
        await worker.ready.wait()
        from .health import HealthServer

        self._health = HealthServer(self.settings, worker, store, head)
        await self._health.start(listening)
        log.info("http_listening", host=self.settings.http_host, port=self._health.port)

    async def _tell_systemd(self, worker: Worker) -> None:
        """READY=1 after the first successful claim; then, when systemd set a watchdog, WATCHDOG=1
        only while the claim loop keeps coming round, so a wedged loop gets restarted."""
        await worker.ready.wait()
        sdnotify.notify(f"READY=1\nSTATUS=delivering (concurrency {self.settings.concurrency})")
        log.info("ready")
        interval_s = sdnotify.watchdog_interval_s()
        while interval_s:
            if worker.alive:
                sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval_s)


def defaults_differ(settings: Settings, database: DatabaseDefaults) -> dict[str, str]:
    """Where the defaults the database checks new rows with differ from the daemon's: a row the
    database accepts could then expire at once, or one the daemon would send be refused."""
    pairs = {
        "backfill": (database.backfill, settings.backfill),
        "max_lateness_s": (database.max_lateness_s, settings.max_lateness_s),
        "lookback_s": (database.lookback_s, settings.lookback_s),
    }
    return {name: f"database {ours!s}, daemon {theirs!s}" for name, (ours, theirs) in pairs.items()
            if ours is not None and ours != theirs}


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) and listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


def _public_settings(settings: Settings) -> dict[str, str]:
    return {name.removeprefix("REMINDERD_").lower(): value for name, value in settings.masked().items()}
