"""Test helpers shared by the test modules (the receiver, the cluster and the daemon process they
share with the demo and the bench are in reminderd.testing)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from reminderd.api import SERVER_LIMITS, Api
from reminderd.callback import CallbackClient
from reminderd.jobs import Job
from reminderd.migrate import head_revision
from reminderd.settings import Settings
from reminderd.store import Store
from reminderd.testing import daemon_env
from reminderd.worker import Worker

T = TypeVar("T")

TEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SOME_OCCURRENCE = datetime(2026, 12, 24, 3, 30, tzinfo=UTC)
CALLBACK = "https://example.com/cb"  # add_tenant's default callback URL
LOOKBACK_S = 120.0  # the claim's lookback in tests that call the store directly
TOLERANCE = timedelta(seconds=5)  # how near a database time must be to the expected one


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def make_job(**changes: Any) -> Job:
    """A claimed one-off message, as the claim query would return it, with `changes` applied."""
    base = Job(
        id=42,
        tenant_id="acme",
        ref_id="invoice-7",
        payload_json='{"amount": 12.5, "currency": "EUR"}',
        callback_url="https://hooks.example/cb",
        scheduled_for=SOME_OCCURRENCE,
        attempt=1,
        max_attempts=None,
        signing_secret=TEST_SECRET,
    )
    return replace(base, **changes)


async def poll_until(
    check: Callable[[], Awaitable[T | None]], timeout_s: float = 15, interval_s: float = 0.05
) -> T:
    """Evaluate the async `check` until it returns something truthy, and return that; bounded, never
    a blind sleep."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s (last value {value!r})")
        await asyncio.sleep(interval_s)


# The worker in-process ----------------------------------------------------------------------------

LOCALHOST = (ipaddress.ip_network("127.0.0.0/8"),)


def fast_settings(database_url: str, **overrides: Any) -> Settings:
    base = Settings(
        database_url=database_url,
        poll_interval_s=0.2,
        retry_base_s=0.05,
        retry_cap_s=0.2,
        callback_timeout_s=2,
        lease_s=10,
        shutdown_timeout_s=5,
        allowed_callback_networks=LOCALHOST,
    )
    return replace(base, **overrides)


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker]:
    store = await Store.connect(settings.database_url)
    client = CallbackClient(settings)
    worker = Worker(settings, store, client)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
        await client.close()
        await store.close()


async def drain(settings: Settings, *, due_within_s: float | None = None, timeout_s: float = 30) -> Worker:
    """Run a worker in burst mode, `Worker.run(until_idle=True)`: claim, send and record until
    nothing is left to do soon, then stop. No polling, no sleeps; bounded by `timeout_s`."""
    store = await Store.connect(settings.database_url)
    client = CallbackClient(settings)
    worker = Worker(settings, store, client)
    try:
        await asyncio.wait_for(worker.run(until_idle=True, due_within_s=due_within_s), timeout_s)
    except TimeoutError:
        raise AssertionError(f"the worker was not idle within {timeout_s}s") from None
    finally:
        await client.close()
        await store.close()
    return worker


# The daemon as a process --------------------------------------------------------------------------

FAST_DAEMON = {
    "REMINDERD_POLL_INTERVAL": "0.2",
    "REMINDERD_RETRY_BASE": "0.1",
    "REMINDERD_RETRY_CAP": "0.5",
    "REMINDERD_CALLBACK_TIMEOUT": "5",
    "REMINDERD_LEASE": "10",
    "REMINDERD_SHUTDOWN_TIMEOUT": "10",
    "REMINDERD_HTTP_PORT": "0",
}


