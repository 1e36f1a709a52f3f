"""Shared fixtures: a real PostgreSQL server, a migrated template database, one clone per test.

Where the server comes from, first match wins:
1. REMINDERD_TEST_DATABASE_URL (a server where this role may CREATE DATABASE);
2. testcontainers, when it is installed and a Docker engine answers a ping;
3. a throwaway cluster from the local PostgreSQL server binaries (reminderd.testing).

A module whose tests change rows only marks itself `pytestmark = pytest.mark.shared_database`: its
tests then share one clone, emptied before each test, instead of a clone each. Clones are made
ahead and dropped behind in a background thread (clones.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from clones import Clones
from support import TEST_SECRET, ApiClient, api_role_url, api_settings, running_api

from reminderd.migrate import upgrade
from reminderd.store import Store
from reminderd.testing import Cluster, Receiver, add_tenant, throwaway_cluster

pytest_plugins = ["live_api"]  # live_api, api_db, tenant_key: a real `reminderd serve` per module


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@contextlib.contextmanager
def _docker_postgres() -> Iterator[str | None]:
    try:
        import docker
        from testcontainers.postgres import PostgresContainer

        docker.from_env().ping()
    except Exception:
        yield None
        return
    with PostgresContainer("postgres:15", driver=None) as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, Cluster | None]]:
    """The server's URL, and the cluster itself when this session started it (so tests may
    restart it)."""
    explicit = os.environ.get("REMINDERD_TEST_DATABASE_URL")
    if explicit:
        yield explicit, None
        return
    with _docker_postgres() as docker_url:
        if docker_url:
            yield docker_url, None
            return
        with throwaway_cluster() as cluster:
            yield cluster.url(), cluster


@pytest.fixture(scope="session")
def pg_server_url(pg_server: tuple[str, Cluster | None]) -> str:
    return pg_server[0]


@pytest.fixture
def pg_cluster(pg_server: tuple[str, Cluster | None]) -> Cluster:
    """The local cluster, for tests that stop and start the database server."""
    cluster = pg_server[1]
    if cluster is None:
        pytest.skip("needs the throwaway cluster (REMINDERD_TEST_DATABASE_URL or Docker is in use)")
    return cluster


async def _admin(server_url: str, *statements: str) -> None:
    connection = await asyncpg.connect(server_url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def template_database(pg_server_url: str) -> Iterator[str]:
    """A database migrated once per session; every test clones it (CREATE DATABASE … TEMPLATE)."""
    name = f"reminderd_template_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(pg_server_url, f'CREATE DATABASE "{name}"'))
    upgrade(_with_database(pg_server_url, name))
    yield name
    asyncio.run(_admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def clone_template(pg_server_url: str, template_database: str) -> str:
    """How a test's database is made: `CREATE DATABASE "<name>"` + this. FILE_COPY copies the
    template's files (a checkpoint, cheap with the throwaway cluster's fsync off) where PostgreSQL
    15's default WAL_LOG writes all of its 44 MB of reference data to the WAL: 0.23 s against
    0.43 s per test for creating and dropping it, some minutes over the suite."""

    async def version() -> int:
        connection = await asyncpg.connect(pg_server_url)
        try:
            return int(await connection.fetchval("SHOW server_version_num"))
        finally:
            await connection.close()

    strategy = " STRATEGY FILE_COPY" if asyncio.run(version()) >= 150000 else ""  # before 15: no choice
    return f' TEMPLATE "{template_database}"{strategy}'


@pytest.fixture(scope="session")
def clones(pg_server_url: str, clone_template: str) -> Iterator[Clones]:
    """Clones of the template made ahead and dropped behind the tests, in a background thread."""
    factory = Clones(pg_server_url, clone_template)
    yield factory
    factory.close()


_empty_numbers = itertools.count()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, pg_server_url: str, clones: Clones) -> Iterator[str]:
    """A clone of the template for this test; in a `shared_database` module, the module's clone,
    emptied."""
    if request.node.get_closest_marker("shared_database") is not None:
        yield emptied(request.getfixturevalue("module_database_url"))
        return
    name = clones.take()
    yield _with_database(pg_server_url, name)
    clones.give_back(name)


@pytest.fixture(scope="module")
def module_database_url(pg_server_url: str, clones: Clones) -> Iterator[str]:
    """One clone of the template for a whole module (see `shared_database`)."""
    name = clones.take()
    yield _with_database(pg_server_url, name)
    clones.give_back(name)


EMPTY_TABLES = (
    "TRUNCATE reminderd.deliveries, reminderd.events, reminderd.scheduled_messages,"
    " reminderd.tenant_members, reminderd.tenant_holidays, reminderd.api_keys, reminderd.dashboard_signouts,"
    " reminderd.idempotency_keys,"
    " reminderd.fire_counts, reminderd.lateness_counts,"
    " reminderd.tenants, reminderd.daemons,"
    " reminderd.contacts, reminderd.audiences, reminderd.audience_members, reminderd.broadcast_requests,"
    " reminderd.broadcast_occurrences, reminderd.broadcast_counts,"
    " reminderd.tenant_budgets, reminderd.endpoints, reminderd.endpoint_health, reminderd.frequency_caps,"
    " reminderd.contact_sends, reminderd.usage_days, reminderd.usage_increments RESTART IDENTITY"
)
DEFAULT_CONFIG = (
    "UPDATE reminderd.config SET value = defaults.value FROM (VALUES ('horizon', '90 days'),"
    " ('backfill', 'send'), ('max_lateness', '30 minutes'), ('lookback', '1 day')) AS defaults (key, value)"
    " WHERE config.key = defaults.key"
)


def emptied(database_url: str) -> str:
    """The database with every reminderd table emptied and the SQL settings back at defaults."""
    # replica: no triggers, so that contacts' refusal of TRUNCATE (migration 0030) lets the harness empty it
    asyncio.run(_admin(database_url, "SET session_replication_role = replica", EMPTY_TABLES, DEFAULT_CONFIG))
    return database_url


@pytest.fixture
def empty_database_url(pg_server_url: str) -> Iterator[str]:
    """A database with no schema at all, for migration tests."""
    name = f"reminderd_empty_{os.getpid()}_{next(_empty_numbers)}"
    asyncio.run(_admin(pg_server_url, f'CREATE DATABASE "{name}"'))
    yield _with_database(pg_server_url, name)
    asyncio.run(_admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for arranging rows and asserting on them with SQL."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = await Store.connect(database_url)
    yield s
    await s.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
async def tenant(db: asyncpg.Connection, receiver: Receiver) -> str:
    await add_tenant(db, "acme", receiver.url, signing_secret=TEST_SECRET)
    return "acme"


@pytest.fixture
async def http(db: asyncpg.Connection, database_url: str) -> AsyncIterator[ApiClient]:
    """The HTTP API on an ephemeral loopback port, logged in as its own role (reminderd_api)."""
    url = await api_role_url(db, database_url)
    async with running_api(api_settings(url)) as client:
        yield client
