"""The API's contract: the OpenAPI document is valid and describes exactly the app's routes; a key
of another tenant gets, on every route, exactly what a nonexistent message gets; Idempotency-Key
follows Stripe's rules."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from openapi_spec_validator import validate
from support import ApiClient

from reminderd import dashboard
from reminderd.api import Api, openapi_document
from reminderd.settings import Settings
from reminderd.store import Store
from reminderd.testing import Receiver, add_api_key, add_tenant

METHODS = {"get", "post", "patch", "delete", "put"}


@pytest.fixture
async def keys(db: asyncpg.Connection, receiver: Receiver) -> tuple[str, str]:
    await add_tenant(db, "acme", receiver.url)
    await add_tenant(db, "globex", receiver.url)
    return await add_api_key(db, "acme"), await add_api_key(db, "globex")


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the app registers, read from its router."""
    api = Api(Settings(database_url="postgresql://unused"), Store.__new__(Store))
    app = api.app()
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD beside each GET
        path = route.resource.canonical.replace("{id:[0-9]{1,19}}", "{id}") if route.resource else ""
        if dashboard.serves(path):
            continue  # the dashboard's HTML pages, mounted beside the API: not part of its document
        found.add((route.method, path))
    return found


def test_the_dashboard_is_mounted_beside_the_api() -> None:
    api = Api(Settings(database_url="postgresql://unused"), Store.__new__(Store))
    paths = {route.resource.canonical for route in api.app().router.routes() if route.resource}
    assert {"/dashboard", "/dashboard/", "/dashboard/feed/stream", "/dashboard/login"} <= paths


def test_the_openapi_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_route_of_the_app_is_in_the_document_and_vice_versa() -> None:
    documented = {
        (method.upper(), path)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method in METHODS
    }
    assert app_routes() == documented


def test_every_problem_kind_is_named_in_the_document() -> None:
    from reminderd.problems import KINDS, TYPE_PREFIX

    documented = openapi_document()["components"]["schemas"]["ProblemType"]["enum"]  # ApiError.type in JS
    assert sorted(documented) == sorted(TYPE_PREFIX + kind for kind in KINDS)


# Another tenant's key: every route answers as for a message that does not exist -----------------


async def _arrange(http: ApiClient, owner: str) -> dict[str, Any]:
    """acme's messages: a live one-off, a recurring one and a dead one."""
    live = (
        await http.call(
            "POST",
            "/v1/messages",
            owner,
            json={"ref_id": "booking:1", "fire_in": "1h", "payload": {"secret": "acme only"}},
        )
    ).json
    cron = (
        await http.call("POST", "/v1/messages", owner, json={"ref_id": "booking:2", "cron": "0 9 * * *"})
    ).json
    # A contact in an audience, with a broadcast: what the recipients' routes (api_audiences.py) aim at.
    await http.call("PUT", "/v1/contacts", owner, json=[{"contact_id": "cust_1", "timezone": "Asia/Tokyo"}])
    await http.call("PUT", "/v1/audiences/vip/members", owner, json={"contact_ids": ["cust_1"]})
    wall = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT09:00")
    await http.call("POST", "/v1/broadcasts", owner,
                    json={"ref_prefix": "bf", "local_time": wall, "audience": "vip"})
    return {"live": live["id"], "cron": cron["id"], "ref": "booking:1", "pattern": "booking:%", "wall": wall}


