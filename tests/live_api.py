"""Fixtures for tests against a real `reminderd serve` process (a plugin of tests/conftest.py): one
server per test module, on its own database clone, running as the reminderd_api role; each test
gets a tenant and API key of its own, so tests share the server without seeing each other's
messages.

A module using it runs its tests in the module's event loop:
`pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]`.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest_asyncio
from support import api_role_url

from reminderd.testing import DaemonProcess, add_api_key, add_tenant, api_listening_port, daemon_env

_tenants = itertools.count(1)


@dataclass
class LiveApi:
    """`reminderd serve` at `url`, on `database_url` (the superuser's view of its database)."""

    url: str
    database_url: str
    process: DaemonProcess


@dataclass
class TenantKey:
    tenant: str
    key: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live_api(module_database_url: str) -> AsyncIterator[LiveApi]:
    db = await asyncpg.connect(module_database_url)
    try:
        serve_url = await api_role_url(db, module_database_url)
    finally:
        await db.close()
    env = daemon_env(serve_url, REMINDERD_API_HOST="127.0.0.1", REMINDERD_API_PORT="0",
                     REMINDERD_API_KEY_CACHE="0", REMINDERD_SHUTDOWN_TIMEOUT="5")
    process = await DaemonProcess.start(env, command="serve", keep_lines=2000)
    try:
        port = await api_listening_port(process)
        yield LiveApi(f"http://127.0.0.1:{port}", module_database_url, process)
    finally:
        await process.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def api_db(live_api: LiveApi) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to the server's database, for arranging rows and checking them."""
    connection = await asyncpg.connect(live_api.database_url)
    yield connection
    await connection.close()


async def new_tenant(db: asyncpg.Connection, *, read_only: bool = False,
                     callback_url: str = "https://example.com/cb") -> TenantKey:
    """A tenant of its own (sdk1, sdk2, …) and an API key for it."""
    tenant = f"sdk{next(_tenants)}"
    await add_tenant(db, tenant, callback_url)
    return TenantKey(tenant, await add_api_key(db, tenant, name="sdk-tests", read_only=read_only))


@pytest_asyncio.fixture(loop_scope="module")
async def tenant_key(api_db: asyncpg.Connection) -> TenantKey:
    return await new_tenant(api_db)
