"""The HTTP API in-process (aiohttp's test server) against a real PostgreSQL, connected as a login
role granted reminderd_api and nothing else: what `reminderd serve` runs as in production."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from support import ApiClient, api_role_url, api_settings, db_now, drain, fast_settings, near, running_api

from reminderd.testing import Receiver, add_api_key, add_tenant

PROBLEM = "application/problem+json"


@pytest.fixture
async def key(db: asyncpg.Connection, receiver: Receiver) -> str:
    await add_tenant(db, "acme", receiver.url)
    return await add_api_key(db, "acme", name="booking-service")


def problem(answer: Any, status: int, kind: str) -> dict[str, Any]:
    assert answer.status == status, answer.body
    assert answer.headers["Content-Type"].startswith(PROBLEM)
    document: dict[str, Any] = answer.json
    assert document["type"] == f"urn:reminderd:problem:{kind}"
    assert document["status"] == status and document["title"] and document["detail"]
    return document


async def test_schedule_one_message_and_read_it_back(http: ApiClient, key: str, db: asyncpg.Connection) -> None:
    fire_at = (await db_now(db) + timedelta(hours=2)).replace(microsecond=0)
    body = (
        f'{{"ref_id": "booking:b7d2:24h", "fire_at": "{fire_at.isoformat()}", '
        '"payload": {"to": "+919876543210", "amount": 12345678901234567.5}}'
    )
    answer = await http.call(
        "POST", "/v1/messages", key, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert answer.status == 201, answer.body
    created = answer.json
    assert created["ref_id"] == "booking:b7d2:24h" and created["status"] == "pending"
    assert created["result"] == "created"
    assert datetime.fromisoformat(created["fire_at"]) == fire_at
    assert created["description"].startswith("once, at ")
    got = await http.call("GET", f"/v1/messages/{created['id']}", key)
    assert got.status == 200
    assert b'"amount": 12345678901234567.5' in got.body  # as written, not a float's rounding
    assert got.json["events"][0]["event"] == "created"
    assert got.json["events"][0]["actor"] == "reminderd_api_test"
    assert got.json["deliveries"] == []


async def test_the_identical_call_returns_the_message_it_created_and_another_replaces_it(
    http: ApiClient, key: str
) -> None:
    body = {"ref_id": "cart:991", "fire_in": "2h", "payload": {"cart": 991}}
    first = await http.call("POST", "/v1/messages", key, json=body)
    again = await http.call("POST", "/v1/messages", key, json=body)
    other = await http.call("POST", "/v1/messages", key, json={**body, "fire_in": "PT3H"})
    assert (first.status, again.status, other.status) == (201, 200, 201)
    assert again.json["id"] == first.json["id"] and again.json["result"] == "unchanged"
    assert other.json["result"] == "replaced" and other.json["id"] != first.json["id"]
    old = await http.call("GET", f"/v1/messages/{first.json['id']}", key)
    assert old.json["status"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "pointer", "says"),
    [
        ({"fire_in": "2h"}, "/ref_id", "ref_id is required"),
        ({"ref_id": "r", "fire_at": "2026-12-24T09:00"}, "/fire_at", "has no UTC offset"),
        ({"ref_id": "r", "fire_at": "tomorrow"}, "/fire_at", "is not ISO-8601"),
        ({"ref_id": "r", "fire_in": "-5m"}, "/fire_in", "cannot be negative"),
        ({"ref_id": "r", "fire_in": True}, "/fire_in", "must be a duration"),
        ({"ref_id": "r", "cron": "61 * * * *"}, "/cron", "61"),
        ({"ref_id": "r", "every": "whenever you like"}, "/every", ""),
        ({"ref_id": "r", "fire_in": "1h", "timezone": "Mars/Olympus"}, "/timezone", "unknown timezone"),
        ({"ref_id": "r", "local_time": "2026-12-24T09:00"}, "/timezone", "local_time needs timezone"),
        ({"ref_id": "r", "fire_in": "1h", "cron": "* * * * *"}, "/cron", "give only one of"),
        ({"ref_id": "r"}, "/fire_at", "say when"),
        ({"ref_id": "r", "fire_in": "1h", "max_runs": 3}, "/max_runs", "end a recurring schedule"),
        ({"ref_id": "r", "fire_in": "1h", "category": "Marketing!"}, "/category", "lower-case"),
        ({"ref_id": "r", "fire_in": "1h", "callback_url": "ftp://x"}, "/callback_url", "http"),
        ({"ref_id": "r", "fire_in": "1h", "callback_url": "http://h:99999/"}, "/callback_url",
         'has port "99999": a port is 1 to 65535'),
        ({"ref_id": "r", "fire_in": "1h", "backfill": "maybe"}, "/backfill", "one of send, latest, skip"),
        ({"ref_id": "r", "fire_in": "1h", "max_attempts": 0}, "/max_attempts", "at least 1"),
        ({"ref_id": "r", "fire_in": "1h", "payload": "\ud800"}, "/payload", "half a UTF-16 surrogate pair"),
        ({"ref_id": "r", "fire_in": "1h", "surprise": 1}, "/surprise", "unknown field"),
        ({"ref_id": "", "fire_in": "1h"}, "/ref_id", "is empty"),
    ],
)
async def test_bad_input_is_a_problem_naming_the_field(
    http: ApiClient, key: str, body: dict[str, Any], pointer: str, says: str
) -> None:
    document = problem(await http.call("POST", "/v1/messages", key, json=body), 422, "invalid-request")
    assert document["errors"][0]["pointer"] == pointer
    assert says in document["detail"] and says in document["errors"][0]["detail"]


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "Factory", "posix/Europe/London", "right/UTC"])
async def test_a_zone_file_that_names_no_iana_zone_is_a_problem_naming_the_field(
    http: ApiClient, key: str, zone: str
) -> None:
    """localtime is whatever zone the host reading it is in (they were taken, right/UTC refused only
    by the database; migration 0032)."""
    body = {"ref_id": "r", "every": "every day at 9am", "timezone": zone}
    document = problem(await http.call("POST", "/v1/messages", key, json=body), 422, "invalid-request")
    assert document["errors"][0]["pointer"] == "/timezone"
    assert f'unknown timezone "{zone}": ' in document["detail"] and "not an IANA zone" in document["detail"]


# Text PostgreSQL cannot store (NUL, half a surrogate pair): refused by its field when the body is read

JSON_BODY = {"Content-Type": "application/json"}
NUL, HALF = "\\u0000", "\\ud800"  # as JSON writes them in a body


@pytest.mark.parametrize(
    ("method", "path", "body", "pointer"),
    [
        ("POST", "/v1/messages", f'{{"ref_id": "a{NUL}b", "fire_in": "1h"}}', "/ref_id"),
        ("POST", "/v1/messages", f'{{"ref_id": "a{HALF}b", "fire_in": "1h"}}', "/ref_id"),
        ("POST", "/v1/messages", f'{{"ref_id": "s", "fire_in": "1h", "timezone": "x{HALF}"}}', "/timezone"),
        ("POST", "/v1/messages", f'{{"ref_id": "s", "cron": "x{HALF}"}}', "/cron"),
        ("POST", "/v1/messages", f'{{"ref_id": "s", "every": "x{HALF}"}}', "/every"),
        ("POST", "/v1/messages", f'{{"ref_id": "s", "rrule": "x{HALF}"}}', "/rrule"),
        ("POST", "/v1/messages", f'{{"ref_id": "s", "fire_in": "1h", "calendar": "x{HALF}"}}', "/calendar"),
        ("POST", "/v1/messages", f'{{"ref_id": "s", "fire_in": "1h", "callback_url": "https://a{NUL}"}}',
         "/callback_url"),
        ("POST", "/v1/messages", f'{{"ref_id": "s", "fire_in": "1h", "payload": {{"to": [1, "x{NUL}"]}}}}',
         "/payload/to/1"),
        ("POST", "/v1/messages", f'{{"ref_id": "s", "fire_in": "1h", "payload": {{"k{HALF}": 1}}}}',
         "/payload"),
        ("PATCH", "/v1/tenant", f'{{"calendar": "x{HALF}"}}', "/calendar"),
        ("POST", "/v1/messages/batch", f'{{"messages": [{{"ref_id": "s", "fire_in": "1h"}}], "x{NUL}": 1}}',
         ""),
    ],
    ids=["nul-ref", "half-ref", "timezone", "cron", "every", "rrule", "calendar", "callback-url", "in-payload",
         "payload-name", "tenant-calendar", "batch-member-name"],
)
async def test_a_string_postgresql_cannot_store_is_a_422_naming_its_field(
    http: ApiClient, key: str, db: asyncpg.Connection, method: str, path: str, body: str, pointer: str
) -> None:
    """Refused as the body is read, for any field (nothing reaches the database, which would refuse
    the whole statement for it), and the answer is JSON although a value repeated in it could not be
    UTF-8: never the bare text/plain 500 it was."""
    document = problem(await http.call(method, path, key, data=body.encode(), headers=JSON_BODY),
                       422, "invalid-request")
    assert document["errors"][0]["pointer"] == pointer
    assert "PostgreSQL cannot store it" in document["detail"]
    assert ("NUL character" if NUL in body else "half a UTF-16 surrogate pair") in document["detail"]
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0
    assert await db.fetchval("SELECT calendar IS NULL FROM reminderd.tenants WHERE id = 'acme'")


async def test_single_posts_with_text_the_database_cannot_store_fail_only_themselves(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """Sixty single POSTs of one key at once, every tenth with a NUL in its ref_id: the batcher
    writes the others together and each is created; each bad one is its own 422 (a bad one used to
    make the database refuse the whole call, and every request in it got that 422)."""
    def body(n: int) -> bytes:
        return (f'{{"ref_id": "bad{NUL}{n}", "fire_in": "1h"}}' if n % 10 == 5
                else f'{{"ref_id": "race:{n}", "fire_in": "1h"}}').encode()

    answers = await asyncio.gather(
        *(http.call("POST", "/v1/messages", key, data=body(n), headers=JSON_BODY) for n in range(60))
    )
    for n, answer in enumerate(answers):
        if n % 10 == 5:
            assert problem(answer, 422, "invalid-request")["errors"][0]["pointer"] == "/ref_id"
        else:
            assert answer.status == 201, answer.body
    refs = await db.fetch("SELECT ref_id FROM reminderd.scheduled_messages")
    assert sorted(r["ref_id"] for r in refs) == sorted(f"race:{n}" for n in range(60) if n % 10 != 5)


async def test_a_batched_call_the_database_refuses_whole_is_written_one_request_at_a_time(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """Past the body's checks, the batcher itself (reminderd/batching.py) against the real
    database: a ref with a NUL makes PostgreSQL refuse the call's whole array; each request is then
    written alone, so the others are created and the bad one gets its own refusal, with a detail."""
    from reminderd.exceptions import DatabaseRefused
    from reminderd.validation import ScheduleRequest

    key_id = await db.fetchval("SELECT id FROM reminderd.api_keys WHERE name = 'booking-service'")
    refs = [f"together:{n}" if n != 4 else "bad\x00ref" for n in range(8)]
    answers = await asyncio.gather(
        *(http.api.batcher.schedule("acme", key_id, ScheduleRequest("acme", ref, "{}", None, fire_in_s=3600.0),
                                    acting_for="rk_x (booking-service)") for ref in refs),
        return_exceptions=True,
    )
    refused = answers.pop(4)
    assert isinstance(refused, DatabaseRefused) and refused.message and refused.sqlstate
    assert "0x00" in refused.message or "NUL" in refused.message or "null" in refused.message.lower()
    assert [getattr(a, "result", a) for a in answers] == ["created"] * 7
    written = await db.fetch("SELECT ref_id FROM reminderd.scheduled_messages")
    assert sorted(r["ref_id"] for r in written) == sorted(r for r in refs if "\x00" not in r)


async def test_a_non_atomic_batch_refuses_only_its_items_with_text_the_database_cannot_store(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    body = (f'{{"atomic": false, "messages": [{{"ref_id": "ok", "fire_in": "1h"}},'
            f' {{"ref_id": "b{HALF}", "fire_in": "soon"}}, {{"ref_id": "n{NUL}", "fire_in": "1h"}},'
            f' {{"ref_id": "ok2", "fire_in": "1h", "payload": {{"k": "v{NUL}"}}}}]}}')
    answer = await http.call("POST", "/v1/messages/batch", key, data=body.encode(), headers=JSON_BODY)
    assert answer.status == 200, answer.body
    assert (answer.json["created"], answer.json["failed"]) == (1, 3)
    results = answer.json["results"]
    assert [r["result"] for r in results] == ["created", "error", "error", "error"]
    assert [r["ref_id"] for r in results] == ["ok", None, None, "ok2"]  # what an answer cannot hold: none
    assert [r["error"]["errors"][0]["pointer"] for r in results[1:]] == [
        "/messages/1/ref_id", "/messages/2/ref_id", "/messages/3/payload/k"]
    assert [r["ref_id"] for r in await db.fetch("SELECT ref_id FROM reminderd.scheduled_messages")] == ["ok"]
    atomic = problem(await http.call("POST", "/v1/messages/batch", key, data=body.replace(
        '"atomic": false', '"atomic": true').encode(), headers=JSON_BODY), 422, "invalid-request")
    assert [e["pointer"] for e in atomic["errors"]] == [
        "/messages/1/ref_id", "/messages/2/ref_id", "/messages/3/payload/k"]
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 1


async def test_a_problem_json_cannot_write_is_still_a_problem_never_a_bare_500(
    http: ApiClient, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reminderd.problems import Problem
    from reminderd.store import Store

    async def unwritable(self: Store, tenant_id: str) -> None:
        raise Problem("invalid-request", "x", extra={"unwritable": object()})

    monkeypatch.setattr(Store, "tenant_stats", unwritable)
    document = problem(await http.call("GET", "/v1/stats", key), 500, "internal")
    assert "request_id" in document["detail"] and document["instance"].startswith("urn:reminderd:request:")


# JSON numbers of seconds: any number, written any way JSON writes one (openapi.yaml's Duration)


async def test_a_duration_may_be_any_json_number_of_seconds(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    for n, written in enumerate(("1e3", "1000", "1000.0", "1.0E+3", "10e2")):
        body = f'{{"ref_id": "n:{n}", "fire_in": {written}, "max_lateness": 6e1}}'.encode()
        answer = await http.call("POST", "/v1/messages", key, data=body, headers=JSON_BODY)
        assert answer.status == 201, answer.body
    rows = await db.fetch(
        "SELECT fire_at - created_at AS delay, max_lateness FROM reminderd.scheduled_messages")
    assert {(r["delay"], r["max_lateness"]) for r in rows} == {(timedelta(seconds=1000), timedelta(minutes=1))}
    for written in ("-1e3", "0e0", "1e99"):
        body = f'{{"ref_id": "bad", "fire_in": {written}}}'.encode()
        refused = problem(await http.call("POST", "/v1/messages", key, data=body, headers=JSON_BODY),
                          422, "invalid-request")
        assert refused["detail"].startswith(f"fire_in '{written}': ")  # as the client wrote it
        assert refused["errors"][0]["pointer"] == "/fire_in"
    message_id = (await db.fetchval("SELECT min(id) FROM reminderd.scheduled_messages"))
    moved = await http.call("PATCH", f"/v1/messages/{message_id}", key, data=b'{"fire_in": 2e3}',
                            headers=JSON_BODY)
    assert moved.status == 200, moved.body
    rotated = await http.call("POST", "/v1/tenant/rotate-secret", key, data=b'{"grace": 3.6e3}',
                              headers=JSON_BODY)
    assert rotated.status == 200, rotated.body
    stored = await db.fetchval("SELECT previous_secret_expires_at FROM reminderd.tenants WHERE id = 'acme'")
    assert near(stored, await db_now(db) + timedelta(hours=1))


async def test_a_database_refusal_is_a_422_with_its_sqlstate(http: ApiClient, key: str) -> None:
    far = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    document = problem(
        await http.call("POST", "/v1/messages", key, json={"ref_id": "r", "fire_at": far}),
        422,
        "database-refused",
    )
    assert document["sqlstate"] == "22008" and "horizon" in document["detail"]


async def test_single_posts_at_once_each_get_their_own_answer(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """Concurrent single POSTs of one key are written together (reminderd/batching.py), each still
    answered alone: its own message, its own refusal, the same ref twice one after the other."""
    far = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    bodies: list[dict[str, Any]] = [{"ref_id": f"many:{n}", "fire_in": f"{n + 1}h", "payload": {"n": n}}
                                    for n in range(24)]
    bodies[7] = {"ref_id": "many:7", "fire_at": far}  # refused by the database (the horizon)
    bodies += [{"ref_id": "twice", "fire_in": "1h"}, {"ref_id": "twice", "fire_in": "2h"}]
    answers = await asyncio.gather(*(http.call("POST", "/v1/messages", key, json=body) for body in bodies))
    refused = problem(answers[7], 422, "database-refused")
    assert refused["sqlstate"] == "22008" and "horizon" in refused["detail"]
    assert refused["errors"][0]["pointer"] == "/fire_at"
    made = [a for n, a in enumerate(answers) if n != 7]
    assert [a.status for a in made] == [201] * 25, [a.body for a in made]
    assert [a.json["ref_id"] for a in made] == [b["ref_id"] for n, b in enumerate(bodies) if n != 7]
    rows = {r["id"]: r for r in await db.fetch(
        "SELECT id, ref_id, status, payload::text, fire_at - created_at AS delay"
        " FROM reminderd.scheduled_messages"
    )}
    for n, answer in enumerate(answers[:24]):
        if n != 7:
            row = rows[answer.json["id"]]
            assert (row["ref_id"], json.loads(row["payload"]), row["delay"]) == (
                f"many:{n}", {"n": n}, timedelta(hours=n + 1)
            )
    assert not any(r["ref_id"] == "many:7" for r in rows.values())
    first, second = answers[24].json, answers[25].json
    assert sorted([first["result"], second["result"]]) == ["created", "replaced"]
    later = second if second["result"] == "replaced" else first
    assert {rows[first["id"]]["status"], rows[second["id"]]["status"]} == {"pending", "cancelled"}
    assert rows[later["id"]]["status"] == "pending"


# Nothing dead on arrival, and a recurring message's first occurrence: the CLI's rules (validation.py)


def _ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


@pytest.mark.parametrize(
    ("body", "pointer", "says"),
    [
        ({"ref_id": "r", "fire_at": "2020-01-01T09:00:00Z"}, "/fire_at",
         "fire_at '2020-01-01T09:00:00Z' was "),
        ({"ref_id": "r", "fire_at": "AGO_2H"}, "/fire_at",
         "too late to send, backfill=send sends a message at most 30m late, so it would expire at once; "
         "schedule it for now or later; max_lateness (or backfill latest) allows later"),
        ({"ref_id": "r", "fire_at": "AGO_2M", "backfill": "skip"}, "/fire_at", "at most 1m late"),
        ({"ref_id": "r", "local_time": "2020-01-01T09:00", "timezone": "Asia/Kolkata"}, "/local_time",
         "local_time '2020-01-01T09:00' was "),
        ({"ref_id": "r", "cron": "0 9 * * *", "until": "2020-01-01T00:00:00Z"}, "/until",
         "until '2020-01-01T00:00:00Z' is already past"),
        ({"ref_id": "r", "cron": "0 9 29 2 *", "until": "IN_1M"}, "/until", "is before the first occurrence"),
    ],
    ids=["beyond-lookback", "beyond-max-lateness", "skip", "local-time", "until-past", "until-first"],
)
async def test_a_message_dead_on_arrival_is_a_problem_naming_the_field(
    http: ApiClient, key: str, db: asyncpg.Connection, body: dict[str, Any], pointer: str, says: str
) -> None:
    stamps = {"AGO_2H": _ago(hours=2), "AGO_2M": _ago(minutes=2),
              "IN_1M": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()}
    body = {name: stamps.get(value, value) if isinstance(value, str) else value for name, value in body.items()}
    document = problem(await http.call("POST", "/v1/messages", key, json=body), 422, "invalid-request")
    assert document["errors"][0]["pointer"] == pointer
    assert says in document["detail"]
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


async def test_a_message_slightly_late_is_accepted_and_due_now(http: ApiClient, key: str) -> None:
    answer = await http.call("POST", "/v1/messages", key, json={"ref_id": "r", "fire_at": _ago(minutes=5)})
    assert answer.status == 201, answer.body
    assert answer.json["status"] == "pending"


async def test_the_databases_own_defaults_refuse_with_a_sentence_and_the_field(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """The database checks with reminderd.config (the daemon's defaults): stricter than the API's
    own check here, its 22008 refusal is a 422 naming the field, in the sentence the CLI prints."""
    await db.execute("UPDATE reminderd.config SET value = '1 minute' WHERE key = 'max_lateness'")
    answer = await http.call("POST", "/v1/messages", key, json={"ref_id": "r", "fire_at": _ago(minutes=10)})
    document = problem(answer, 422, "database-refused")
    assert document["sqlstate"] == "22008"
    assert document["errors"] == [{"detail": document["detail"], "pointer": "/fire_at"}]
    assert document["detail"].startswith("message acme / r is too late to send: due ")
    assert document["detail"].endswith("; schedule it for now or later, or give it a larger max_lateness (or "
                                       "backfill 'latest', up to the lookback) to send it this late")
    batch = await http.call("POST", "/v1/messages/batch", key, json={"messages": [
        {"ref_id": "ok", "fire_in": "1h"}, {"ref_id": "late", "fire_at": _ago(minutes=10)}], "atomic": False})
    assert batch.status == 200, batch.body
    error = batch.json["results"][1]["error"]
    assert error["errors"][0]["pointer"] == "/messages/1/fire_at" and error["sqlstate"] == "22008"
    first = (await http.call("GET", "/v1/messages", key, params={"ref": "ok"})).json["messages"][0]
    moved = await http.call("PATCH", f"/v1/messages/{first['id']}", key, json={"fire_at": _ago(minutes=10)})
    assert problem(moved, 422, "database-refused")["errors"][0]["pointer"] == "/fire_at"


async def test_a_recurring_message_is_due_at_its_first_occurrence_with_the_tenants_holidays_skipped(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    now = await db_now(db)
    tomorrow = (now + timedelta(days=1)).astimezone(UTC).date()
    await db.execute("INSERT INTO reminderd.tenant_holidays (tenant_id, day, name) VALUES ('acme', $1, 'Off')",
                     tomorrow)
    answer = await http.call("POST", "/v1/messages", key, json={"ref_id": "digest", "cron": "0 9 * * *"})
    assert answer.status == 201, answer.body
    nine = datetime.combine(now.astimezone(UTC).date(), datetime.min.time(), UTC) + timedelta(hours=9)
    expected = nine if nine > now else nine + timedelta(days=1)
    if expected.date() == tomorrow:
        expected += timedelta(days=1)
    assert datetime.fromisoformat(answer.json["fire_at"]) == expected
    stored_at = await db.fetchval("SELECT fire_at FROM reminderd.scheduled_messages WHERE ref_id = 'digest'")
    assert stored_at == expected
    rrule = await http.call("POST", "/v1/messages", key, json={"ref_id": "fortnightly",
                                                               "rrule": "FREQ=WEEKLY;INTERVAL=2;BYHOUR=9"})
    assert rrule.status == 201 and rrule.json["fire_at"] is not None
    stored = await db.fetchval("SELECT rrule FROM reminderd.scheduled_messages WHERE ref_id = 'fortnightly'")
    assert stored.startswith("DTSTART:") and stored.endswith("\nFREQ=WEEKLY;INTERVAL=2;BYHOUR=9")
    for day in range(3):  # every day until `until` a holiday: nothing would ever be sent
        await db.execute(
            "INSERT INTO reminderd.tenant_holidays (tenant_id, day, name) VALUES ('acme', $1, 'Off')"
            " ON CONFLICT DO NOTHING", (now + timedelta(days=day)).astimezone(UTC).date())
    until = f"{(now + timedelta(days=2)).astimezone(UTC).date()}T23:00:00Z"
    body = {"ref_id": "d", "cron": "0 9 * * *", "until": until}
    document = problem(await http.call("POST", "/v1/messages", key, json=body), 422, "invalid-request")
    assert document["errors"][0]["pointer"] == "/until" and "nothing would ever be sent" in document["detail"]


@pytest.mark.parametrize(
    ("data", "content_type", "status", "kind"),
    [
        (b"{not json", "application/json", 400, "invalid-json"),
        (b"[1, 2]", "application/json", 400, "invalid-json"),
        (b'{"ref_id": "r", "fire_in": NaN}', "application/json", 400, "invalid-json"),
        (b"\xff\xfe", "application/json", 400, "invalid-json"),
        (b"ref_id=r", "application/x-www-form-urlencoded", 415, "unsupported-media-type"),
        (b'{"a":' * 100 + b"1" + b"}" * 100, "application/json", 400, "invalid-json"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_refused(
    http: ApiClient, key: str, data: bytes, content_type: str, status: int, kind: str
) -> None:
    answer = await http.call("POST", "/v1/messages", key, data=data, headers={"Content-Type": content_type})
    problem(answer, status, kind)


async def test_a_body_over_the_limit_is_a_413(db: asyncpg.Connection, database_url: str, key: str) -> None:
    url = await api_role_url(db, database_url)
    async with running_api(api_settings(url, api_max_body=2048)) as http:
        answer = await http.call(
            "POST", "/v1/messages", key, json={"ref_id": "r", "fire_in": "1h", "payload": {"text": "x" * 5000}}
        )
    problem(answer, 413, "body-too-large")


async def test_keys_missing_unknown_revoked_read_only_and_operator(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    body = {"ref_id": "r", "fire_in": "1h"}
    missing = await http.call("POST", "/v1/messages", None, json=body)
    assert problem(missing, 401, "unauthorized") and missing.headers["WWW-Authenticate"].startswith("Bearer")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    wrong = await http.call("POST", "/v1/messages", forged, json=body)
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert forged not in wrong.body.decode() and key not in wrong.body.decode()
    problem(await http.call("POST", "/v1/messages", "Basic abc", json=body), 401, "unauthorized")
    reader = await add_api_key(db, "acme", read_only=True)
    assert (await http.call("GET", "/v1/tenant", reader)).status == 200
    assert (
        "read-only"
        in problem(await http.call("POST", "/v1/messages", reader, json=body), 403, "forbidden")["detail"]
    )
    operator = await add_api_key(db, None)
    assert "operator" in problem(await http.call("GET", "/v1/tenant", operator), 403, "forbidden")["detail"]
    await db.execute("UPDATE reminderd.api_keys SET revoked_at = now() WHERE prefix = $1", key[:15])
    problem(await http.call("GET", "/v1/tenant", key), 401, "unauthorized")  # the cache is off in tests


async def test_a_verified_key_is_cached_and_a_revocation_takes_effect_after_the_ttl(
    db: asyncpg.Connection, database_url: str, key: str
) -> None:
    url = await api_role_url(db, database_url)
    async with running_api(api_settings(url, api_key_cache_s=3600)) as http:
        assert (await http.call("GET", "/v1/tenant", key)).status == 200
        await db.execute("UPDATE reminderd.api_keys SET revoked_at = now() WHERE prefix = $1", key[:15])
        assert (await http.call("GET", "/v1/tenant", key)).status == 200  # within the cache's staleness
        http.api.keys.forget(key[:15])  # what the TTL running out does
        assert (await http.call("GET", "/v1/tenant", key)).status == 401


async def test_last_used_at_is_written_in_a_batch(http: ApiClient, key: str, db: asyncpg.Connection) -> None:
    await http.call("GET", "/v1/tenant", key)
    assert await db.fetchval("SELECT last_used_at FROM reminderd.api_keys") is None
    used = http.api.keys.take_usage()
    await http.api.store.api_keys_used(used)
    assert near(await db.fetchval("SELECT last_used_at FROM reminderd.api_keys"), await db_now(db))


async def test_the_rate_limit_is_a_429_with_retry_after(
    db: asyncpg.Connection, database_url: str, key: str
) -> None:
    await db.execute("UPDATE reminderd.tenants SET api_rate_limit = 2 WHERE id = 'acme'")
    url = await api_role_url(db, database_url)
    async with running_api(api_settings(url)) as http:
        http.api.clock = lambda: 1000.0  # no refill between the requests, however slow the machine
        statuses = [(await http.call("GET", "/v1/tenant", key)).status for _ in range(3)]
        limited = await http.call("GET", "/v1/tenant", key)
    assert statuses == [200, 200, 429]
    problem(limited, 429, "rate-limited")
    assert int(limited.headers["Retry-After"]) >= 1


async def test_a_batch_reports_each_item_and_atomic_is_all_or_nothing(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    items: list[dict[str, Any]] = [{"ref_id": f"b:{i}", "fire_in": "1h"} for i in range(5)]
    items[3] = {"ref_id": "b:3", "fire_in": "soon"}
    atomic = problem(
        await http.call("POST", "/v1/messages/batch", key, json={"messages": items}), 422, "invalid-request"
    )
    assert [e["pointer"] for e in atomic["errors"]] == ["/messages/3/fire_in"]
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0
    loose = await http.call("POST", "/v1/messages/batch", key, json={"messages": items, "atomic": False})
    assert loose.status == 200
    results = loose.json["results"]
    assert [r["result"] for r in results] == ["created", "created", "created", "error", "created"]
    assert results[3]["error"]["errors"][0]["pointer"] == "/messages/3/fire_in"
    assert (loose.json["created"], loose.json["failed"]) == (4, 1)
    far = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    refused = problem(
        await http.call(
            "POST",
            "/v1/messages/batch",
            key,
            json={"messages": [{"ref_id": "c:1", "fire_in": "1h"}, {"ref_id": "c:2", "fire_at": far}]},
        ),
        422,
        "database-refused",
    )
    assert refused["item"] == 1 and refused["sqlstate"] == "22008"
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE ref_id LIKE 'c:%'") == 0


@pytest.mark.parametrize("order", ["newest", "soonest"])
@pytest.mark.parametrize("params", [{}, {"ref_prefix": "page:"}], ids=["all", "by-prefix"])
async def test_the_last_page_has_no_next_cursor_even_when_it_is_full(
    http: ApiClient, key: str, order: str, params: dict[str, str]
) -> None:
    """Six messages in pages of three: two pages, the second without a next_cursor (not a third,
    empty page); none at all: one empty page."""
    empty = (await http.call("GET", "/v1/messages", key, params={"order": order, **params})).json
    assert empty == {"messages": [], "next_cursor": None}
    messages = [{"ref_id": f"page:{i}", "fire_in": f"{i + 1}h"} for i in range(6)]
    assert (await http.call("POST", "/v1/messages/batch", key, json={"messages": messages})).status == 200
    pages, cursor = [], None
    while True:
        query = {"order": order, "limit": "3", **params} | ({"cursor": cursor} if cursor else {})
        page = (await http.call("GET", "/v1/messages", key, params=query)).json
        pages.append([m["ref_id"] for m in page["messages"]])
        cursor = page["next_cursor"]
        if cursor is None or len(pages) > 3:
            break
    assert [len(page) for page in pages] == [3, 3]
    assert sorted(ref for page in pages for ref in page) == [f"page:{i}" for i in range(6)]


async def test_listing_pages_newest_and_soonest_first_with_filters(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    messages = [{"ref_id": f"booking:{i:02}", "fire_in": f"{60 - i}m"} for i in range(25)]
    messages += [{"ref_id": f"cart:{i}", "fire_in": f"{i + 1}h"} for i in range(5)]
    assert (await http.call("POST", "/v1/messages/batch", key, json={"messages": messages})).status == 200
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params = {"limit": "7"} | ({"cursor": cursor} if cursor else {})
        page = (await http.call("GET", "/v1/messages", key, params=params)).json
        seen += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == 30
    soonest = (await http.call("GET", "/v1/messages", key, params={"order": "soonest", "limit": "3"})).json
    assert [m["ref_id"] for m in soonest["messages"]] == ["booking:24", "booking:23", "booking:22"]
    after = (
        await http.call(
            "GET",
            "/v1/messages",
            key,
            params={"order": "soonest", "limit": "3", "cursor": soonest["next_cursor"]},
        )
    ).json
    assert [m["ref_id"] for m in after["messages"]] == ["booking:21", "booking:20", "booking:19"]
    carts = (await http.call("GET", "/v1/messages", key, params={"ref_prefix": "cart:"})).json
    assert sorted(m["ref_id"] for m in carts["messages"]) == [f"cart:{i}" for i in range(5)]
    one = (await http.call("GET", "/v1/messages", key, params={"ref": "cart:3"})).json
    assert [m["ref_id"] for m in one["messages"]] == ["cart:3"]
    await http.call("DELETE", "/v1/messages", key, params={"ref": "cart:3"})
    cancelled = (await http.call("GET", "/v1/messages", key, params={"status": "cancelled"})).json
    assert [m["ref_id"] for m in cancelled["messages"]] == ["cart:3"]
    soon = await db_now(db) + timedelta(minutes=40, seconds=30)
    early = (
        await http.call("GET", "/v1/messages", key, params={"fire_before": soon.isoformat(), "limit": "200"})
    ).json
    assert {m["ref_id"] for m in early["messages"]} == {f"booking:{i:02}" for i in range(20, 25)}
    beyond_bigint = base64.urlsafe_b64encode(b"newest:99999999999999999999999:").decode().rstrip("=")
    for params, parameter in [
        ({"limit": "0"}, "limit"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"cursor": beyond_bigint}, "cursor"),  # forged: an id no message can have
        ({"order": "soonest", "status": "sent"}, "status"),
        ({"status": "nope"}, "status"),
        ({"fire_after": "yesterday"}, "fire_after"),
    ]:
        bad = problem(await http.call("GET", "/v1/messages", key, params=params), 400, "invalid-parameter")
        assert bad["errors"][0]["parameter"] == parameter


async def test_cancel_pause_resume_reschedule_and_requeue_by_id(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    made = (await http.call("POST", "/v1/messages", key, json={"ref_id": "r1", "fire_in": "1h"})).json
    path = f"/v1/messages/{made['id']}"
    assert (await http.call("POST", f"{path}/pause", key)).json["status"] == "paused"
    assert (await http.call("POST", f"{path}/resume", key)).json["status"] == "pending"
    later = (await db_now(db) + timedelta(hours=5)).replace(microsecond=0)
    moved = await http.call("PATCH", path, key, json={"fire_at": later.isoformat(), "payload": {"v": 2}})
    assert moved.status == 200 and datetime.fromisoformat(moved.json["fire_at"]) == later
    assert moved.json["payload"] == {"v": 2} and moved.json["last_event"] == "edited"
    assert (await http.call("DELETE", path, key)).json == {"cancelled": 1}
    assert (await http.call("DELETE", path, key)).json == {"cancelled": 0}  # idempotent
    assert (
        "only a paused or pending message"
        in problem(await http.call("POST", f"{path}/pause", key), 409, "not-live")["detail"]
    )
    problem(await http.call("POST", f"{path}/requeue", key), 409, "not-live")
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'dead' WHERE id = $1", made["id"])
    assert (await http.call("POST", f"{path}/requeue", key)).json["status"] == "pending"
    problem(await http.call("GET", "/v1/messages/999999", key), 404, "not-found")
    problem(await http.call("GET", "/v1/messages/abc", key), 404, "not-found")
    pattern = await http.call("POST", "/v1/messages/cancel", key, json={"ref_pattern": "r%"})
    assert pattern.json == {"cancelled": 1}


async def test_every_write_says_in_the_audit_trail_which_key_did_it(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """The role (actor) is the server's, the same for every key; events.on_behalf_of (migration
    0011) names the key: its prefix and name, with an Idempotency-Key or without."""
    other = await add_api_key(db, "acme", name="billing-service")
    made = (await http.call("POST", "/v1/messages", key, json={"ref_id": "r1", "fire_in": "1h"})).json
    path = f"/v1/messages/{made['id']}"
    paused = await http.call("POST", f"{path}/pause", other, headers={"Idempotency-Key": "pause-r1"})
    assert paused.status == 200
    assert (await http.call("POST", f"{path}/resume", key)).status == 200
    assert (await http.call("PATCH", path, other, json={"payload": {"v": 2}})).status == 200
    assert (await http.call("POST", "/v1/messages/batch", key,
                            json={"messages": [{"ref_id": "r2", "fire_in": "2h"}]})).status == 200
    assert (await http.call("DELETE", path, other)).json == {"cancelled": 1}
    assert (await http.call("GET", path, key)).status == 200  # a read writes no event

    events = await db.fetch(
        "SELECT ref_id, event, actor, on_behalf_of FROM reminderd.events ORDER BY id")
    booking, billing = f"{key[:15]} (booking-service)", f"{other[:15]} (billing-service)"
    assert [(e["ref_id"], e["event"], e["on_behalf_of"]) for e in events] == [
        ("r1", "created", booking), ("r1", "paused", billing), ("r1", "resumed", booking),
        ("r1", "edited", billing), ("r2", "created", booking), ("r1", "cancelled", billing),
    ]
    assert {e["actor"] for e in events} == {"reminderd_api_test"}
    # Outside a request (plain SQL, the CLI, the daemon) nobody is named.
    await db.execute("SELECT reminderd.cancel('acme', 'r2')")
    assert await db.fetchval(
        "SELECT on_behalf_of FROM reminderd.events WHERE ref_id = 'r2' ORDER BY id DESC LIMIT 1") is None


async def test_send_now_a_one_off_is_due_now_and_a_recurring_one_sends_an_extra_occurrence(
    http: ApiClient, key: str, db: asyncpg.Connection, receiver: Receiver, database_url: str
) -> None:
    one_off = (await http.call("POST", "/v1/messages", key, json={"ref_id": "o", "fire_in": "3h"})).json
    recurring = (await http.call("POST", "/v1/messages", key, json={"ref_id": "c", "cron": "0 9 1 1 *"})).json
    sent = (await http.call("POST", f"/v1/messages/{one_off['id']}/send-now", key)).json
    assert (sent["id"], sent["extra_occurrence"], sent["held"]) == (one_off["id"], False, None)
    extra = (await http.call("POST", f"/v1/messages/{recurring['id']}/send-now", key)).json
    assert extra["extra_occurrence"] is True and extra["id"] != recurring["id"] and extra["held"] is None
    again = (await http.call("POST", f"/v1/messages/{recurring['id']}/send-now", key)).json
    assert again["id"] == extra["id"]  # the waiting extra occurrence, not a second one
    worker = await drain(fast_settings(database_url), due_within_s=0)
    assert worker is not None
    ids = sorted(item.message["id"] for item in receiver.received)
    assert ids == sorted([one_off["id"], extra["id"]])
    assert len({item.webhook_id for item in receiver.received}) == 2
    schedule = (await http.call("GET", f"/v1/messages/{recurring['id']}", key)).json
    assert schedule["status"] == "pending" and schedule["runs"] == 0 and schedule["cron"] == "0 9 1 1 *"
    assert "sent_now" in [e["event"] for e in schedule["events"]]
    child = (await http.call("GET", f"/v1/messages/{extra['id']}", key)).json
    assert (child["status"], child["extra_of"], child["ref_id"]) == ("sent", recurring["id"], "c")


async def test_a_messages_history_and_the_stats_read_what_the_daemon_wrote(
    http: ApiClient, key: str, db: asyncpg.Connection, receiver: Receiver, database_url: str
) -> None:
    """An attempt's change (fired, dead_lettered) is on its deliveries row, not in events (migration
    0007): the message's history and the stats read both, as reminderd.trail does."""
    now = (await db_now(db)).isoformat()
    ok = (await http.call("POST", "/v1/messages", key, json={"ref_id": "ok", "fire_at": now})).json
    gone = (await http.call("POST", "/v1/messages", key, json={"ref_id": "gone", "fire_at": now})).json
    receiver.script["gone"] = [404]  # permanent (a 410 would disable the endpoint)
    await drain(fast_settings(database_url), due_within_s=0)
    delivered = (await http.call("GET", f"/v1/messages/{ok['id']}", key)).json
    assert [(e["event"], e["status"]) for e in delivered["events"]] == [
        ("created", "pending"), ("fired", "sent"),
    ]
    assert delivered["events"][1]["actor"] != "reminderd_api_test"  # the daemon's role
    assert [(d["attempt"], d["status_code"]) for d in delivered["deliveries"]] == [(1, 200)]
    dead = (await http.call("GET", f"/v1/messages/{gone['id']}", key)).json
    assert [e["event"] for e in dead["events"]] == ["created", "dead_lettered"]
    assert dead["events"][1]["reason"].startswith("permanent failure: HTTP 404")
    stats = (await http.call("GET", "/v1/stats", key)).json
    assert stats["last_24h"] == {"delivered": 1, "retried": 0, "dead": 1}


