"""Callback URLs in SQL (migration 0019). reminderd.callback_url_problem() says what Python's
reminderd/callback_urls.py says, word for word; the triggers refuse what the CLI and the API
refuse, with 23514 and a message naming callback_url, whose it is and what is wrong; a row written
before the check (here: with the triggers bypassed) never stops the claim, bounded or lean, and the
daemon refuses it on its first attempt, saying why; migration 0019 upgrades a database holding such
rows."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs
from support import CALLBACK, CALLBACK_URLS, IDNA_ONLY, TEST_SECRET, drain, fast_settings

from reminderd.callback_urls import idna_form, problem
from reminderd.exceptions import InvalidInput
from reminderd.migrate import upgrade
from reminderd.store import Store
from reminderd.testing import Receiver, add_tenant
from reminderd.validation import checked_callback_url

pytestmark = pytest.mark.shared_database

CHECKED_IN_SQL = CALLBACK_URLS[:-IDNA_ONLY]
REFUSED = [(url, wrong) for url, wrong in CHECKED_IN_SQL if wrong is not None]
# Refused by an older release's checks too: their messages and hints stay as they were.
NOT_HTTP = "is not an http(s) URL"
RULE_HINT = ("A callback URL is http(s)://host[:port]/path: a host name (labels of 1 to 63 letters, digits,"
             " - or _; at most 253 characters) or an IP address, a port from 1 to 65535, no spaces or control"
             " characters.")
HTTP_HINT = "Give an absolute http:// or https:// URL, like https://example.com/hooks."
IDNA_HINT = ("An international name is written in its IDNA form: each label with a non-ASCII letter as xn-- and"
             " its punycode, as Python's idna package writes it (https://xn--bcher-kva.example/ for"
             " https://bücher.example/).")

# Made of the pieces a URL's steps turn on, so that every step, and the quick test SQL tries first,
# meets what lies on either side of its edge (a 63- and a 64-character host, port 65535 and 65536).
PIECES = [*"ab1.-_:@[]/?#%!\\ 0x9fA6", "\u00e9", "\u00ad", "\u3002", "\t", "\u2000", "::", "..", "[::1]",
          "255", "65536", "ffff"]
TAILS = ["", "", "/p", ":65535", ":65536", ":0", "a" * 60, "." + "b" * 63, ":6553", ":60000", "a" * 40 + "/x"]
HEADS = ["http://", "https://", "HTTP://", "http:/", "", "http://h", "https://" + "c" * 50]


def sample(count: int, seed: int) -> list[str]:
    pick = random.Random(seed)
    return [pick.choice(HEADS) + "".join(pick.choice(PIECES) for _ in range(pick.randint(0, 14)))
            + pick.choice(TAILS) for _ in range(count)]


PROBLEMS = "SELECT u, reminderd.callback_url_problem(u) AS wrong FROM unnest($1::text[]) AS u"


async def test_sql_says_what_python_says_for_each_step(db: asyncpg.Connection) -> None:
    said = await db.fetch(PROBLEMS, [url for url, _ in CALLBACK_URLS])
    assert [(row["u"], row["wrong"]) for row in said] == [
        *CHECKED_IN_SQL, *((url, None) for url, _ in CALLBACK_URLS[-IDNA_ONLY:])]  # SQL holds no IDNA tables
    assert await db.fetchval("SELECT reminderd.callback_url_problem(NULL)") is None


async def test_sql_and_python_agree_on_thousands_of_odd_urls(db: asyncpg.Connection) -> None:
    urls = sample(20_000, seed=19)
    said = await db.fetch(PROBLEMS, urls)
    differ = [(row["u"], problem(row["u"]), row["wrong"]) for row in said
              if problem(row["u"]) != row["wrong"]
              and not (row["wrong"] is None and "IDNA A-label" in (problem(row["u"]) or ""))]
    assert differ == []
    accepted = sum(row["wrong"] is None for row in said)
    assert 100 < accepted < len(urls) - 1000, "the sample should hold both kinds"


@pytest.mark.parametrize(("url", "wrong"), REFUSED, ids=[url[:40] for url, _ in REFUSED])
async def test_what_the_cli_refuses_sql_refuses_naming_callback_url(
    db: asyncpg.Connection, url: str, wrong: str
) -> None:
    with pytest.raises(InvalidInput) as cli:
        checked_callback_url(url)
    assert wrong in str(cli.value) or wrong == NOT_HTTP
    await add_tenant(db, "acme", CALLBACK)
    written = idna_form(url)
    hint = (HTTP_HINT if wrong == NOT_HTTP else f"Write the name in its IDNA form: {written}" if written
            else IDNA_HINT if "IDNA" in wrong else RULE_HINT)
    refusals = [
        ("SELECT reminderd.schedule('acme', 'r1', now() + interval '1 hour', callback_url => $1)",
         "message acme / r1", "callback_url_is_http"),
        ("INSERT INTO reminderd.tenants (id, callback_url) VALUES ('other', $1)",
         'tenant "other"', "tenant_callback_url_is_http"),
        ("UPDATE reminderd.tenants SET callback_url = $1 WHERE id = 'acme'",
         'tenant "acme"', "tenant_callback_url_is_http"),
        ("INSERT INTO reminderd.broadcast_requests (tenant_id, ref_prefix, everyone, local_time, callback_url)"
         " VALUES ('acme', 'spring', true, '2030-03-01 09:00', $1)",
         'broadcast "spring" of tenant "acme"', "broadcast_callback_url_is_http"),
    ]
    for statement, whose, constraint in refusals:
        with pytest.raises(asyncpg.CheckViolationError) as sql:
            await db.execute(statement, url)
        error = sql.value
        assert (error.sqlstate, error.constraint_name) == ("23514", constraint)
        assert (error.message, error.hint) == (f'callback_url "{url}" of {whose} {wrong}', hint)


@pytest.mark.parametrize("role", ["reminderd_api", "reminderd_daemon", "reminderd_readonly"])
async def test_every_role_gets_the_refusal_not_a_permission_error(db: asyncpg.Connection, role: str) -> None:
    """The check runs as whoever writes (reminderd serve, the CLI's daemon role); any role may ask
    the rule."""
    await add_tenant(db, "acme", CALLBACK)
    async with db.transaction():
        await db.execute(f"SET LOCAL ROLE {role}")
        assert await db.fetchval("SELECT reminderd.callback_url_problem('http://h:0/')") == (
            'has port "0": a port is 1 to 65535')
        if role != "reminderd_readonly":
            with pytest.raises(asyncpg.CheckViolationError, match='of tenant "acme" has port "0"'):
                await db.execute("UPDATE reminderd.tenants SET callback_url = 'http://h:0/' WHERE id = 'acme'")


async def test_a_message_whose_url_changes_is_checked(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme", CALLBACK)
    await db.execute("SELECT reminderd.schedule('acme', 'r1', now() + interval '1 hour', callback_url => $1)",
                     "https://hooks.example.com/cb")
    with pytest.raises(asyncpg.CheckViolationError, match=r'of message acme / r1 has host "h\.\.x" with an'):
        await db.execute("UPDATE reminderd.scheduled_messages SET callback_url = 'http://h..x/'"
                         " WHERE ref_id = 'r1'")


async def test_a_broadcast_refuses_a_bad_url_through_its_function(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme", CALLBACK)
    await db.execute("SELECT reminderd.upsert_contacts('acme', $1::jsonb)",
                     json.dumps([{"contact_id": "c1", "timezone": "Europe/London"}]))
    when = datetime.now(UTC).replace(tzinfo=None, microsecond=0) + timedelta(days=3)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await db.execute("SELECT reminderd.broadcast('acme', 'spring', $1, contact_ids => ARRAY['c1'],"
                         " callback_url => 'http://example.com:99999/cb')", when)
    assert refused.value.message == ('callback_url "http://example.com:99999/cb" of broadcast "spring" of'
                                     ' tenant "acme" has port "99999": a port is 1 to 65535')
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


# Rows written before 0019 checked URLs -------------------------------------------------------------

ODD = ["http://example.com:1234567/cb", "http://a b.example/cb", "http://exa..mple.com/cb",
       "http://" + "a" * 64 + ".example/cb"]


UNCHECKED_MESSAGE = ("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, callback_url)"
                     " VALUES ($1, $2, now() - interval '1 second', $3)")
UNCHECKED_TENANT = "INSERT INTO reminderd.tenants (id, callback_url) VALUES ($1, $2)"


async def insert_unchecked(db: asyncpg.Connection, statement: str, *args: object) -> None:
    """Write as an older release could have: the triggers, which now check URLs, bypassed."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(statement, *args)


async def test_endpoint_of_is_null_for_what_endpoints_would_refuse(db: asyncpg.Connection) -> None:
    got = await db.fetch("SELECT u, reminderd.endpoint_of(u) AS endpoint FROM unnest($1::text[]) AS u", ODD)
    long = "a" * 64 + ".example:80"
    assert [row["endpoint"] for row in got] == [None, None, "exa..mple.com:80", long]
    registered = await db.fetch(  # what it gives, reminderd.endpoints takes
        "INSERT INTO reminderd.endpoints (endpoint) SELECT e FROM unnest($1::text[]) AS u,"
        " reminderd.endpoint_of(u) AS e WHERE e IS NOT NULL RETURNING endpoint", ODD)
    assert [row["endpoint"] for row in registered] == ["exa..mple.com:80", long]


@pytest.mark.parametrize("bounded", [True, False], ids=["bounded", "lean"])
async def test_an_unchecked_row_does_not_stop_the_claim(
    db: asyncpg.Connection, store: Store, bounded: bool
) -> None:
    await add_tenant(db, "acme", CALLBACK)
    if bounded:  # any limit anywhere: the full claim, which registers the endpoints it meets
        await db.execute("UPDATE reminderd.tenants SET max_per_second = 1000 WHERE id = 'acme'")
    for n, url in enumerate(ODD):
        await insert_unchecked(db, UNCHECKED_MESSAGE, "acme", f"odd:{n}", url)
    await db.execute("SELECT reminderd.schedule('acme', 'good', now())")
    assert await store.sending_is_bounded() is bounded
    claim = await store.claim_due(lookback_s=3600, batch_size=10, lease_s=30, bounded=bounded)
    assert sorted((job.ref_id, job.endpoint) for job in claim.jobs) == [
        ("good", "example.com:443"), ("odd:0", None), ("odd:1", None), ("odd:2", "exa..mple.com:80"),
        ("odd:3", "a" * 64 + ".example:80")]


# The daemon, and the migration ---------------------------------------------------------------------

REFUSED_AS = {
    "odd:0": 'refused: callback_url has port "1234567": a port is 1 to 65535',
    "odd:1": "refused: callback_url has a space or a control character",
    "odd:2": 'refused: callback_url has host "exa..mple.com" with an empty label',
    "odd:3": f'refused: callback_url has host "{"a" * 64}.example" with a label longer than 63 characters',
}


def outcomes(rows: list[asyncpg.Record]) -> dict[str, tuple[str, int, str | None]]:
    return {row["ref_id"]: (row["status"], row["attempts"], row["last_error"]) for row in rows}


def troubles(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] in ("claim_failed", "send_crashed") or e.get("exc_info")]