def _requests(ids: dict[str, Any], message_id: int) -> dict[tuple[str, str], dict[str, Any]]:
    """A request for each route, aimed at `message_id` (or acme's refs): keyed by (method, path)."""
    return {
        ("POST", "/v1/messages"): {"json": {"ref_id": "booking:1", "fire_in": "1h"}},
        ("GET", "/v1/messages"): {"params": {"ref": ids["ref"]}},
        ("DELETE", "/v1/messages"): {"params": {"ref": ids["ref"]}},
        ("POST", "/v1/messages/batch"): {"json": {"messages": [{"ref_id": "booking:2", "fire_in": "1h"}]}},
        ("POST", "/v1/messages/cancel"): {"json": {"ref_pattern": ids["pattern"]}},
        ("GET", "/v1/messages/{id}"): {},
        ("PATCH", "/v1/messages/{id}"): {"json": {"fire_in": "2h", "payload": {"x": 1}}},
        ("DELETE", "/v1/messages/{id}"): {},
        ("POST", "/v1/messages/{id}/pause"): {},
        ("POST", "/v1/messages/{id}/resume"): {},
        ("POST", "/v1/messages/{id}/requeue"): {},
        ("POST", "/v1/messages/{id}/send-now"): {},
        ("GET", "/v1/tenant"): {},
        ("PATCH", "/v1/tenant"): {"json": {"calendar": "GB"}},
        ("POST", "/v1/tenant/pause"): {},
        ("POST", "/v1/tenant/resume"): {},
        ("POST", "/v1/tenant/rotate-secret"): {"json": {"grace": "0s"}},
        ("GET", "/v1/preview"): {"params": {"cron": "0 9 * * *"}},
        ("GET", "/v1/stats"): {},
        ("PUT", "/v1/contacts"): {"json": [{"contact_id": "own_1"}]},
        ("GET", "/v1/contacts/{contact_id}"): {},
        ("DELETE", "/v1/contacts/{contact_id}"): {},
        ("GET", "/v1/contacts/{contact_id}/messages"): {},
        ("GET", "/v1/audiences"): {},
        ("DELETE", "/v1/audiences/{audience}"): {},
        ("PUT", "/v1/audiences/{audience}/members"): {"json": {"contact_ids": ["cust_1"]}},
        ("DELETE", "/v1/audiences/{audience}/members"): {"json": {"contact_ids": ["cust_1"]}},
        ("POST", "/v1/broadcasts"): {
            "json": {"ref_prefix": "bf", "local_time": ids["wall"], "audience": "vip"}
        },
        ("GET", "/v1/broadcasts"): {},
        ("GET", "/v1/broadcasts/{id}"): {},
        ("POST", "/v1/broadcasts/{id}/approve"): {},
        ("POST", "/v1/broadcasts/{id}/reject"): {},
        ("POST", "/v1/broadcasts/{id}/cancel"): {},
        ("POST", "/v1/cadences"): {"json": {"ref_prefix": "r", "anchor": "2030-01-01T00:00:00Z",
                                            "contact_id": "cust_1"}},
        ("GET", "/healthz"): {},
        ("GET", "/readyz"): {},
        ("GET", "/metrics"): {},
        ("GET", "/openapi.json"): {},
    }


async def _answers(
    http: ApiClient, key: str, ids: dict[str, Any], message_id: int
) -> dict[str, tuple[int, Any]]:
    answers = {}
    for (method, path), request in _requests(ids, message_id).items():
        url = path.replace("{id}", str(message_id))
        url = url.replace("{contact_id}", "cust_1").replace("{audience}", "vip")
        answer = await http.call(method, url, key, **request)
        body: Any = answer.json if answer.headers.get("Content-Type", "").startswith("application/") else None
        if isinstance(body, dict):
            body.pop("instance", None)
        answers[f"{method} {path}"] = (answer.status, body)
    return answers