def fast_daemon_env(database_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a `reminderd run` with test timings (fast_settings' counterpart)."""
    return daemon_env(database_url, **{**FAST_DAEMON, **overrides})


# Rows ---------------------------------------------------------------------------------------------


async def db_now(db: asyncpg.Connection) -> datetime:
    """The database's clock (its transaction time): tests compare with it, never with the host's."""
    now: datetime = await db.fetchval("SELECT now()")
    return now


def scans_of(node: dict[str, Any], relation: str) -> list[str]:
    """How `relation` is read in a JSON plan: the index of each scan of it, or the scan's type."""
    found = []
    if node.get("Relation Name") == relation and "Scan" in node.get("Node Type", ""):
        found.append(node.get("Index Name") or node["Node Type"])
    for child in node.get("Plans", []):
        found += scans_of(child, relation)
    return found


def near(actual: datetime | None, expected: datetime) -> bool:
    return actual is not None and abs(actual - expected) < TOLERANCE


async def row_by_id(db: asyncpg.Connection, message_id: int) -> asyncpg.Record:
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT * FROM reminderd.scheduled_messages WHERE id = $1", message_id
    )
    assert row is not None
    return row


async def status_by_id(db: asyncpg.Connection, message_id: int) -> str:
    status: str = await db.fetchval("SELECT status FROM reminderd.scheduled_messages WHERE id = $1", message_id)
    return status


async def newest_row(db: asyncpg.Connection, ref: str) -> asyncpg.Record | None:
    """The newest row for `ref` (a replaced schedule leaves older ones behind), or None."""
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT * FROM reminderd.scheduled_messages WHERE ref_id = $1 ORDER BY id DESC LIMIT 1", ref
    )
    return row


async def row_by_ref(db: asyncpg.Connection, ref: str) -> asyncpg.Record:
    """The newest row for `ref`, which must exist (a test that drained the worker reads its end)."""
    row = await newest_row(db, ref)
    assert row is not None, f"no message with ref {ref!r}"
    return row


def settled(db: asyncpg.Connection, ref: str, *statuses: str) -> Callable[[], Awaitable[asyncpg.Record | None]]:
    """A check for poll_until: the newest row for `ref` once its status is one of `statuses`."""

    async def check() -> asyncpg.Record | None:
        row = await newest_row(db, ref)
        return row if row is not None and row["status"] in statuses else None

    return check


@asynccontextmanager
async def inserted_before_the_outage(db: asyncpg.Connection) -> AsyncIterator[None]:
    """Rows inserted inside are as if inserted while they were still on time, and then left
    waiting by an outage: the insert-time refusal of a message already too late to send
    (trigger scheduled_messages_admit, and with it the other insert-time checks and holds) is off
    meanwhile, so a test sets up that backlog without waiting hours for it."""
    await db.execute("ALTER TABLE reminderd.scheduled_messages DISABLE TRIGGER scheduled_messages_admit")
    try:
        yield
    finally:
        await db.execute("ALTER TABLE reminderd.scheduled_messages ENABLE TRIGGER scheduled_messages_admit")


async def insert_due(db: asyncpg.Connection, count: int) -> None:
    """`count` messages of tenant acme, due now: bulk:1 … bulk:<count>."""
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) "
        "SELECT 'acme', 'bulk:' || i, now() FROM generate_series(1, $1) AS i",
        count,
    )


async def counts(db: asyncpg.Connection) -> dict[str, int]:
    """Messages by status."""
    rows = await db.fetch("SELECT status, count(*) FROM reminderd.scheduled_messages GROUP BY status")
    return {row["status"]: row["count"] for row in rows}


def all_sent(db: asyncpg.Connection, expected: int) -> Callable[[], Awaitable[bool]]:
    """A check for poll_until: exactly `expected` messages are sent."""

    async def check() -> bool:
        return (await counts(db)).get("sent", 0) == expected

    return check


# The HTTP API in-process -------------------------------------------------------------------------

API_ROLE = "reminderd_api_test"  # a login role granted reminderd_api only: what `reminderd serve` runs as
API_ROLE_PASSWORD = "reminderd-api-test"  # ignored under trust authentication, needed under scram


def url_as(database_url: str, user: str, password: str) -> str:
    """The same server and database, as another role."""
    parts = urlsplit(database_url)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}{port}"))