@pytest.mark.parametrize("bounded", [True, False], ids=["bounded", "lean"])
async def test_the_daemon_refuses_an_unchecked_row_once_and_sends_the_others(
    db: asyncpg.Connection, database_url: str, receiver: Receiver, tenant: str, bounded: bool
) -> None:
    if bounded:
        await db.execute("UPDATE reminderd.tenants SET max_per_second = 1000 WHERE id = $1", tenant)
    for n, url in enumerate(ODD):
        await insert_unchecked(db, UNCHECKED_MESSAGE, tenant, f"odd:{n}", url)
    await insert_unchecked(db, UNCHECKED_TENANT, "spaced", ODD[1])
    await db.execute("SELECT reminderd.schedule('spaced', 'its-default', now())")
    await db.execute("SELECT reminderd.schedule($1, 'good', now())", tenant)
    with capture_logs() as logs:
        await drain(fast_settings(database_url))
    rows = await db.fetch("SELECT ref_id, status, attempts, last_error FROM reminderd.scheduled_messages")
    assert outcomes(rows) == {
        "good": ("sent", 1, None),
        **{ref: ("dead", 1, error) for ref, error in REFUSED_AS.items()},
        "its-default": ("dead", 1, REFUSED_AS["odd:1"]),
    }
    assert [item.message["ref_id"] for item in receiver.received] == ["good"]
    assert troubles(logs) == []