async def test_every_route_answers_another_tenants_key_as_for_a_message_that_does_not_exist(
    http: ApiClient, keys: tuple[str, str], db: asyncpg.Connection
) -> None:
    acme, globex = keys
    ids = await _arrange(http, acme)
    assert set(_requests(ids, 0)) == app_routes()  # a new route cannot be left out of this test
    before = await db.fetch(
        "SELECT id, status, fire_at, payload::text FROM reminderd.scheduled_messages"
        " WHERE tenant_id = 'acme' ORDER BY id"
    )
    acme_secret = await db.fetchval("SELECT signing_secret FROM reminderd.tenants WHERE id = 'acme'")
    # globex aims at acme's message and refs...
    foreign = await _answers(http, globex, ids, ids["live"])
    after = await db.fetch(
        "SELECT id, status, fire_at, payload::text FROM reminderd.scheduled_messages"
        " WHERE tenant_id = 'acme' ORDER BY id"
    )
    assert after == before  # nothing of acme's changed
    assert await db.fetchval("SELECT signing_secret FROM reminderd.tenants WHERE id = 'acme'") == acme_secret
    assert "acme only" not in json.dumps(foreign)
    # ...and gets exactly what it gets for an id that exists nowhere (its own refs are empty too).
    await db.execute("DELETE FROM reminderd.idempotency_keys")
    await db.execute("DELETE FROM reminderd.scheduled_messages WHERE tenant_id = 'globex'")
    await db.execute("UPDATE reminderd.tenants SET calendar = NULL, paused = false WHERE id = 'globex'")
    nowhere = await _answers(http, globex, ids, 999_999)
    for route, (status, body) in foreign.items():
        if "{id}" in route:  # the same answer, but for the id it names
            said = json.dumps(body).replace(str(ids["live"]), "ID")
            assert (status, said) == (
                nowhere[route][0],
                json.dumps(nowhere[route][1]).replace("999999", "ID"),
            ), route
            assert status == 404, route
    # By ref and pattern: only globex's own rows (the POST routes above made one), as with no acme at all.
    for route in ("DELETE /v1/messages", "POST /v1/messages/cancel"):
        assert foreign[route] == nowhere[route] == (200, {"cancelled": 1}), route
    listed = foreign["GET /v1/messages"][1]["messages"]
    assert [m["id"] for m in listed] != [ids["live"]] and all(m["payload"] == {} for m in listed)
    assert foreign["GET /v1/tenant"][1]["id"] == "globex"
    # acme's contact, audience and broadcast: as if there were none.
    for route in ("GET /v1/contacts/{contact_id}", "GET /v1/contacts/{contact_id}/messages",
                  "PUT /v1/audiences/{audience}/members", "POST /v1/broadcasts", "POST /v1/cadences"):
        assert foreign[route][0] == nowhere[route][0] == 404, (route, foreign[route])
    assert foreign["DELETE /v1/contacts/{contact_id}"] == (200, {"deleted": 0})
    assert foreign["DELETE /v1/audiences/{audience}"] == (200, {"audience": "vip", "dropped": False})
    assert foreign["GET /v1/audiences"] == (200, {"audiences": []})
    assert foreign["GET /v1/broadcasts"] == (200, {"broadcasts": []})
    assert await db.fetchval("SELECT count(*) FROM reminderd.contacts WHERE tenant_id = 'acme'") == 1
    assert await db.fetchval("SELECT count(*) FROM reminderd.audience_members WHERE tenant_id = 'acme'") == 1


# Idempotency-Key --------------------------------------------------------------------------------


async def test_the_same_key_and_body_replays_the_first_answer_byte_for_byte(
    http: ApiClient, keys: tuple[str, str], db: asyncpg.Connection
) -> None:
    acme, _ = keys
    headers = {"Idempotency-Key": "order-77-reminder"}
    body = {"ref_id": "order:77", "fire_in": "2h"}
    first = await http.call("POST", "/v1/messages", acme, json=body, headers=headers)
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'sent'")  # whatever happened since
    again = await http.call("POST", "/v1/messages", acme, json=body, headers=headers)
    assert (first.status, again.status) == (201, 201)
    assert again.body == first.body and again.headers["Idempotent-Replayed"] == "true"
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 1
    other = await http.call("POST", "/v1/messages", acme, json={**body, "fire_in": "3h"}, headers=headers)
    assert other.status == 422 and other.json["type"] == "urn:reminderd:problem:idempotency-mismatch"
    bad = await http.call("POST", "/v1/messages", acme, json=body, headers={"Idempotency-Key": "é"})
    assert bad.status == 400 and bad.json["errors"][0]["header"] == "Idempotency-Key"


async def test_a_key_is_per_tenant_and_a_failed_request_is_not_kept(
    http: ApiClient, keys: tuple[str, str], db: asyncpg.Connection
) -> None:
    acme, globex = keys
    headers = {"Idempotency-Key": "k1"}
    assert (
        await http.call("POST", "/v1/messages", acme, json={"ref_id": "r", "fire_in": "x"}, headers=headers)
    ).status == 422
    assert (
        await http.call("POST", "/v1/messages", acme, json={"ref_id": "r", "fire_in": "1h"}, headers=headers)
    ).status == 201
    assert (
        await http.call("POST", "/v1/messages", globex, json={"ref_id": "r", "fire_in": "1h"}, headers=headers)
    ).status == 201
    assert await db.fetchval("SELECT count(*) FROM reminderd.idempotency_keys") == 2