async def api_role_url(db: asyncpg.Connection, database_url: str) -> str:
    """The database as API_ROLE, created (once per cluster) with reminderd_api and nothing else."""
    await db.execute(f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{API_ROLE}') THEN
                CREATE ROLE {API_ROLE} LOGIN PASSWORD '{API_ROLE_PASSWORD}' IN ROLE reminderd_api;
            END IF;
        END $$""")
    return url_as(database_url, API_ROLE, API_ROLE_PASSWORD)


def api_settings(database_url: str, **overrides: Any) -> Settings:
    return replace(fast_settings(database_url), **{"api_key_cache_s": 0.0, **overrides})


@dataclass
class ApiClient:
    """An in-process `reminderd serve` (aiohttp's test server, on loopback) and a way to call it
    with a key: `await http.call("POST", "/v1/messages", key, json={...})`."""

    client: TestClient[web.Request, web.Application]
    api: Api

    async def call(
        self, method: str, path: str, key: str | None, *, json: Any = None, data: bytes | None = None,
        headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        async with self.client.request(method, path, json=json, data=data, headers=sent, params=params) as r:
            body = await r.read()
            return Answer(r.status, dict(r.headers), body)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[ApiClient]:
    store = await Store.connect(settings.database_url, max_size=4)
    api = Api(settings, store, head_revision=head_revision(settings.database_url))
    client = TestClient(TestServer(api.app(), host="127.0.0.1", **SERVER_LIMITS))
    await client.start_server()
    try:
        yield ApiClient(client, api)
    finally:
        await client.close()
        await store.close()


# The JavaScript SDK ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "clients" / "js"


def node() -> str:
    """The `node` executable (Node.js >= 18; the SDK targets 20); the test fails when there is none."""
    import pytest  # support.py is imported by the harness's own checks too, where pytest is the runner

    found = shutil.which("node")
    if found is None:
        pytest.fail("Node.js is not installed: `make install` (.ci/setup) installs it")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 18, f"the JavaScript SDK needs Node >= 18, found {version}"
    return found


# Callback URLs and what is wrong with each (reminderd/callback_urls.py; None: nothing), one or more
# for each step of the rule, in its order; the last, IDNA_ONLY of them, only Python can say (SQL does
# not hold the IDNA tables).
CALLBACK_URLS = [
    ("https://hooks.example.com/reminders?x=1#f", None),
    ("HTTP://Hooks.Example.COM:8080", None),
    ("http://user:pw@hooks.example.com/cb", None),
    ("http://localhost:9000/cb", None),
    ("http://under_score-and-dash.example./cb", None),  # a trailing dot: fully qualified
    ("http://" + "a" * 63 + ".example/cb", None),
    ("http://" + ".".join(["a" * 63] * 3) + "." + "a" * 61 + "/cb", None),  # 253 characters
    ("http://h:65535/", None),
    ("http://h:1/", None),
    ("http://192.0.2.1/cb", None),
    ("http://[2001:db8::1]:8443/cb", None),
    ("http://[::ffff:192.0.2.1]/cb", None),
    ("http://xn--bcher-kva.example/cb", None),  # bücher.example, in its IDNA form
    ("http://XN--BCHER-KVA.example/cb", None),
    ("http://xn--ls8h.example/cb", None),  # an emoji: IDNA 2003's, as the daemon decodes it
    ("ftp://example.com/x", "is not an http(s) URL"),
    ("https://", "is not an http(s) URL"),
    ("http:///cb", "is not an http(s) URL"),
    ("example.com/cb", "is not an http(s) URL"),
    ("http://a b.example/cb", "has a space or a control character"),
    ("http://example.com/a b", "has a space or a control character"),
    ("http://ex\tample.com/", "has a space or a control character"),
    ("http://example.com/\u3000", "has a space or a control character"),
    ("http://a@b@example.com/",
     "has more than one @ before its host (write an @ of the user or password as %40)"),
    ("http://user@/cb", "has no host"),
    ("http://:8080/cb", "has no host"),
    ("http://example.com:1234567/cb", 'has port "1234567": a port is 1 to 65535'),
    ("http://example.com:65536/cb", 'has port "65536": a port is 1 to 65535'),
    ("http://example.com:0/cb", 'has port "0": a port is 1 to 65535'),
    ("http://example.com:/cb", 'has port "": a port is 1 to 65535'),
    ("http://example.com:80:80/cb", 'has port "80:80": a port is 1 to 65535'),
    ("http://[::1%25lo]/cb", 'has host "[::1%25lo]", which is not an IPv6 address'),
    ("http://[192.0.2.1]/cb", 'has host "[192.0.2.1]", which is not an IPv6 address'),
    ("http://[::1/cb", 'has host "[::1", which is not an IPv6 address'),
    ("http://[::1.2.3]/cb", 'has host "[::1.2.3]", which is not an IPv6 address'),
    ("http://127.1/cb",
     'has host "127.1", an address in a non-standard form (write four numbers, like 192.0.2.1)'),
    ("http://2130706433/cb",
     'has host "2130706433", an address in a non-standard form (write four numbers, like 192.0.2.1)'),
    ("http://0x7f.0.0.1/cb",
     'has host "0x7f.0.0.1", an address in a non-standard form (write four numbers, like 192.0.2.1)'),
    ("http://192.0.2.01/cb",
     'has host "192.0.2.01", an address in a non-standard form (write four numbers, like 192.0.2.1)'),
    ("http://a!b.example/cb", 'has host "a!b.example" with "!", which a host name cannot have'),
    ("http://a%41.example/cb", 'has host "a%41.example" with "%", which a host name cannot have'),
    ("http://a\\b.example/cb", 'has host "a\\b.example" with "\\", which a host name cannot have'),
    ("http://exa..mple.com/cb", 'has host "exa..mple.com" with an empty label'),
    ("http://.example.com/cb", 'has host ".example.com" with an empty label'),
    ("http://example.com../cb", 'has host "example.com.." with an empty label'),
    ("http://" + "a" * 64 + ".example/cb",
     f'has host "{"a" * 64}.example" with a label longer than 63 characters'),
    ("http://" + ".".join(["a" * 63] * 4) + "/cb",
     f'has host "{".".join(["a" * 63] * 4)}" longer than 253 characters'),
    ("http://bücher.example/cb", 'has host "bücher.example" with "ü" (U+00FC), which a host name cannot have:'
     ' write an international name in its IDNA form (xn--)'),
    ("http://\u00ad.example/cb", 'has host "\u00ad.example" with "\u00ad" (U+00AD), which a host name cannot'
     ' have: write an international name in its IDNA form (xn--)'),
    ("http://\uff11\uff12\uff17.\uff11/cb", 'has host "\uff11\uff12\uff17.\uff11" with "\uff11" (U+FF11),'
     ' which a host name cannot have: write an international name in its IDNA form (xn--)'),
    ("https://xn--zz.example/hook",  # punycode cannot decode it
     'has host "xn--zz.example" with label "xn--zz", which is not a valid IDNA A-label (punycode)'),
    ("https://a.xn--a.example/hook",  # a control character (U+0080)
     'has host "a.xn--a.example" with label "xn--a", which is not a valid IDNA A-label (punycode)'),
    ("https://XN--.example/hook",  # nothing
     'has host "XN--.example" with label "XN--", which is not a valid IDNA A-label (punycode)'),
    ("https://xn--abc-.example/hook",  # ASCII only: abc
     'has host "xn--abc-.example" with label "xn--abc-", which is not a valid IDNA A-label (punycode)'),
    ("https://xn--a-ecp.example/hook",  # a⒈, not in normal form (NFKC: a1.)
     'has host "xn--a-ecp.example" with label "xn--a-ecp", which is not a valid IDNA A-label (punycode)'),
    ("https://xn--a-vca.example/hook",  # a and a soft hyphen, which shows as nothing
     'has host "xn--a-vca.example" with label "xn--a-vca", which is not a valid IDNA A-label (punycode)'),
    # Python's alone: an A-label that decodes to what the IDNA tables refuse.
    ("https://xn--a-0hc.example/hook",  # a Latin a and a Hebrew alef: the bidi rule
     'has host "xn--a-0hc.example" with label "xn--a-0hc", which is not a valid IDNA A-label (punycode)'),
    ("https://xn--4ba.example/hook",  # an upper-case Á
     'has host "xn--4ba.example" with label "xn--4ba", which is not a valid IDNA A-label (punycode)'),
]
IDNA_ONLY = 2


# Database URLs with hostile passwords (tests/unit/test_url_secrets.py, acceptance/test_daemon_url_secrets.py)

HOSTILE_URL_CHARACTERS = "/?#@=&:%[] "
# Letters and digits no message, setting name or default holds (no REMINDERD_… letter): a piece of
# a password found in the output is the password's, not a word of the sentence around it.
PASSWORD_MARKS = "QXZJKWVY789"


def url_with_password(password: str, port: int = 5432) -> str:
    return f"postgresql://app:{password}@127.0.0.1:{port}/app"


def assert_password_hidden(password: str, url: str, text: str) -> None:
    """No piece of `password` of 4 characters or more shows in `text`, but pieces that are also in
    the rest of `url` or hold no letter or digit (the output's own punctuation, `  # env`)."""
    rest = url.replace(password, "", 1)
    pieces = [password[start:end] for start in range(len(password))
              for end in range(start + 4, len(password) + 1)
              if password[start:end] not in rest and any(c in PASSWORD_MARKS for c in password[start:end])]
    shown = [piece for piece in pieces if piece in text]
    assert not shown, f"BUG: the password {password!r} shows ({shown[:3]}) in:\n{text}"