async def test_0019_upgrades_a_database_with_unchecked_urls_in_it(
    empty_database_url: str, receiver: Receiver
) -> None:
    """Written under 0018, which took them: a message's URL with a seven-digit port, a tenant's with an
    empty label; and, with its triggers bypassed, a tenant's with a space, whose stored endpoint 0019
    computes again (NULL). After it they stay, can still be changed in other ways, are refused by
    the daemon once; the other tenant's message is sent; a new such URL is refused."""
    await asyncio.to_thread(upgrade, empty_database_url, "0018")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme", receiver.url, signing_secret=TEST_SECRET)
        await db.execute("UPDATE reminderd.tenants SET max_per_second = 1000 WHERE id = 'acme'")  # bounded
        await add_tenant(db, "dotted", ODD[2])
        await insert_unchecked(db, UNCHECKED_TENANT, "spaced", ODD[1])
        await db.execute("SELECT reminderd.schedule('acme', 'odd:0', now(), callback_url => $1)", ODD[0])
        for tenant_id in ("dotted", "spaced", "acme"):
            await db.execute("SELECT reminderd.schedule($1, $1, now())", tenant_id)
        stored = "SELECT id, callback_endpoint FROM reminderd.tenants ORDER BY id"
        assert [tuple(row) for row in await db.fetch(stored)][1:] == [("dotted", "exa..mple.com:80"),
                                                                       ("spaced", "a b.example:80")]

        await asyncio.to_thread(upgrade, empty_database_url)

        port = receiver.url.split(":")[2].split("/")[0]
        assert [tuple(row) for row in await db.fetch(stored)] == [
            ("acme", f"127.0.0.1:{port}"), ("dotted", "exa..mple.com:80"), ("spaced", None)]
        await db.execute("UPDATE reminderd.tenants SET calendar = 'GB' WHERE id IN ('dotted', 'spaced')")
        await db.execute("UPDATE reminderd.scheduled_messages SET timezone = 'Europe/London'"
                         " WHERE ref_id = 'odd:0'")
        with pytest.raises(asyncpg.CheckViolationError, match='has port "1234567"'):
            await db.execute("SELECT reminderd.schedule('acme', 'again', now(), callback_url => $1)", ODD[0])
        with capture_logs() as logs:
            await drain(fast_settings(empty_database_url))
        rows = await db.fetch("SELECT ref_id, status, attempts, last_error FROM reminderd.scheduled_messages")
    finally:
        await db.close()
    assert outcomes(rows) == {
        "acme": ("sent", 1, None),
        "odd:0": ("dead", 1, REFUSED_AS["odd:0"]),
        "dotted": ("dead", 1, REFUSED_AS["odd:2"]),
        "spaced": ("dead", 1, REFUSED_AS["odd:1"]),
    }
    assert [item.message["ref_id"] for item in receiver.received] == ["acme"]
    assert troubles(logs) == []


