"""Issue 14 over the HTTP API (reminderd/api_audiences.py), in-process against a real PostgreSQL,
connected as a login role granted reminderd_api and nothing else: contacts (JSON arrays and NDJSON
streams, per-item errors by index or line), a contact's whole picture, audiences, broadcasts (dry
run, approval by another key, SQLSTATEs as problems), cadences, and contact_id on the message
routes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from support import ApiClient, api_role_url, api_settings, poll_until, running_api

from reminderd import api_audiences
from reminderd.schedule import load_timezone, to_instant
from reminderd.testing import Receiver, add_api_key, add_tenant

PROBLEM = "application/problem+json"
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
async def key(db: asyncpg.Connection, receiver: Receiver) -> str:
    await add_tenant(db, "acme", receiver.url)
    await db.execute("UPDATE reminderd.tenants SET timezone = 'Europe/London' WHERE id = 'acme'")
    return await add_api_key(db, "acme", name="alice-service")


def problem(answer: Any, status: int, kind: str) -> dict[str, Any]:
    assert answer.status == status, answer.body
    assert answer.headers["Content-Type"].startswith(PROBLEM)
    document: dict[str, Any] = answer.json
    assert document["type"] == f"urn:reminderd:problem:{kind}"
    assert document["status"] == status and document["detail"] and "Traceback" not in document["detail"]
    return document


def days_ahead(days: int, hour: int = 9) -> str:
    day = datetime.now(UTC).date() + timedelta(days=days)
    return f"{day.isoformat()}T{hour:02d}:00:00"


CONTACTS: list[dict[str, Any]] = [
    {"contact_id": "cust_8f", "phone": "+1 312 555 0100", "attributes": {"name": "Ann"}},
    {"contact_id": "cust_9a", "country": "IN"},
    {"contact_id": "cust_7c", "timezone": "Asia/Tokyo"},
]


async def test_contacts_put_counts_new_changed_and_unchanged_and_reads_them_back(
    http: ApiClient, key: str
) -> None:
    first = await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    assert first.status == 200, first.body
    assert (first.json["new"], first.json["changed"], first.json["unchanged"], first.json["failed"]) == (
        3,
        0,
        0,
        0,
    )
    again = await http.call(
        "PUT", "/v1/contacts", key, json=[CONTACTS[0], {"contact_id": "cust_9a", "country": "AU"}]
    )
    assert (again.json["new"], again.json["changed"], again.json["unchanged"]) == (0, 1, 1)
    one = await http.call("PUT", "/v1/contacts", key, json={"contact_id": "cust_1", "timezone": "Europe/Paris"})
    assert one.json["new"] == 1
    got = await http.call("GET", "/v1/contacts/cust_8f", key)
    assert got.status == 200
    assert got.json["zone"] == "America/Chicago" and got.json["zone_source"] == "phone"
    assert got.json["attributes"] == {"name": "Ann"} and got.json["phone"] == "+13125550100"
    tokyo = (await http.call("GET", "/v1/contacts/cust_7c", key)).json
    assert (tokyo["zone"], tokyo["zone_source"]) == ("Asia/Tokyo", "contact")
    deleted = await http.call("DELETE", "/v1/contacts/cust_7c", key)
    assert deleted.json == {"deleted": 1}
    assert (await http.call("DELETE", "/v1/contacts/cust_7c", key)).json == {"deleted": 0}
    gone = problem(await http.call("GET", "/v1/contacts/cust_7c", key), 404, "not-found")
    assert "cust_7c" in gone["detail"]


async def test_bad_contacts_are_reported_by_index_and_the_rest_written(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    items: list[Any] = [
        {"contact_id": "ok_1", "timezone": "Europe/Berlin"},
        {"contact_id": "bad zone", "timezone": "Mars/Base"},
        {"contact_id": "ok_2", "timezone": "Mars/Base"},
        "not an object",
        {"contact_id": "ok_3", "country": "XX"},  # well-formed, but no such country: the database says so
        {"contact_id": "ok_4", "email": "a@b.c"},
        {"contact_id": "ok_5", "country": "GB"},
    ]
    answer = await http.call("PUT", "/v1/contacts", key, json=items)
    assert answer.status == 200, answer.body
    assert (answer.json["received"], answer.json["new"], answer.json["failed"]) == (7, 2, 5)
    errors = {e["index"]: e for e in answer.json["errors"]}
    assert sorted(errors) == [1, 2, 3, 4, 5]
    assert "contact_id 'bad zone'" in errors[1]["error"]["detail"]
    assert "Mars/Base" in errors[2]["error"]["detail"] and errors[2]["contact_id"] == "ok_2"
    assert errors[2]["error"]["errors"][0]["pointer"] == "/2"
    assert errors[3]["error"]["detail"] == "index 3: not a JSON object"
    assert errors[4]["error"]["sqlstate"] and "XX" in errors[4]["error"]["detail"]
    assert "unknown fields email" in errors[5]["error"]["detail"]
    stored = await db.fetch("SELECT contact_id FROM reminderd.contacts WHERE tenant_id = 'acme' ORDER BY 1")
    assert [r["contact_id"] for r in stored] == ["ok_1", "ok_5"]


async def test_a_phone_that_is_not_one_is_reported_by_index_and_the_rest_written(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """As `reminderd contacts import` refuses it (reminderd/contact_files.py), and the database."""
    items = [{"contact_id": "p1", "phone": "hello world"}, {"contact_id": "p2", "phone": "020 7946 0018"},
             {"contact_id": "p3", "phone": "020 7946 0018", "country": "GB"},
             {"contact_id": "p4", "phone": "+1 (312) 555-0100"}]
    answer = await http.call("PUT", "/v1/contacts", key, json=items)
    assert answer.status == 200, answer.body
    assert (answer.json["received"], answer.json["new"], answer.json["failed"]) == (4, 2, 2)
    errors = {e["index"]: e["error"]["detail"] for e in answer.json["errors"]}
    assert errors == {
        0: "index 0: phone 'hello world' is not +<country code> <number> (such as +44 20 7946 0018)",
        1: "index 1: phone '020 7946 0018' has no country code: write it +<country code> <number>, or give the"
           " contact's country",
    }
    stored = await db.fetch("SELECT contact_id, phone FROM reminderd.contacts ORDER BY 1")
    assert [tuple(r) for r in stored] == [("p3", "+442079460018"), ("p4", "+13125550100")]


@pytest.mark.parametrize("ndjson", [False, True])
async def test_with_an_idempotency_key_a_refused_contact_is_reported_and_the_rest_written_once(
    http: ApiClient, key: str, db: asyncpg.Connection, ndjson: bool
) -> None:
    """With an Idempotency-Key the upload is one transaction (its answer is kept in it): a batch
    the database refuses is written again without the contact it names, in the same transaction."""
    items = [{"contact_id": "k1", "country": "GB"}, {"contact_id": "k2", "country": "XX"}, {"contact_id": "k3"}]
    body = ("\n".join(json.dumps(i) for i in items) + "\n") if ndjson else json.dumps(items)
    headers = {**(NDJSON if ndjson else {"Content-Type": "application/json"}), "Idempotency-Key": "upload-1"}
    first = await http.call("PUT", "/v1/contacts", key, data=body.encode(), headers=headers)
    again = await http.call("PUT", "/v1/contacts", key, data=body.encode(), headers=headers)
    assert first.status == 200, first.body
    assert (first.json["new"], first.json["failed"], first.json["errors"][0]["contact_id"]) == (2, 1, "k2")
    assert again.body == first.body and again.headers["Idempotent-Replayed"] == "true"
    stored = await db.fetch("SELECT contact_id FROM reminderd.contacts ORDER BY 1")
    assert [r["contact_id"] for r in stored] == ["k1", "k3"]


async def test_an_ndjson_upload_is_written_in_batches_and_a_bad_line_is_named(
    http: ApiClient, key: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_audiences, "CONTACT_BATCH", 4)  # several batches from a small upload
    lines = [json.dumps({"contact_id": f"n_{n}", "timezone": "Asia/Kolkata"}) for n in range(10)]
    lines[5] = '{"contact_id": "n_5", "timezone": '  # cut short
    lines.insert(2, "")  # blank lines are no contacts
    lines[8] = json.dumps({"contact_id": "n_7", "country": "XX"})
    body = ("\n".join(lines) + "\n").encode()
    answer = await http.call("PUT", "/v1/contacts", key, data=body, headers=NDJSON)
    assert answer.status == 200, answer.body
    assert (answer.json["received"], answer.json["new"], answer.json["failed"]) == (10, 8, 2)
    by_line = {e["line"]: e["error"]["detail"] for e in answer.json["errors"]}
    assert sorted(by_line) == [7, 9]  # the blank line counts as a line
    assert by_line[7].startswith("line 7: not JSON")
    assert by_line[9].startswith("line 9: ") and "XX" in by_line[9]
    count = await db.fetchval("SELECT count(*) FROM reminderd.contacts WHERE tenant_id = 'acme'")
    assert count == 8
    too_long = (
        b'{"contact_id": "long", "attributes": {"x": "' + b"y" * 300_000 + b'"}}\n{"contact_id": "after"}\n'
    )
    answer = await http.call("PUT", "/v1/contacts", key, data=too_long, headers=NDJSON)
    assert answer.json["failed"] == 1 and answer.json["new"] == 1
    assert (
        answer.json["errors"][0]["line"] == 1
        and "longer than 64 KiB" in answer.json["errors"][0]["error"]["detail"]
    )


@pytest.mark.parametrize("ndjson", [False, True])
async def test_a_contact_that_would_strand_its_messages_is_refused_alone_and_the_rest_written(
    http: ApiClient, key: str, db: asyncpg.Connection, ndjson: bool
) -> None:
    """The replanning trigger's refusal (a contact left with no zone while its messages need one)
    is the element's, by index or line, as the batch's own checks are."""
    await db.execute("UPDATE reminderd.tenants SET timezone = NULL WHERE id = 'acme'")
    await http.call("PUT", "/v1/contacts", key, json=[{"contact_id": "z1", "timezone": "Asia/Tokyo"}])
    await db.execute("SELECT reminderd.schedule('acme', 'wall', local_time => $1, contact_id => 'z1')",
                     datetime.now(UTC).replace(tzinfo=None) + timedelta(days=3))
    await db.execute("SELECT reminderd.schedule_cron('acme', 'daily', '0 9 * * *', contact_id => 'z1')")
    items = [{"contact_id": "good1", "timezone": "Europe/Paris"}, {"contact_id": "z1", "timezone": None},
             {"contact_id": "good2", "timezone": "Europe/Rome"}]
    body = ("\n".join(json.dumps(i) for i in items) + "\n") if ndjson else json.dumps(items)
    headers = NDJSON if ndjson else {"Content-Type": "application/json"}
    answer = await http.call("PUT", "/v1/contacts", key, data=body.encode(), headers=headers)
    assert answer.status == 200, answer.body
    assert (answer.json["new"], answer.json["failed"]) == (2, 1)
    [error] = answer.json["errors"]
    where = "line" if ndjson else "index"
    assert (error[where], error["contact_id"], error["error"]["sqlstate"]) == (
        2 if ndjson else 1, "z1", "22023")
    assert 'contact (contact_id "z1") would have no timezone, and 2 of its messages need one' in (
        error["error"]["detail"])
    stored = await db.fetch("SELECT contact_id, timezone FROM reminderd.contacts ORDER BY 1")
    assert [tuple(r) for r in stored] == [
        ("good1", "Europe/Paris"), ("good2", "Europe/Rome"), ("z1", "Asia/Tokyo")]


NUL, HALF = "\\u0000", "\\ud800"  # as JSON writes them in a body


@pytest.mark.parametrize("ndjson", [False, True])
async def test_a_contact_with_text_the_database_cannot_store_is_refused_alone_and_the_rest_written(
    http: ApiClient, key: str, db: asyncpg.Connection, ndjson: bool
) -> None:
    """One bad string fails its own contact, wherever it is (its id too: then the answer names it
    by its place, not by an id it could not repeat); a later one no longer turns the answer into a
    500 after the earlier contacts were written."""
    items = ['{"contact_id": "good", "timezone": "UTC"}', f'{{"contact_id": "c{HALF}"}}',
             f'{{"contact_id": "k", "attributes": {{"note": "a{NUL}"}}}}', '{"contact_id": "also_good"}']
    body = "\n".join(items) + "\n" if ndjson else "[" + ", ".join(items) + "]"
    answer = await http.call("PUT", "/v1/contacts", key, data=body.encode(),
                             headers=NDJSON if ndjson else {"Content-Type": "application/json"})
    assert answer.status == 200, answer.body
    assert (answer.json["received"], answer.json["new"], answer.json["failed"]) == (4, 2, 2)
    where = "line" if ndjson else "index"
    errors = {e[where]: e for e in answer.json["errors"]}
    first, second = (2, 3) if ndjson else (1, 2)
    assert sorted(errors) == [first, second]
    assert errors[first]["contact_id"] is None and errors[second]["contact_id"] == "k"
    assert errors[first]["error"]["detail"] == (
        f"{where} {first}: contact_id has half a UTF-16 surrogate pair, \\ud800: PostgreSQL cannot store it")
    assert "/attributes/note has \\u0000, the NUL character" in errors[second]["error"]["detail"]
    stored = await db.fetch("SELECT contact_id FROM reminderd.contacts ORDER BY 1")
    assert [r["contact_id"] for r in stored] == ["also_good", "good"]


async def test_an_ndjson_line_nesting_deeper_than_a_json_body_may_is_refused_alone(
    db: asyncpg.Connection, database_url: str, key: str
) -> None:
    url = await api_role_url(db, database_url)
    async with running_api(api_settings(url, api_max_json_depth=4)) as http:
        deep = '{"contact_id": "deep", "attributes": {"a": {"b": {"c": {"d": 1}}}}}'
        fits = '{"contact_id": "fits", "attributes": {"a": {"b": [1]}}}'
        answer = await http.call("PUT", "/v1/contacts", key, data=f"{deep}\n{fits}\n".encode(), headers=NDJSON)
        assert answer.status == 200, answer.body
        assert (answer.json["new"], answer.json["failed"]) == (1, 1)
        assert answer.json["errors"][0]["error"]["detail"] == (
            "line 1: nests arrays and objects more than 4 levels deep (REMINDERD_API_MAX_JSON_DEPTH)")
        as_json = await http.call("PUT", "/v1/contacts", key, json=[json.loads(deep)])
        problem(as_json, 400, "invalid-json")  # the same limit, for the same contact as JSON
    assert [r["contact_id"] for r in await db.fetch("SELECT contact_id FROM reminderd.contacts")] == ["fits"]


@pytest.mark.parametrize(
    ("path", "body", "pointer"),
    [
        ("/v1/broadcasts", f'{{"ref_prefix": "x", "cron": "0 9 * * {HALF}", "everyone": true}}', "/cron"),
        ("/v1/broadcasts", f'{{"ref_prefix": "x", "local_time": "T", "everyone": true, "payload": ["{NUL}"]}}',
         "/payload/0"),
        ("/v1/cadences", f'{{"ref_prefix": "r", "anchor": "2027-01-20T00:00:00Z", "timezone": "x{HALF}"}}',
         "/timezone"),
        ("/v1/audiences/vip/members", f'{{"contact_ids": ["a{NUL}"]}}', "/contact_ids/0"),
    ],
    ids=["broadcast-cron", "broadcast-payload", "cadence-timezone", "members"],
)
async def test_text_the_database_cannot_store_is_a_422_naming_its_field_on_every_route(
    http: ApiClient, key: str, path: str, body: str, pointer: str
) -> None:
    method = "PUT" if path.endswith("/members") else "POST"
    refused = problem(await http.call(method, path, key, data=body.encode(),
                                      headers={"Content-Type": "application/json"}), 422, "invalid-request")
    assert refused["errors"][0]["pointer"] == pointer and "PostgreSQL cannot store it" in refused["detail"]


@pytest.mark.parametrize("revoke", ["revoked", "read-only"])
async def test_an_ndjson_upload_stops_at_the_next_batch_once_its_key_is_revoked(
    http: ApiClient, key: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, revoke: str
) -> None:
    """A streamed upload outlives the check its request had: each batch asks again (the key
    cache's rule, 0 s here), so once the key is revoked (or made read-only) nothing more is
    written and the answer is a 401 saying what was."""
    monkeypatch.setattr(api_audiences, "CONTACT_BATCH", 2)
    written = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for n in range(2):
            yield (json.dumps({"contact_id": f"s_{n}", "timezone": "Asia/Tokyo"}) + "\n").encode()
        await written.wait()  # the first batch is written: now the key goes
        if revoke == "revoked":
            await db.execute("UPDATE reminderd.api_keys SET revoked_at = now()")
        else:
            await db.execute("UPDATE reminderd.api_keys SET scopes = '{read}'")
        for n in range(2, 6):
            yield (json.dumps({"contact_id": f"s_{n}", "timezone": "Asia/Tokyo"}) + "\n").encode()

    async def first_batch() -> bool:
        if await db.fetchval("SELECT count(*) FROM reminderd.contacts") == 2:
            written.set()
        return written.is_set()

    watcher = asyncio.create_task(poll_until(first_batch))
    async with http.client.put("/v1/contacts", data=body(), headers={
        **NDJSON, "Authorization": f"Bearer {key}"}) as answer:
        status, document = answer.status, await answer.json(content_type=None)
    await watcher
    assert status == 401 and document["type"] == "urn:reminderd:problem:unauthorized", document
    assert document["detail"] == ("the API key was revoked (or made read-only) during the upload: what it "
                                  "sent up to line 2 was written, nothing after")
    assert document["written_through_line"] == 2
    stored = await db.fetch("SELECT contact_id FROM reminderd.contacts ORDER BY 1")
    assert [r["contact_id"] for r in stored] == ["s_0", "s_1"]


async def test_a_broadcasts_durations_may_be_json_numbers_of_seconds(http: ApiClient, key: str) -> None:
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    body = (b'{"ref_prefix": "n", "every": "every day at 9am", "everyone": true, "max_lateness": 6e1,'
            b' "stage_ahead": 3.6E3}')
    dry = await http.call("POST", "/v1/broadcasts?dry_run=true", key, data=body,
                          headers={"Content-Type": "application/json"})
    assert dry.status == 200, dry.body
    refused = problem(await http.call("POST", "/v1/broadcasts?dry_run=true", key,
                                      data=body.replace(b"3.6E3", b"-3.6E3"),
                                      headers={"Content-Type": "application/json"}), 422, "invalid-request")
    assert refused["detail"].startswith("stage_ahead '-3.6E3': ")
    assert refused["errors"][0]["pointer"] == "/stage_ahead"


async def test_a_message_for_a_contact_is_timed_in_its_zone_and_in_its_whole_picture(
    http: ApiClient, key: str
) -> None:
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    wall = days_ahead(3)
    answer = await http.call(
        "POST",
        "/v1/messages",
        key,
        json={"ref_id": "renewal:8f", "local_time": wall, "contact_id": "cust_8f", "payload": {"plan": "pro"}},
    )
    assert answer.status == 201, answer.body
    created = answer.json
    assert (created["timezone"], created["timezone_source"], created["contact_id"]) == (
        "America/Chicago",
        "phone",
        "cust_8f",
    )
    expected = to_instant(datetime.fromisoformat(wall), load_timezone("America/Chicago"))
    assert datetime.fromisoformat(created["fire_at"]) == expected
    assert "America/Chicago" in created["description"]
    again = await http.call(
        "POST",
        "/v1/messages",
        key,
        json={"ref_id": "renewal:8f", "local_time": wall, "contact_id": "cust_8f", "payload": {"plan": "pro"}},
    )
    assert again.status == 200 and again.json["id"] == created["id"] and again.json["result"] == "unchanged"
    got = (await http.call("GET", f"/v1/messages/{created['id']}", key)).json
    assert (got["timezone"], got["timezone_source"], got["contact_id"]) == (
        "America/Chicago",
        "phone",
        "cust_8f",
    )
    own = await http.call(
        "POST",
        "/v1/messages",
        key,
        json={"ref_id": "own", "fire_in": "2h", "contact_id": "cust_8f", "timezone": "Asia/Kolkata"},
    )
    assert (own.json["timezone"], own.json["timezone_source"]) == ("Asia/Kolkata", "message")
    picture = await http.call("GET", "/v1/contacts/cust_8f/messages", key, params={"recent": "1d"})
    assert picture.status == 200, picture.body
    assert picture.json["contact"]["zone"] == "America/Chicago"
    refs = [m["ref_id"] for m in picture.json["messages"]]
    assert refs == ["own", "renewal:8f"]  # live, soonest first
    renewal = picture.json["messages"][1]
    assert renewal["local_fire_at"] == wall and renewal["timezone_source"] == "phone"
    unknown = problem(
        await http.call(
            "POST", "/v1/messages", key, json={"ref_id": "x", "fire_in": "1h", "contact_id": "nobody"}
        ),
        404,
        "not-found",
    )
    assert unknown["sqlstate"] == "P0002" and "nobody" in unknown["detail"]
    assert problem(await http.call("GET", "/v1/contacts/nobody/messages", key), 404, "not-found")
    bad = problem(
        await http.call("GET", "/v1/contacts/cust_8f/messages", key, params={"recent": "soon"}),
        400,
        "invalid-parameter",
    )
    assert bad["errors"][0]["parameter"] == "recent"


async def test_a_batch_schedules_contacts_messages_set_based_and_reports_an_unknown_contact(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    wall = days_ahead(4, 10)
    messages: list[dict[str, Any]] = [
        {"ref_id": f"b:{c['contact_id']}", "local_time": wall, "contact_id": c["contact_id"]} for c in CONTACTS
    ]
    messages.append({"ref_id": "b:utc", "local_time": wall, "timezone": "UTC"})
    messages.append({"ref_id": "b:weekly", "cron": "0 9 * * 1", "contact_id": "cust_7c"})
    answer = await http.call("POST", "/v1/messages/batch", key, json={"messages": messages})
    assert answer.status == 200, answer.body
    results = answer.json["results"]
    assert [r["result"] for r in results] == ["created"] * 5
    assert [(r["timezone"], r["timezone_source"]) for r in results] == [
        ("America/Chicago", "phone"),
        ("Asia/Kolkata", "country"),
        ("Asia/Tokyo", "contact"),
        ("UTC", "message"),
        ("Asia/Tokyo", "contact"),
    ]
    rows = await db.fetch(
        "SELECT ref_id, fire_at, contact_id, timezone, local_time FROM reminderd.scheduled_messages"
        " WHERE tenant_id = 'acme' AND cron IS NULL ORDER BY ref_id"
    )
    for row in rows:
        assert row["fire_at"] == to_instant(datetime.fromisoformat(wall), load_timezone(row["timezone"]))
        assert row["local_time"] == datetime.fromisoformat(wall)
    weekly = await db.fetchrow(
        "SELECT fire_at, timezone FROM reminderd.scheduled_messages WHERE ref_id = 'b:weekly'"
    )
    local = weekly["fire_at"].astimezone(load_timezone("Asia/Tokyo"))
    assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)
    again = await http.call("POST", "/v1/messages/batch", key, json={"messages": messages[:4]})
    assert [r["result"] for r in again.json["results"]] == ["unchanged"] * 4
    mixed = await http.call(
        "POST",
        "/v1/messages/batch",
        key,
        json={
            "atomic": False,
            "messages": [
                {"ref_id": "m:1", "fire_in": "1h", "contact_id": "cust_9a"},
                {"ref_id": "m:2", "fire_in": "1h", "contact_id": "nobody"},
            ],
        },
    )
    first, second = mixed.json["results"]
    assert first["result"] == "created" and first["timezone"] == "Asia/Kolkata"
    assert second["result"] == "error" and second["error"]["status"] == 404
    assert second["error"]["sqlstate"] == "P0002"


async def test_audiences_are_managed_and_unknown_contacts_are_a_404(http: ApiClient, key: str) -> None:
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    added = await http.call(
        "PUT", "/v1/audiences/vip/members", key, json={"contact_ids": ["cust_8f", "cust_9a"]}
    )
    assert added.status == 200 and added.json == {"audience": "vip", "added": 2}
    listed = await http.call("GET", "/v1/audiences", key)
    assert [(a["name"], a["members"]) for a in listed.json["audiences"]] == [("vip", 2)]
    unknown = problem(
        await http.call("PUT", "/v1/audiences/vip/members", key, json={"contact_ids": ["cust_8f", "ghost"]}),
        404,
        "not-found",
    )
    assert "ghost" in unknown["detail"] and unknown["sqlstate"] == "P0002"
    removed = await http.call("DELETE", "/v1/audiences/vip/members", key, json={"contact_ids": ["cust_9a"]})
    assert removed.json["removed"] == 1
    assert (await http.call("GET", "/v1/contacts/cust_8f", key)).json["audiences"] == ["vip"]
    bad = problem(
        await http.call("PUT", "/v1/audiences/vip/members", key, json={"contact_ids": ["no way"]}),
        422,
        "invalid-request",
    )
    assert bad["errors"][0]["pointer"] == "/contact_ids/0"
    assert (await http.call("DELETE", "/v1/audiences/vip", key)).json == {"audience": "vip", "dropped": True}
    assert (await http.call("DELETE", "/v1/audiences/vip", key)).json["dropped"] is False


async def test_a_broadcast_dry_run_then_staged_with_its_progress(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    await http.call(
        "PUT", "/v1/audiences/vip/members", key, json={"contact_ids": ["cust_8f", "cust_9a", "cust_7c"]}
    )
    wall = days_ahead(5)
    body = {"ref_prefix": "bf2026", "local_time": wall, "audience": "vip", "payload": {"offer": "BF30"}}
    dry = await http.call("POST", "/v1/broadcasts", key, json=body, params={"dry_run": "true"})
    assert dry.status == 200, dry.body
    assert dry.json["audience_size"] == 3 and dry.json["dry_run"] is True
    assert dry.json["approval"] == "not_needed"
    assert sum(h["messages"] for h in dry.json["sends_per_utc_hour"]) == 3
    assert len(dry.json["sends_per_utc_hour"]) == 3  # Tokyo, Kolkata and Chicago: three UTC hours
    assert {z["timezone"] for z in dry.json["zones"]} == {"America/Chicago", "Asia/Kolkata", "Asia/Tokyo"}
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_requests") == 0
    made = await http.call("POST", "/v1/broadcasts", key, json=body)
    assert made.status == 201, made.body
    broadcast = made.json
    assert broadcast["counts"]["staged"] == 3 and broadcast["state"] == "sending" and not broadcast["done"]
    assert broadcast["created_by"].endswith("(alice-service)") and broadcast["waves"][0]["contacts"] == 3
    assert broadcast["local_time"] == wall
    listed = (await http.call("GET", "/v1/broadcasts", key)).json["broadcasts"]
    assert [b["id"] for b in listed] == [broadcast["id"]]
    taken = problem(
        await http.call("POST", "/v1/broadcasts", key, json={**body, "payload": {"offer": "other"}}),
        409,
        "conflict",
    )
    assert taken["sqlstate"] == "23505"
    cancelled = await http.call("POST", f"/v1/broadcasts/{broadcast['id']}/cancel", key)
    assert cancelled.status == 200 and cancelled.json["cancelled_messages"] == 3
    assert cancelled.json["counts"]["cancelled"] == 3
    assert problem(await http.call("GET", "/v1/broadcasts/999999", key), 404, "not-found")


async def test_a_recurring_broadcasts_dry_run_ends_where_the_daemon_would(http: ApiClient, key: str) -> None:
    # Its until, and an RRULE's UNTIL=…Z, are instants compared with an occurrence's first zone's
    # instant, as the stager compares them (Tokyo, UTC+9: 20:00 is 11:00Z).
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    tokyo = ZoneInfo("Asia/Tokyo")
    soon = (datetime.now(UTC) + timedelta(minutes=5)).astimezone(tokyo)
    evening = soon.replace(hour=20, minute=0, second=0, microsecond=0, tzinfo=None)
    if evening <= soon.replace(tzinfo=None):
        evening += timedelta(days=1)
    ends = evening.replace(tzinfo=tokyo).astimezone(UTC) + timedelta(hours=1)  # 21:00 in Tokyo
    for recurrence in [
        {"rrule": f"FREQ=DAILY;BYHOUR=20;BYMINUTE=0;UNTIL={ends:%Y%m%dT%H%M%S}Z"},
        {"cron": "0 20 * * *", "until": ends.isoformat()},
    ]:
        body = {"ref_prefix": "evening", "contact_ids": ["cust_7c"], **recurrence}
        dry = await http.call("POST", "/v1/broadcasts", key, json=body, params={"dry_run": "true"})
        assert dry.status == 200, dry.body
        assert (dry.json["local_time"], dry.json["next_local_time"]) == (evening.isoformat(timespec="seconds"),
                                                                         None), recurrence


async def test_a_recurring_dry_run_counts_the_contacts_its_until_ends_before_this_occurrence(
    http: ApiClient, key: str
) -> None:
    """The until ends each contact by their own instant: an until an hour after the first
    occurrence reaches Kiritimati (UTC+14) is 24 hours before it reaches Pago Pago (UTC-11), so the
    occurrence is sent to Kiritimati only, and the dry run says so."""
    zones = {"kiritimati": "Pacific/Kiritimati", "pago": "Pacific/Pago_Pago"}
    contacts = [{"contact_id": c, "timezone": z} for c, z in zones.items()]
    await http.call("PUT", "/v1/contacts", key, json=contacts)
    kiritimati = ZoneInfo("Pacific/Kiritimati")
    hour = (datetime.now(UTC) + timedelta(hours=3)).astimezone(kiritimati).replace(
        minute=0, second=0, microsecond=0)  # 2 to 3 hours ahead on Kiritimati's clock: the first occurrence
    until = hour.astimezone(UTC) + timedelta(hours=1)
    body = {"ref_prefix": "ends", "everyone": True, "cron": f"0 {hour.hour} * * *", "until": until.isoformat()}
    dry = await http.call("POST", "/v1/broadcasts", key, json=body, params={"dry_run": "true"})
    assert dry.status == 200, dry.body
    assert (dry.json["local_time"], dry.json["next_local_time"]) == (
        hour.replace(tzinfo=None).isoformat(timespec="seconds"), None)
    assert [z["timezone"] for z in dry.json["zones"]] == ["Pacific/Kiritimati"]
    assert (dry.json["audience_size"], dry.json["after_until"], dry.json["unreadable_timezone"]) == (2, 1, 0)
    assert dry.json["sends_per_utc_hour"] == [{"hour": hour.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                                               "messages": 1}]


async def test_a_dry_run_counts_contacts_in_a_zone_this_server_cannot_read(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """Such a contact (see contact_in_a_zone_this_server_lacks: a row copied by logical replication
    from a server with newer tzdata) neither refuses the broadcast nor is dropped unsaid: the dry
    run counts it as unreadable_timezone, the real call stages it dead and the others as ever."""
    from test_broadcasts import contact_in_a_zone_this_server_lacks

    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    await contact_in_a_zone_this_server_lacks(db, "lost_1")
    for when in ({"local_time": days_ahead(4)}, {"cron": "0 9 * * *"}):
        body = {"ref_prefix": "bf", "everyone": True, **when}
        dry = await http.call("POST", "/v1/broadcasts", key, json=body, params={"dry_run": "true"})
        assert dry.status == 200, dry.body
        assert (dry.json["audience_size"], dry.json["unreadable_timezone"], dry.json["without_timezone"],
                dry.json["after_until"]) == (4, 1, 0, 0), when
        assert sum(z["contacts"] for z in dry.json["zones"]) == 3
        assert "America/Nuevo_Lugar" not in {z["timezone"] for z in dry.json["zones"]}
    made = await http.call("POST", "/v1/broadcasts", key, json={"ref_prefix": "bf", "everyone": True,
                                                                 "local_time": days_ahead(4)})
    assert made.status == 201, made.body
    assert (made.json["counts"]["staged"], made.json["counts"]["failed"]) == (4, 1)


async def test_a_big_broadcast_needs_another_keys_approval(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 2 WHERE id = 'acme'")
    bob = await add_api_key(db, "acme", name="bob-service")
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    body = {"ref_prefix": "big", "local_time": days_ahead(6), "contact_ids": ["cust_8f", "cust_9a", "cust_7c"]}
    made = await http.call("POST", "/v1/broadcasts", key, json=body)
    assert made.status == 201, made.body
    broadcast_id = made.json["id"]
    assert made.json["state"] == "awaiting_approval" and made.json["counts"]["held"] == 3
    counts = (await http.call("GET", "/v1/stats", key)).json["counts"]
    assert counts["awaiting_approval"] == 3 and counts["pending"] == 0  # every status counted
    own = problem(await http.call("POST", f"/v1/broadcasts/{broadcast_id}/approve", key), 403, "forbidden")
    assert own["sqlstate"] == "42501" and "another person must approve it" in own["detail"]
    approved = await http.call(
        "POST", f"/v1/broadcasts/{broadcast_id}/approve", bob, json={"note": "copy checked"}
    )
    assert approved.status == 200, approved.body
    assert approved.json["approval"] == "approved" and approved.json["released"] == 3
    assert approved.json["decided_by"].endswith("(bob-service)")
    again = problem(await http.call("POST", f"/v1/broadcasts/{broadcast_id}/reject", bob), 409, "conflict")
    assert again["sqlstate"] == "55000"
    second = await http.call("POST", "/v1/broadcasts", key, json={**body, "ref_prefix": "big2"})
    rejected = await http.call("POST", f"/v1/broadcasts/{second.json['id']}/reject", bob)
    assert rejected.status == 200 and rejected.json["cancelled_messages"] == 3
    assert rejected.json["approval"] == "rejected"
    statuses = await db.fetch(
        "SELECT DISTINCT status FROM reminderd.scheduled_messages WHERE ref_id LIKE 'big:%'"
    )
    assert [r["status"] for r in statuses] == ["pending"]
    # The same decision again changes nothing (200, nothing released or cancelled); the creator's
    # own key is refused whether or not another key approved it already.
    approved_again = await http.call("POST", f"/v1/broadcasts/{broadcast_id}/approve", bob)
    assert approved_again.status == 200 and approved_again.json["released"] == 0, approved_again.body
    assert approved_again.json["decided_by"] == approved.json["decided_by"]
    own_again = problem(
        await http.call("POST", f"/v1/broadcasts/{broadcast_id}/approve", key), 403, "forbidden"
    )
    assert own_again["sqlstate"] == "42501" and "another person must approve it" in own_again["detail"]
    rejected_again = await http.call("POST", f"/v1/broadcasts/{second.json['id']}/reject", key)
    assert rejected_again.status == 200 and rejected_again.json["cancelled_messages"] == 0
    assert rejected_again.json["decided_by"] == rejected.json["decided_by"]
    for route, decided in (("approve", second.json["id"]), ("reject", broadcast_id)):
        other_way = problem(await http.call("POST", f"/v1/broadcasts/{decided}/{route}", bob), 409, "conflict")
        assert other_way["sqlstate"] == "55000"


def without_instance(document: dict[str, Any]) -> dict[str, Any]:
    """A problem as two answers to the same input share it: all but its request's own URN."""
    return {k: v for k, v in document.items() if k != "instance"}


@pytest.mark.parametrize(
    ("case", "status", "sqlstate"),
    [
        ("unknown-contacts", 404, "P0002"),
        ("unknown-audience", 404, "P0002"),
        ("prefix-in-use", 409, "23505"),
        ("over-the-limit", 422, "54000"),
        ("more-often-than-hourly", 422, "22023"),
        ("in-the-past", 422, "22023"),
        ("without-a-zone", 422, "22023"),
    ],
)
async def test_a_broadcast_dry_run_answers_what_the_real_call_answers(
    http: ApiClient, key: str, db: asyncpg.Connection, case: str, status: int, sqlstate: str
) -> None:
    """The same status and problem for the same input, the dry run first: nothing it does stays."""
    await http.call("PUT", "/v1/contacts", key, json=[*CONTACTS, {"contact_id": "zoneless"}])
    body: dict[str, Any] = {"ref_prefix": case, "local_time": days_ahead(2), "contact_ids": ["cust_8f"]}
    if case == "unknown-contacts":
        body["contact_ids"] = ["cust_8f", "nobody", "ghost"]
    elif case == "unknown-audience":
        body = {**{k: v for k, v in body.items() if k != "contact_ids"}, "audience": "nolist"}
    elif case == "prefix-in-use":
        first = await http.call("POST", "/v1/broadcasts", key, json={**body, "payload": {"v": 1}})
        assert first.status == 201, first.body
    elif case == "over-the-limit":
        await db.execute("UPDATE reminderd.tenants SET broadcast_limit = 2 WHERE id = 'acme'")
        body["contact_ids"] = ["cust_8f", "cust_9a", "cust_7c"]
    elif case == "more-often-than-hourly":
        body = {**{k: v for k, v in body.items() if k != "local_time"}, "cron": "*/5 * * * *"}
    elif case == "in-the-past":
        body["local_time"] = days_ahead(-1)
    else:
        await db.execute("UPDATE reminderd.tenants SET timezone = NULL WHERE id = 'acme'")
        body["contact_ids"] = ["cust_8f", "zoneless"]
    before = await db.fetchval("SELECT count(*) FROM reminderd.broadcast_requests")
    dry = await http.call("POST", "/v1/broadcasts", key, json=body, params={"dry_run": "true"})
    real = await http.call("POST", "/v1/broadcasts", key, json=body)
    said = problem(real, status, "not-found" if status == 404 else "conflict" if status == 409
                   else "database-refused")
    assert said["sqlstate"] == sqlstate, said
    assert (dry.status, without_instance(dry.json)) == (real.status, without_instance(said))
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_requests") == before


async def test_a_broadcast_dry_run_stages_nothing_and_leaves_the_prefix_free(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """What the real call would write (the request, its messages, their audit trail) is rolled
    back: the real call afterwards is the first, with the prefix free."""
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    trail = await db.fetchval("SELECT count(*) FROM reminderd.events")
    body = {"ref_prefix": "dry", "local_time": days_ahead(3), "everyone": True}
    for params in ({"dry_run": "true"}, {"dry_run": "true"}):
        dry = await http.call("POST", "/v1/broadcasts", key, json=body, params=params)
        assert dry.status == 200 and dry.json["audience_size"] == 3, dry.body
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_requests") == 0
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0
    assert await db.fetchval("SELECT count(*) FROM reminderd.events") == trail
    made = await http.call("POST", "/v1/broadcasts", key, json=body)
    assert made.status == 201 and made.json["counts"]["staged"] == 3, made.body


async def test_broadcast_refusals_say_what_is_wrong(http: ApiClient, key: str, db: asyncpg.Connection) -> None:
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    await db.execute("UPDATE reminderd.tenants SET broadcast_limit = 2 WHERE id = 'acme'")
    over = problem(
        await http.call(
            "POST",
            "/v1/broadcasts",
            key,
            json={"ref_prefix": "many", "local_time": days_ahead(2), "everyone": True},
        ),
        422,
        "database-refused",
    )
    assert over["sqlstate"] == "54000" and "at most 2" in over["detail"]
    often = problem(
        await http.call(
            "POST",
            "/v1/broadcasts",
            key,
            json={"ref_prefix": "often", "cron": "*/5 * * * *", "contact_ids": ["cust_8f"]},
        ),
        422,
        "database-refused",
    )
    assert often["sqlstate"] == "22023" and "12 times an hour" in often["detail"]
    ended = problem(
        await http.call(
            "POST",
            "/v1/broadcasts",
            key,
            json={"ref_prefix": "ended", "cron": "0 9 * * *", "contact_ids": ["cust_8f"],
                  "until": "2026-01-01T09:00:00Z"},
        ),
        422,
        "database-refused",
    )
    assert ended["sqlstate"] == "22008" and ended["detail"].startswith(
        'broadcast "ended" of tenant "acme" ends before it starts: its until 2026-01-01T09:00:00Z is already'
        " past")
    for body, at in [
        ({"ref_prefix": "x", "local_time": days_ahead(2)}, "/audience"),
        ({"ref_prefix": "x", "audience": "vip", "everyone": True, "local_time": days_ahead(2)}, "/everyone"),
        ({"ref_prefix": "x y", "audience": "vip", "local_time": days_ahead(2)}, "/ref_prefix"),
        ({"ref_prefix": "x", "audience": "vip"}, "/cron"),
        ({"ref_prefix": "x", "audience": "vip", "cron": "61 * * * *"}, "/cron"),
        ({"ref_prefix": "x", "audience": "vip", "rrule": "FREQ=DAILY;COUNT=3;BYHOUR=9"}, "/rrule"),
        ({"ref_prefix": "x", "audience": "vip", "local_time": "2026-13-01T09:00"}, "/local_time"),
        ({"ref_prefix": "x", "audience": "vip", "local_time": days_ahead(2), "colour": "red"}, "/colour"),
    ]:
        refused = problem(await http.call("POST", "/v1/broadcasts", key, json=body), 422, "invalid-request")
        assert refused["errors"][0]["pointer"] == at, refused
    missing = problem(
        await http.call(
            "POST",
            "/v1/broadcasts",
            key,
            json={"ref_prefix": "x", "audience": "nolist", "local_time": days_ahead(2)},
        ),
        404,
        "not-found",
    )
    assert "nolist" in missing["detail"]


async def test_a_cadence_over_http(http: ApiClient, key: str) -> None:
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    anchor = (datetime.now(UTC) + timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)
    answer = await http.call(
        "POST",
        "/v1/cadences",
        key,
        json={
            "ref_prefix": "renewal_42",
            "anchor": anchor.isoformat(),
            "offsets": ["-30d", "-7d", "-1d"],
            "at_local": "10:00",
            "contact_id": "cust_7c",
        },
    )
    assert answer.status == 201, answer.body
    steps = {s["ref_id"]: s for s in answer.json["steps"]}
    assert sorted(steps) == ["renewal_42:-1d", "renewal_42:-30d", "renewal_42:-7d"]
    assert steps["renewal_42:-30d"]["skipped"] and steps["renewal_42:-30d"]["id"] is None
    week = steps["renewal_42:-7d"]
    assert week["local_time"].endswith("T10:00:00") and week["skipped"] is None
    local = datetime.fromisoformat(week["fire_at"]).astimezone(load_timezone("Asia/Tokyo"))
    assert (local.hour, local.minute) == (10, 0)
    bad = problem(
        await http.call(
            "POST",
            "/v1/cadences",
            key,
            json={"ref_prefix": "r", "anchor": anchor.isoformat(), "offsets": ["30d"], "contact_id": "cust_7c"},
        ),
        422,
        "invalid-request",
    )
    assert bad["errors"][0]["pointer"] == "/offsets/0"
    both = problem(
        await http.call(
            "POST",
            "/v1/cadences",
            key,
            json={"ref_prefix": "r", "anchor": anchor.isoformat(), "contact_id": "cust_7c", "timezone": "UTC"},
        ),
        422,
        "invalid-request",
    )
    assert "exactly one of contact_id and timezone" in both["detail"]


async def test_a_cadence_offset_is_written_exactly_and_a_fraction_of_a_second_refused(
    http: ApiClient, key: str
) -> None:
    """An offset's seconds became `{:g}` text, 6 significant digits: -86399.99s was rounded into the
    ref `cz:-24h`, -0.00001s an exponent PostgreSQL cannot read (-1e-05 seconds). A step's ref
    names whole seconds, so a fraction is refused, naming the offset as written."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    anchor = (midnight + timedelta(days=60)).isoformat()

    async def cadence(offsets: list[str]) -> Any:
        return await http.call("POST", "/v1/cadences", key, json={
            "ref_prefix": "cz", "anchor": anchor, "at_local": "10:00", "timezone": "Europe/London",
            "offsets": offsets})

    made = await cadence(["-86399s", "-1234567s", "+100001s"])
    assert made.status == 201, made.body
    assert sorted(step["ref_id"] for step in made.json["steps"]) == [
        "cz:+1d3h46m41s", "cz:-14d6h56m7s", "cz:-23h59m59s"]
    for written, index in (("-0.00001s", 0), ("-86399.99s", 0), ("-12345.678s", 1), ("+0.5s", 1)):
        offsets = ["-1d", written] if index else [written]
        refused = problem(await cadence(offsets), 422, "invalid-request")
        assert refused["errors"] == [{"pointer": f"/offsets/{index}", "detail": refused["detail"]}]
        assert refused["detail"] == (
            f"offsets[{index}] {written!r}: an offset is a whole number of seconds (its step's ref names it)"
        )
    for written, says in (("-99y", "use a duration such as"), ("+-5s", "one sign"),
                          (f"-{100 * 366}d", "under 100 years")):
        refused = problem(await cadence([written]), 422, "invalid-request")
        assert refused["errors"][0]["pointer"] == "/offsets/0", refused
        assert refused["detail"].startswith(f"offsets[0] {written!r}: ") and says in refused["detail"], refused


async def test_another_tenants_key_sees_none_of_it(
    http: ApiClient, key: str, db: asyncpg.Connection, receiver: Receiver
) -> None:
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    await http.call("PUT", "/v1/audiences/vip/members", key, json={"contact_ids": ["cust_8f"]})
    made = await http.call(
        "POST", "/v1/broadcasts", key, json={"ref_prefix": "bf", "local_time": days_ahead(3), "audience": "vip"}
    )
    await add_tenant(db, "globex", receiver.url)
    other = await add_api_key(db, "globex", name="globex")
    assert (await http.call("GET", "/v1/contacts/cust_8f", other)).status == 404
    assert (await http.call("GET", "/v1/contacts/cust_8f/messages", other)).status == 404
    assert (await http.call("DELETE", "/v1/contacts/cust_8f", other)).json == {"deleted": 0}
    assert (await http.call("GET", "/v1/audiences", other)).json == {"audiences": []}
    assert (await http.call("GET", "/v1/broadcasts", other)).json == {"broadcasts": []}
    for action in ("approve", "reject", "cancel"):
        assert (await http.call("POST", f"/v1/broadcasts/{made.json['id']}/{action}", other)).status == 404
    assert (await http.call("GET", f"/v1/broadcasts/{made.json['id']}", other)).status == 404
    assert (
        await http.call("PUT", "/v1/audiences/vip/members", other, json={"contact_ids": ["cust_8f"]})
    ).status == 404
    still = await db.fetchval(
        "SELECT count(*) FROM reminderd.scheduled_messages WHERE ref_id LIKE 'bf:%' AND status = 'pending'"
    )
    assert still == 1


async def test_a_cancelled_broadcast_or_one_whose_contacts_were_deleted_has_nothing_to_approve(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """Both answered 200 approved, releasing nothing."""
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 1 WHERE id = 'acme'")
    bob = await add_api_key(db, "acme", name="bob-service")
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    body = {"local_time": days_ahead(6), "contact_ids": ["cust_8f", "cust_9a"]}
    cancelled = (await http.call("POST", "/v1/broadcasts", key, json={**body, "ref_prefix": "c1"})).json["id"]
    emptied = (await http.call("POST", "/v1/broadcasts", key, json={**body, "ref_prefix": "c2"})).json["id"]
    assert (await http.call("POST", f"/v1/broadcasts/{cancelled}/cancel", key)).status == 200
    shown = (await http.call("GET", f"/v1/broadcasts/{cancelled}", key)).json
    assert shown["approval"] == "cancelled"
    for contact in ("cust_8f", "cust_9a"):
        assert (await http.call("DELETE", f"/v1/contacts/{contact}", key)).status == 200
    refused = problem(await http.call("POST", f"/v1/broadcasts/{emptied}/approve", bob), 409, "conflict")
    assert refused["sqlstate"] == "55000" and "has nothing left to approve" in refused["detail"]
    assert problem(await http.call("POST", f"/v1/broadcasts/{cancelled}/approve", bob), 409, "conflict")


async def test_rejecting_a_broadcast_with_nothing_left_to_reject_is_a_409_as_approving_it_is(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """Rejecting one whose contacts were all deleted answered 200 and marked it rejected, where
    approving it is a 409; now both are 409 conflict (55000), with the database's hint."""
    await db.execute("UPDATE reminderd.tenants SET approval_threshold = 1 WHERE id = 'acme'")
    bob = await add_api_key(db, "acme", name="bob-service")
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    body = {"local_time": days_ahead(6), "contact_ids": ["cust_8f", "cust_9a"]}
    cancelled = (await http.call("POST", "/v1/broadcasts", key, json={**body, "ref_prefix": "c1"})).json["id"]
    emptied = (await http.call("POST", "/v1/broadcasts", key, json={**body, "ref_prefix": "c2"})).json["id"]
    assert (await http.call("POST", f"/v1/broadcasts/{cancelled}/cancel", key)).status == 200
    for contact in ("cust_8f", "cust_9a"):
        assert (await http.call("DELETE", f"/v1/contacts/{contact}", key)).status == 200
    for broadcast_id, left in ((emptied, "has nothing left to reject"), (cancelled, "was cancelled")):
        for route in ("approve", "reject"):
            refused = problem(await http.call("POST", f"/v1/broadcasts/{broadcast_id}/{route}", bob), 409,
                              "conflict")
            assert refused["sqlstate"] == "55000" and refused["hint"], refused
        assert left in refused["detail"], refused
        shown = (await http.call("GET", f"/v1/broadcasts/{broadcast_id}", key)).json
        assert shown["decided_by"] is None and shown["done"] and shown["state"] == "done"


async def test_a_notify_broadcast_whose_completion_ref_a_message_holds_is_a_409(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """The dry run says so too, as the real call does: 23505, the ref taken and which message."""
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    held = await http.call("POST", "/v1/messages", key, json={"ref_id": "bf#completed", "fire_in": "2h"})
    assert held.status == 201, held.body
    body = {"ref_prefix": "bf", "local_time": days_ahead(6), "contact_ids": ["cust_7c"], "notify": True}
    for params in ({"dry_run": "true"}, {}):
        refused = problem(await http.call("POST", "/v1/broadcasts", key, json=body, params=params), 409,
                          "conflict")
        assert refused["sqlstate"] == "23505" and 'would notify with ref "bf#completed"' in refused["detail"]
        assert refused["hint"].startswith("Give the broadcast another ref_prefix")
    assert (await http.call("GET", "/v1/broadcasts", key)).json == {"broadcasts": []}


async def test_a_read_only_key_reads_but_cannot_write(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    reader = await add_api_key(db, "acme", name="reader", read_only=True)
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)
    assert (await http.call("GET", "/v1/contacts/cust_8f", reader)).status == 200
    problem(await http.call("PUT", "/v1/contacts", reader, json=CONTACTS), 403, "forbidden")
    problem(await http.call("PUT", "/v1/contacts", reader, data=b"{}\n", headers=NDJSON), 403, "forbidden")


@pytest.mark.parametrize(
    "contact",
    [
        {"contact_id": "a", "phone": "8\udbd4\uddd0\u00e8\u0005"},
        {"contact_id": "a", "phone": "\u0000"},
        {"contact_id": "a", "attributes": {"x": "\u0000"}},
        {"contact_id": "a", "phone": "+1\ud800"},
        {"contact_id": "a", "phone": "8" * 5000},
        {"contact_id": "a", "attributes": None, "phone": None, "country": None, "timezone": None},
    ],
)
async def test_odd_contacts_are_never_a_500(http: ApiClient, key: str, contact: dict[str, Any]) -> None:
    answer = await http.call(
        "PUT",
        "/v1/contacts",
        key,
        data=json.dumps([contact]).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status < 500, answer.body
    assert answer.json["received"] == 1 if answer.status == 200 else answer.json["detail"]


async def test_numbers_in_attributes_are_kept_as_written(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """What schemathesis found: a float in attributes (kept as written, not re-encoded) was a 500."""
    body = (
        b'[{"contact_id": "n", "attributes": {"big": -1.7976931348623157e+308, "exact": 12345678901234567.5}}]'
    )
    answer = await http.call(
        "PUT", "/v1/contacts", key, data=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status == 200 and answer.json["new"] == 1, answer.body
    stored = await db.fetchval("SELECT attributes::text FROM reminderd.contacts WHERE contact_id = 'n'")
    assert "12345678901234567.5" in stored


async def test_a_cadence_moved_earlier_says_what_it_cancelled(http: ApiClient, key: str) -> None:
    await http.call("PUT", "/v1/contacts", key, json=CONTACTS)

    async def steps(days: int, offsets: list[str]) -> dict[str, dict[str, Any]]:
        anchor = (datetime.now(UTC) + timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
        answer = await http.call("POST", "/v1/cadences", key, json={
            "ref_prefix": "ren", "anchor": anchor.isoformat(), "offsets": offsets, "at_local": "10:00",
            "contact_id": "cust_7c"})
        assert answer.status == 201, answer.body
        return {s["ref_id"]: s for s in answer.json["steps"]}

    first = await steps(60, ["-30d", "-7d", "-1d"])
    assert {ref: s["outcome"] for ref, s in first.items()} == dict.fromkeys(first, "scheduled")
    moved = await steps(5, ["-7d", "-1d"])
    assert {ref: (s["outcome"], s["cancelled_id"], s["skipped"]) for ref, s in moved.items()} == {
        "ren:-7d": ("cancelled", first["ren:-7d"]["id"], "in the past"),
        "ren:-1d": ("replaced", first["ren:-1d"]["id"], None),
        "ren:-30d": ("cancelled", first["ren:-30d"]["id"], "not in the cadence any more"),
    }