async def test_a_rotation_s_secret_is_never_stored_nor_replayed(
    http: ApiClient, keys: tuple[str, str], db: asyncpg.Connection
) -> None:
    """The new signing secret is shown once: the Idempotency-Key's row keeps no trace of it, and the
    same request again (by this key or another of the tenant) rotates nothing and shows nothing."""
    acme, _ = keys
    other_key = await add_api_key(db, "acme", name="second")
    headers = {"Idempotency-Key": "rot-1"}
    first = await http.call("POST", "/v1/tenant/rotate-secret", acme, json={"grace": "1h"}, headers=headers)
    assert first.status == 200, first.body
    secret = first.json["secret"]
    assert await db.fetchval("SELECT signing_secret FROM reminderd.tenants WHERE id = 'acme'") == secret
    stored = await db.fetch("SELECT status_code, content_type, response_body FROM reminderd.idempotency_keys")
    assert len(stored) == 1  # the key is spent: a retry cannot rotate twice
    assert secret.encode() not in stored[0]["response_body"]
    assert b"whsec_" not in stored[0]["response_body"] and b"secret" not in stored[0]["response_body"]
    for caller in (acme, other_key):
        again = await http.call(
            "POST", "/v1/tenant/rotate-secret", caller, json={"grace": "1h"}, headers=headers
        )
        assert again.status == 409, again.body
        assert again.json["type"] == "urn:reminderd:problem:secret-shown-once"
        assert "Idempotent-Replayed" not in again.headers
        assert secret not in again.body.decode() and "whsec_" not in again.body.decode()
    assert await db.fetchval("SELECT signing_secret FROM reminderd.tenants WHERE id = 'acme'") == secret
    other = await http.call("POST", "/v1/tenant/rotate-secret", acme, json={"grace": "2h"}, headers=headers)
    assert other.status == 422 and other.json["type"] == "urn:reminderd:problem:idempotency-mismatch"


async def test_rotating_again_after_a_shown_once_answer_keeps_the_original_secret_signing(
    http: ApiClient, keys: tuple[str, str], db: asyncpg.Connection
) -> None:
    """The 409 secret-shown-once says to rotate again: doing so keeps the secret the receivers know
    (the one before the lost rotation) signing until its own grace ends (migration 0035)."""
    acme, _ = keys
    original = await db.fetchval("SELECT signing_secret FROM reminderd.tenants WHERE id = 'acme'")
    headers = {"Idempotency-Key": "rot-lost"}
    lost = await http.call("POST", "/v1/tenant/rotate-secret", acme, json={"grace": "1h"}, headers=headers)
    assert lost.status == 200, lost.body  # and its answer never reached the caller
    first_grace = await db.fetchval(
        "SELECT previous_secret_expires_at FROM reminderd.tenants WHERE id = 'acme'")
    again = await http.call("POST", "/v1/tenant/rotate-secret", acme, json={"grace": "1h"}, headers=headers)
    assert again.status == 409 and again.json["type"] == "urn:reminderd:problem:secret-shown-once"
    second = await http.call("POST", "/v1/tenant/rotate-secret", acme, json={"grace": "2h"})
    assert second.status == 200, second.body
    row = await db.fetchrow("SELECT signing_secret, previous_signing_secret, previous_secret_expires_at,"
                            " earlier_signing_secret, earlier_secret_expires_at FROM reminderd.tenants"
                            " WHERE id = 'acme'")
    assert row["signing_secret"] == second.json["secret"]
    assert row["previous_signing_secret"] == lost.json["secret"]
    assert (row["earlier_signing_secret"], row["earlier_secret_expires_at"]) == (original, first_grace)
    until = datetime.fromisoformat(second.json["previous_secret_valid_until"])
    assert until == row["previous_secret_expires_at"]


async def test_a_concurrent_duplicate_in_flight_is_a_409(
    http: ApiClient, keys: tuple[str, str], db: asyncpg.Connection, database_url: str
) -> None:
    acme, _ = keys
    # Hold the key's lock from another session, as a first request still running would.
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("BEGIN")
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('reminderd idempotency' || chr(31) || 'acme'"
            " || chr(31) || 'k-busy', 0))"
        )
        busy = await http.call(
            "POST",
            "/v1/messages",
            acme,
            json={"ref_id": "r", "fire_in": "1h"},
            headers={"Idempotency-Key": "k-busy"},
        )
        await holder.execute("ROLLBACK")
    finally:
        await holder.close()
    assert busy.status == 409 and busy.json["type"] == "urn:reminderd:problem:idempotency-in-flight"
    assert busy.headers["Retry-After"] == "1"
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


async def test_two_requests_racing_with_one_key_make_one_message(
    http: ApiClient, keys: tuple[str, str], db: asyncpg.Connection
) -> None:
    acme, _ = keys
    body = {"ref_id": "race", "fire_in": "1h"}
    answers = await asyncio.gather(
        *(
            http.call("POST", "/v1/messages", acme, json=body, headers={"Idempotency-Key": "same"})
            for _ in range(8)
        )
    )
    assert {a.status for a in answers} <= {201, 409}
    assert len({a.body for a in answers if a.status == 201}) == 1
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 1