# Hosts that are not names: A-labels punycode cannot decode ------------------------------------------

BAD_A_LABELS = {
    "xn:zz": ("https://xn--zz.example/hook",
              'refused: callback_url has host "xn--zz.example" with label "xn--zz", which is not a valid'
              ' IDNA A-label (punycode)'),
    "xn:control": ("https://xn--a.example/hook",
                   'refused: callback_url has host "xn--a.example" with label "xn--a", which is not a valid'
                   ' IDNA A-label (punycode)'),
    "xn:empty": ("http://XN--.example/hook",
                 'refused: callback_url has host "XN--.example" with label "XN--", which is not a valid'
                 ' IDNA A-label (punycode)'),
}


@pytest.mark.parametrize("bounded", [True, False], ids=["bounded", "lean"])
async def test_the_daemon_refuses_a_host_it_cannot_decode_and_keeps_sending(
    db: asyncpg.Connection, database_url: str, receiver: Receiver, tenant: str, bounded: bool
) -> None:
    """Written past the checks (an older release took them): dead on the first attempt, saying why;
    the daemon neither crashes nor stops sending the others."""
    if bounded:
        await db.execute("UPDATE reminderd.tenants SET max_per_second = 1000 WHERE id = $1", tenant)
    for ref, (url, _) in BAD_A_LABELS.items():
        await insert_unchecked(db, UNCHECKED_MESSAGE, tenant, ref, url)
    await insert_unchecked(db, UNCHECKED_TENANT, "undecodable", BAD_A_LABELS["xn:zz"][0])
    await db.execute("SELECT reminderd.schedule('undecodable', 'its-default', now())")
    await db.execute("SELECT reminderd.schedule($1, 'good', now())", tenant)
    with capture_logs() as logs:
        await drain(fast_settings(database_url))
    rows = await db.fetch("SELECT ref_id, status, attempts, last_error FROM reminderd.scheduled_messages")
    assert outcomes(rows) == {
        "good": ("sent", 1, None),
        **{ref: ("dead", 1, error) for ref, (_, error) in BAD_A_LABELS.items()},
        "its-default": ("dead", 1, BAD_A_LABELS["xn:zz"][1]),
    }
    assert [item.message["ref_id"] for item in receiver.received] == ["good"]
    assert troubles(logs) == []


