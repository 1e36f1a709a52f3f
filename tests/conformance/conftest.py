"""The callback client conformance suite's fixtures: every test runs on the stock asyncio loop and on
uvloop (what the daemon runs on), for each client implementation listed in IMPLEMENTATIONS."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest
import trustme
import uvloop

from conformance.scripted_server import Client
from reminderd.callback import CallbackClient
from reminderd.settings import Network, Settings
from reminderd.ssrf import Resolver, system_resolver

Factory = Callable[[Settings, Resolver, ssl.SSLContext | None], Client]

IMPLEMENTATIONS: dict[str, Factory] = {
    "http1": lambda settings, resolve, context: CallbackClient(settings, resolver=resolve, ssl_context=context),
}

LOOPBACK_V4: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.1/32"),)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], Any]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=list(IMPLEMENTATIONS))
async def make_client(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Client]]:
    """`make_client(resolver=…, ssl_context=…, **settings)`: a client, closed after the test.

    Callbacks may reach 127.0.0.1 only unless `allowed_callback_networks` says otherwise; the
    timeout is 2 s unless `callback_timeout_s` says otherwise.
    """
    factory = IMPLEMENTATIONS[request.param]
    made: list[Client] = []

    def make(
        *, resolver: Resolver = system_resolver, ssl_context: ssl.SSLContext | None = None, **overrides: Any
    ) -> Client:
        settings = Settings(
            database_url="postgresql://unused@127.0.0.1:1/unused",
            **{"allowed_callback_networks": LOOPBACK_V4, "callback_timeout_s": 2.0, **overrides},
        )
        client = factory(settings, resolver, ssl_context)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> Iterator[Callable[[], ssl.SSLContext]]:
    """A fresh server context per server (each records its own SNI) for hooks.test and 127.0.0.1."""
    certificate = ca.issue_cert("hooks.test", "127.0.0.1")

    def make() -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate.configure_cert(context)
        return context

    yield make


@pytest.fixture(scope="session")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    """The daemon's default verification (hostname checked), trusting the test CA only."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context
