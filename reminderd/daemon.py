"""`reminderd run`: wire settings, database, HTTP client and worker together; handle signals."""

from __future__ import annotations

import asyncio
import signal

import structlog
from alembic.script import ScriptDirectory

from . import __version__
from .callback import CallbackClient
from .migrate import alembic_config
from .settings import Settings
from .store import CONNECTION_ERRORS, Store
from .worker import Worker

log = structlog.get_logger("reminderd")

EX_CONFIG = 78  # sysexits.h: a configuration error; systemd should not restart-loop on it


class SchemaNotReady(Exception):
    """The database schema is not at the migration head."""


def head_revision(database_url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


async def connect_with_retry(settings: Settings, stop: asyncio.Event) -> Store | None:
    """Connect, retrying with backoff while the database is unreachable (it may start after us)."""
    delay = 0.5
    while not stop.is_set():
        try:
            return await Store.connect(settings.database_url, max_size=4)
        except CONNECTION_ERRORS as exc:
            log.error("database_unreachable", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            delay = min(delay * 2, 30.0)
    return None


async def run(settings: Settings) -> int:
    stop = asyncio.Event()
    worker: Worker | None = None

    def request_stop(signame: str) -> None:
        log.info("signal", signal=signame)
        stop.set()
        if worker is not None:
            worker.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)

    log.info("starting", version=__version__, **_public_settings(settings))
    store = await connect_with_retry(settings, stop)
    if store is None:
        return 0
    try:
        expected = head_revision(settings.database_url)
        actual = await store.schema_revision()
        if actual != expected:
            log.error("schema_not_ready", expected=expected, actual=actual,
                      fix="run `reminderd migrate` first")
            return EX_CONFIG
        client = CallbackClient(settings)
        try:
            worker = Worker(settings, store, client)
            if stop.is_set():
                return 0
            await worker.run()
        finally:
            await client.close()
    finally:
        await store.close()
    return 0


def _public_settings(settings: Settings) -> dict[str, str]:
    return {name.removeprefix("REMINDERD_").lower(): value for name, value in settings.masked().items()}