async def test_sql_punycode_is_pythons(db: asyncpg.Connection) -> None:
    """reminderd.punycode_encode and punycode_decode (0039) give what Python's codec gives, on names
    of every script, and NULL for what it cannot decode."""
    pick = random.Random(36)
    names = ["bücher", "münchen-ost", "💩", "日本語", "ü", "a-b-ü", "παράδειγμα", "пример", "ß"]
    names += ["".join(chr(pick.choice([pick.randint(0x61, 0x7a), pick.randint(0xa1, 0x2fff),
                                       pick.randint(0x3000, 0xffef)])) for _ in range(pick.randint(1, 9)))
              for _ in range(300)]
    names = [n for n in names if not any(0xd800 <= ord(c) <= 0xdfff for c in n)]  # no surrogates
    codes = [name.encode("punycode").decode("ascii") for name in names]
    got = await db.fetch("SELECT reminderd.punycode_encode(n) AS code, reminderd.punycode_decode(c) AS name"
                         " FROM unnest($1::text[], $2::text[]) AS pairs (n, c)", names, codes)
    assert [(row["code"], row["name"]) for row in got] == list(zip(codes, names, strict=True))
    assert await db.fetchval("SELECT array_agg(reminderd.punycode_decode(c) IS NULL)"
                             " FROM unnest(ARRAY['zz', '55', 'a!', '99999999999']) AS c") == [True] * 4