async def test_send_now_says_it_is_held_by_quiet_hours(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    now = await db_now(db)
    start, end = (now - timedelta(hours=1)).strftime("%H:%M"), (now + timedelta(hours=2)).strftime("%H:%M")
    patched = await http.call("PATCH", "/v1/tenant", key, json={"quiet_hours": f"{start}-{end}"})
    assert patched.json["quiet_hours"] == f"{start}-{end}"
    made = (
        await http.call(
            "POST", "/v1/messages", key, json={"ref_id": "promo", "fire_in": "5h", "category": "marketing"}
        )
    ).json
    sent = (await http.call("POST", f"/v1/messages/{made['id']}/send-now", key)).json
    assert sent["held"] is not None and "quiet hours" in sent["held"]["reason"]
    assert (
        near(
            datetime.fromisoformat(sent["held"]["until"]),
            now
            + timedelta(hours=2)
            - timedelta(minutes=now.minute, seconds=now.second, microseconds=now.microsecond),
        )
        or sent["held"]["until"]
    )


async def test_the_tenant_routes(http: ApiClient, key: str, db: asyncpg.Connection) -> None:
    tenant = (await http.call("GET", "/v1/tenant", key)).json
    assert tenant["id"] == "acme" and tenant["paused"] is False and tenant["api_rate_limit"] == 100
    assert "secret" not in json.dumps(tenant).replace("previous_secret_expires_at", "")
    changed = await http.call(
        "PATCH",
        "/v1/tenant",
        key,
        json={
            "calendar": "GB",
            "holiday_rule": "send",
            "quiet_exempt": ["transactional", "otp"],
            "callback_url": "https://acme.example/hooks",
        },
    )
    assert changed.status == 200, changed.body
    assert (changed.json["calendar"], changed.json["holiday_rule"]) == ("GB", "send")
    assert changed.json["quiet_exempt"] == ["transactional", "otp"]
    assert changed.json["callback_url"] == "https://acme.example/hooks"
    assert (await http.call("PATCH", "/v1/tenant", key, json={"calendar": None})).json["calendar"] is None
    problem(await http.call("PATCH", "/v1/tenant", key, json={"calendar": "Narnia"}), 422, "invalid-request")
    await http.call("POST", "/v1/messages", key, json={"ref_id": "r", "fire_in": "1h"})
    assert (await http.call("POST", "/v1/tenant/pause", key)).json == {"paused": True, "messages": 1}
    assert (await http.call("POST", "/v1/tenant/resume", key)).json == {"paused": False, "messages": 1}
    old = await db.fetchval("SELECT signing_secret FROM reminderd.tenants WHERE id = 'acme'")
    rotated = (await http.call("POST", "/v1/tenant/rotate-secret", key, json={"grace": "1h"})).json
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != old
    assert await db.fetchval("SELECT previous_signing_secret FROM reminderd.tenants") == old


async def test_the_rotation_says_until_when_the_old_secret_still_signs(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    rotated = (await http.call("POST", "/v1/tenant/rotate-secret", key, json={"grace": "1h"})).json
    stored = await db.fetchval("SELECT previous_secret_expires_at FROM reminderd.tenants WHERE id = 'acme'")
    assert rotated["previous_secret_valid_until"] is not None
    assert datetime.fromisoformat(rotated["previous_secret_valid_until"]) == stored
    assert near(stored, await db_now(db) + timedelta(hours=1))
    at_once = (await http.call("POST", "/v1/tenant/rotate-secret", key, json={"grace": "0"})).json
    assert at_once["previous_secret_valid_until"] is None


async def test_a_null_grace_is_refused_as_the_document_says_not_read_as_24_hours(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    old = await db.fetchval("SELECT signing_secret FROM reminderd.tenants WHERE id = 'acme'")
    refused = problem(await http.call("POST", "/v1/tenant/rotate-secret", key, json={"grace": None}),
                      422, "invalid-request")
    assert refused["errors"] == [{"pointer": "/grace", "detail": refused["detail"]}]
    assert refused["detail"].startswith("grace: null is not a duration")
    assert await db.fetchval("SELECT signing_secret FROM reminderd.tenants WHERE id = 'acme'") == old
    left_out = await http.call("POST", "/v1/tenant/rotate-secret", key, json={})
    assert left_out.status == 200, left_out.body
    until = datetime.fromisoformat(left_out.json["previous_secret_valid_until"])
    assert near(until, await db_now(db) + timedelta(hours=24))


async def test_preview_and_stats(http: ApiClient, key: str) -> None:
    preview = await http.call(
        "GET",
        "/v1/preview",
        key,
        params={
            "every": "weekdays at 9am",
            "timezone": "Europe/London",
            "calendar": "GB",
            "n": "3",
            "from": "2026-12-24T00:00:00Z",
        },
    )
    assert preview.status == 200, preview.body
    fires = preview.json["fires"]
    assert fires[0]["utc"] == "2026-12-24T09:00:00Z" and fires[1]["skipped"] is True  # Christmas Day
    bad = problem(await http.call("GET", "/v1/preview", key, params={"cron": "nope"}), 400, "invalid-parameter")
    assert bad["errors"][0]["parameter"] == "cron"
    await http.call("POST", "/v1/messages", key, json={"ref_id": "r", "fire_in": "30m"})
    stats = (await http.call("GET", "/v1/stats", key)).json
    assert stats["counts"]["pending"] == 1 and sum(h["messages"] for h in stats["upcoming_by_hour"]) == 1
    assert stats["last_24h"] == {"delivered": 0, "retried": 0, "dead": 0}


PREVIEW_DAILY = {"cron": "0 9 * * *", "timezone": "UTC"}


@pytest.mark.parametrize(
    ("params", "parameter", "said"),
    [
        ({"cron": "nope"}, "cron", "nope"),
        ({"timezone": "UTC"}, "cron", "exactly one of cron, every and rrule"),
        ({"cron": "0 9 * * *", "every": "daily at 9am"}, "every", "exactly one of"),
        ({**PREVIEW_DAILY, "timezone": "Mars/Base"}, "timezone", "Mars/Base"),
        ({**PREVIEW_DAILY, "calendar": "XX"}, "calendar", "XX"),
        ({**PREVIEW_DAILY, "quiet_hours": "22:00"}, "quiet_hours", "22:00"),
        ({**PREVIEW_DAILY, "from": "tomorrow"}, "from", "tomorrow"),
        ({**PREVIEW_DAILY, "n": "0"}, "n", "n must be"),
        ({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}, "rrule", "never fires"),
        # Past the year 9999: none of the fires fit (from is to blame), or only some (n is).
        ({**PREVIEW_DAILY, "from": "9999-12-31T23:00:00Z"}, "from", "the next 10 fires run past the year 9999"),
        ({**PREVIEW_DAILY, "from": "9999-12-29T00:00:00Z", "n": "5"}, "n",
         "the next 5 fires run past the year 9999: only 3"),
        # Before the year 1 on the zone's clock: from is to blame.
        ({"cron": "* * * * *", "timezone": "America/New_York", "from": "0001-01-01T00:30:00Z"}, "from",
         "before the year 1"),
    ],
    ids=["cron", "none", "two", "timezone", "calendar", "quiet", "from", "n", "never", "past-9999-from",
         "past-9999-n", "before-year-1"],
)
async def test_every_preview_error_names_its_parameter(
    http: ApiClient, key: str, params: dict[str, str], parameter: str, said: str
) -> None:
    bad = problem(await http.call("GET", "/v1/preview", key, params=params), 400, "invalid-parameter")
    assert [e["parameter"] for e in bad["errors"]] == [parameter], bad
    assert said in bad["detail"] and bad["errors"][0]["detail"] == bad["detail"]


async def test_probes_metrics_and_the_document_need_no_key(http: ApiClient, key: str) -> None:
    assert (await http.call("GET", "/healthz", None)).json == {"healthy": True}
    ready = await http.call("GET", "/readyz", None)
    assert ready.status == 200 and ready.json["ready"] is True
    await http.call("GET", "/v1/tenant", key)
    metrics = (await http.call("GET", "/metrics", None)).body.decode()
    assert 'reminderd_api_requests_total{method="GET",route="/v1/tenant",status="200"} 1.0' in metrics
    assert "reminderd_api_request_duration_seconds_bucket" in metrics
    document = (await http.call("GET", "/openapi.json", None)).json
    assert document["openapi"] == "3.1.0"
    problem(await http.call("GET", "/nowhere", None), 404, "not-found")
    problem(await http.call("PUT", "/v1/tenant", key), 405, "method-not-allowed")


async def test_an_unreachable_database_is_a_503_not_a_traceback(http: ApiClient, key: str) -> None:
    await http.api.store.close()
    answer = await http.call("GET", "/v1/tenant", key)
    document = problem(answer, 503, "unavailable") if answer.status == 503 else problem(answer, 500, "internal")
    assert "Traceback" not in json.dumps(document)
    await asyncio.sleep(0)  # let the closed pool settle before teardown closes it again


async def test_an_rrule_with_no_occurrence_left_is_refused_naming_the_rrule(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    """Its own UNTIL past, or a contact's message whose zone the database reads: 422 at /rrule in
    the API's words before the insert, nothing stored."""
    rule = "DTSTART:20200101T090000\nRRULE:FREQ=DAILY;UNTIL=20200201T000000Z"
    for body in ({"ref_id": "r1", "rrule": rule, "timezone": "Europe/Paris"},
                 {"ref_id": "r2", "rrule": rule, "contact_id": "c1"},
                 {"ref_id": "r3", "rrule": "DTSTART:20200101T090000\nRRULE:FREQ=DAILY;COUNT=3"}):
        document = problem(await http.call("POST", "/v1/messages", key, json=body), 422, "invalid-request")
        assert document["errors"][0]["pointer"] == "/rrule"
        assert document["detail"].startswith("rrule ends before it starts: its ")
        assert document["detail"].endswith(" already past; nothing would ever be sent")
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


async def test_an_explicit_etc_universal_with_a_contact_stays_the_messages_zone(
    http: ApiClient, key: str, db: asyncpg.Connection
) -> None:
    await db.execute("SELECT reminderd.upsert_contacts('acme', $1::jsonb)",
                     json.dumps([{"contact_id": "tok", "timezone": "Asia/Tokyo"}]))
    day = (await db_now(db)).date() + timedelta(days=10)
    body = {"ref_id": "u1", "local_time": f"{day.isoformat()}T09:00:00", "timezone": "Etc/Universal",
            "contact_id": "tok"}
    answer = await http.call("POST", "/v1/messages", key, json=body)
    assert answer.status == 201, answer.body
    row = await db.fetchrow("SELECT timezone, timezone_source, fire_at FROM reminderd.scheduled_messages")
    assert (row["timezone"], row["timezone_source"]) == ("UTC", "message")
    assert row["fire_at"] == datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
    assert datetime.fromisoformat(answer.json["fire_at"]) == row["fire_at"]
