"""reminderd.client without a server: its types against the OpenAPI document, what it sends, how it
reads answers, its retry policy, and that the API key shows nowhere."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import random
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from importlib.resources import files
from typing import Any, Literal

import aiohttp
import pytest
import yaml

from reminderd import client
from reminderd.client import (
    ApiError,
    BatchItemResult,
    Message,
    MessageDetail,
    Problem,
    ProblemField,
    ReminderdClient,
    RetryPolicy,
    RotatedSecret,
    Scheduled,
    ScheduleRequest,
    Status,
    SyncReminderdClient,
    from_wire,
)

DOCUMENT: dict[str, Any] = yaml.safe_load(files("reminderd").joinpath("openapi.yaml").read_text("utf-8"))
KEY = "rk_abcdefghijkm_" + "S" * 43
INVALID = "urn:reminderd:problem:invalid-request"


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = DOCUMENT["components"][kind][name]
    return node


def at(*path: str) -> dict[str, Any]:
    node: dict[str, Any] = DOCUMENT
    for step in path:
        node = resolve(node)[step]
    return resolve(node)


def merged(schema: dict[str, Any]) -> dict[str, Any]:
    """An allOf's parts as one object schema."""
    if "allOf" not in schema:
        return schema
    properties: dict[str, Any] = {}
    required: list[str] = []
    for part in map(merged, map(resolve, schema["allOf"])):
        properties.update(part.get("properties", {}))
        required += part.get("required", [])
    return {"type": "object", "properties": properties, "required": required}


def answer(path: str, method: str, status: str = "200") -> dict[str, Any]:
    return at("paths", path, method, "responses", status, "content", "application/json", "schema")


SCHEMAS = at("components", "schemas")
DETAIL = merged(SCHEMAS["MessageDetail"])
ANSWERS: dict[type, dict[str, Any]] = {
    client.Problem: SCHEMAS["Problem"],
    client.ProblemField: resolve(SCHEMAS["Problem"]["properties"]["errors"]["items"]),
    client.Scheduled: SCHEMAS["Scheduled"],
    client.BatchItemResult: SCHEMAS["BatchItemResult"],
    client.BatchResult: answer("/v1/messages/batch", "post"),
    client.Message: SCHEMAS["Message"],
    client.MessageDetail: DETAIL,
    client.Delivery: DETAIL["properties"]["deliveries"]["items"],
    client.Event: DETAIL["properties"]["events"]["items"],
    client.Page: answer("/v1/messages", "get"),
    client.SentNow: SCHEMAS["SentNow"],
    client.Held: SCHEMAS["SentNow"]["properties"]["held"],
    client.Tenant: SCHEMAS["Tenant"],
    client.TenantState: answer("/v1/tenant/pause", "post"),
    client.RotatedSecret: answer("/v1/tenant/rotate-secret", "post"),
    client.Preview: answer("/v1/preview", "get"),
    client.Fire: answer("/v1/preview", "get")["properties"]["fires"]["items"],
    client.Stats: SCHEMAS["Stats"],
    client.HourCount: SCHEMAS["Stats"]["properties"]["upcoming_by_hour"]["items"],
    client.Rates: SCHEMAS["Rates"],
    client.Lateness: SCHEMAS["Stats"]["properties"]["lateness_ms"],
    client.ContactsWritten: SCHEMAS["ContactsWritten"],
    client.ContactError: SCHEMAS["ContactsWritten"]["properties"]["errors"]["items"],
    client.Contact: SCHEMAS["Contact"],
    client.ContactMessage: SCHEMAS["ContactMessage"],
    client.ContactPicture: answer("/v1/contacts/{contact_id}/messages", "get"),
    client.AudienceSummary: answer("/v1/audiences", "get")["properties"]["audiences"]["items"],
    client.BroadcastCounts: SCHEMAS["Broadcast"]["properties"]["counts"],
    client.BroadcastWave: merged(SCHEMAS["BroadcastDetail"])["properties"]["waves"]["items"],
    client.BroadcastPreview: SCHEMAS["BroadcastPreview"],
    client.ZoneSend: SCHEMAS["BroadcastPreview"]["properties"]["zones"]["items"],
    client.ZoneSources: SCHEMAS["BroadcastPreview"]["properties"]["zones"]["items"]["properties"]["sources"],
    client.Cadence: answer("/v1/cadences", "post", "201"),
    client.CadenceStep: answer("/v1/cadences", "post", "201")["properties"]["steps"]["items"],
}

# Each operation of the document (but the operator's probes) and the client method that calls it.
METHODS = {
    "scheduleMessage": "schedule", "scheduleBatch": "schedule_many", "getMessage": "get",
    "listMessages": "list", "cancelMessage": "cancel", "cancelByRef": "cancel_ref",
    "cancelMatching": "cancel_matching", "updateMessage": "update", "pauseMessage": "pause",
    "resumeMessage": "resume", "requeueMessage": "requeue", "sendNow": "send_now", "getTenant": "tenant",
    "updateTenant": "update_tenant", "pauseTenant": "pause_tenant", "resumeTenant": "resume_tenant",
    "rotateSecret": "rotate_secret", "preview": "preview", "stats": "stats",
    "upsertContacts": "upsert_contacts", "getContact": "contact", "deleteContact": "delete_contact",
    "contactMessages": "contact_messages", "listAudiences": "audiences", "dropAudience": "drop_audience",
    "addToAudience": "add_to_audience", "removeFromAudience": "remove_from_audience",
    "createBroadcast": "broadcast", "listBroadcasts": "broadcasts", "getBroadcast": "get_broadcast",
    "approveBroadcast": "approve_broadcast", "rejectBroadcast": "reject_broadcast",
    "cancelBroadcast": "cancel_broadcast", "scheduleCadence": "schedule_cadence",
}
PROBES = {"healthz", "readyz", "metrics", "openapi"}


def operation_ids() -> set[str]:
    return {operation["operationId"] for item in DOCUMENT["paths"].values()
            for method, operation in item.items() if method != "parameters"}


def nullable(schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    return schema.get("type") == "null" or (isinstance(kinds, list) and "null" in kinds)


def without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007  # a runtime union
    return hint


def allows_none(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def fits(hint: Any, schema: dict[str, Any]) -> str | None:
    """Why `hint` cannot hold what `schema` describes, or None when it can."""
    ref = schema.get("$ref", "")
    schema = resolve(schema)
    hint = without_none(hint)
    declared = schema.get("type", [])
    kinds = [kind for kind in ([declared] if isinstance(declared, str) else declared) if kind != "null"]
    if hint is Any:
        return None if not kinds else f"Any for a {kinds}"
    if ref.endswith("/Status"):
        return None if hint is Status else f"{hint} for a Status"
    if "enum" in schema:
        values = set(schema["enum"])
        if typing.get_origin(hint) is Literal:
            return None if set(typing.get_args(hint)) == values else f"{hint} for enum {values}"
        if isinstance(hint, type) and issubclass(hint, Enum):
            return None if {item.value for item in hint} == values else f"{hint} for enum {values}"
        return f"{hint} for enum {values}"
    (kind,) = kinds
    if kind == "string":
        expected: Any = datetime if schema.get("format") == "date-time" else str
        return None if hint is expected else f"{hint} for a string ({schema.get('format', 'plain')})"
    if kind in ("integer", "number", "boolean"):
        expected = {"integer": int, "number": float, "boolean": bool}[kind]
        return None if hint is expected else f"{hint} for a {kind}"
    if kind == "array":
        if typing.get_origin(hint) is not tuple:
            return f"{hint} for an array"
        return fits(typing.get_args(hint)[0], schema["items"])
    if kind == "object":
        if "properties" in schema and not isinstance(schema.get("additionalProperties"), dict):
            return None if dataclasses.is_dataclass(hint) else f"{hint} for an object"
        # A map that names the keys it always has (Stats.counts: every status) is still a map.
        if typing.get_origin(hint) is not dict:
            return f"{hint} for a map"
        return fits(typing.get_args(hint)[1], schema["additionalProperties"])
    return f"no rule for {schema}"


@pytest.mark.parametrize("cls", ANSWERS, ids=lambda cls: cls.__name__)
def test_each_answer_class_has_exactly_its_schemas_fields_with_fitting_types(cls: type) -> None:
    schema = ANSWERS[cls]
    properties: dict[str, Any] = schema["properties"]
    required = set(schema.get("required", []))
    fields = {item.name: item for item in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    assert set(fields) == set(properties)
    for name, item in fields.items():
        has_default = item.default is not dataclasses.MISSING or item.default_factory is not dataclasses.MISSING
        assert has_default == (name not in required), name
        if nullable(resolve(properties[name])) or name not in required:
            assert allows_none(hints[name]) or has_default, f"{name} may be null or absent"
        why = fits(hints[name], properties[name])
        assert why is None, f"{cls.__name__}.{name}: {why}"


def test_the_schedule_request_has_the_schemas_fields_and_schedule_takes_each_as_a_keyword() -> None:
    schema = SCHEMAS["ScheduleRequest"]
    fields = {item.name: item for item in dataclasses.fields(ScheduleRequest)}
    assert set(fields) == set(schema["properties"])
    assert [name for name, item in fields.items() if item.default is dataclasses.MISSING] == schema["required"]
    parameters = inspect.signature(ReminderdClient.schedule).parameters
    assert list(parameters) == ["self", *fields, "idempotency_key"]


def test_every_operation_of_the_document_has_a_method_on_both_clients() -> None:
    assert set(METHODS) | PROBES == operation_ids()
    for name in METHODS.values():
        assert callable(getattr(ReminderdClient, name)), name
        assert callable(getattr(SyncReminderdClient, name)), name
        if name != "list":  # the sync list is a generator over the same filters
            assert inspect.signature(getattr(SyncReminderdClient, name)).parameters.keys() == \
                inspect.signature(getattr(ReminderdClient, name)).parameters.keys(), name
    assert inspect.signature(SyncReminderdClient.list).parameters.keys() == \
        inspect.signature(ReminderdClient.list).parameters.keys()


# What is sent


def test_instants_are_sent_in_rfc_3339_with_their_offset_and_durations_in_seconds() -> None:
    kolkata = timezone(timedelta(hours=5, minutes=30))
    body = ScheduleRequest("r", fire_at=datetime(2026, 12, 24, 9, 0, tzinfo=kolkata), payload={"to": "+1"},
                           max_lateness=timedelta(minutes=90), until=datetime(2027, 1, 1, 8, 0)).to_wire()
    assert body == {"ref_id": "r", "fire_at": "2026-12-24T09:00:00+05:30", "payload": {"to": "+1"},
                    "max_lateness": 5400.0, "until": "2027-01-01T08:00:00"}
    assert ScheduleRequest("r", fire_in="1h30m").to_wire() == {"ref_id": "r", "fire_in": "1h30m"}
    assert ScheduleRequest("r", fire_in=90).to_wire() == {"ref_id": "r", "fire_in": 90}


def test_a_null_payload_is_sent_and_an_absent_one_is_not() -> None:
    sent = ScheduleRequest("r", fire_in=1, payload=None).to_wire()
    assert sent == {"ref_id": "r", "fire_in": 1, "payload": None}
    assert "payload" not in ScheduleRequest("r", fire_in=1).to_wire()


def test_a_naive_instant_and_an_aware_wall_time_are_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="fire_at: 2026-12-24T09:00:00 has no timezone"):
        ScheduleRequest("r", fire_at=datetime(2026, 12, 24, 9)).to_wire()
    with pytest.raises(ValueError, match=r"local_time: .* has a UTC offset"):
        ScheduleRequest("r", local_time=datetime(2026, 12, 24, 9, tzinfo=UTC)).to_wire()
    assert ScheduleRequest("r", local_time=datetime(2026, 12, 24, 9), timezone="Asia/Kolkata").to_wire() == \
        {"ref_id": "r", "local_time": "2026-12-24T09:00:00", "timezone": "Asia/Kolkata"}
    with pytest.raises(TypeError, match="fire_in: a timedelta"):
        ScheduleRequest("r", fire_in=True).to_wire()


def test_a_body_that_is_not_json_is_refused_before_sending() -> None:
    with pytest.raises(ValueError, match=r"^/amount: nan is not a number JSON can carry"):
        client._json_body({"amount": float("nan")})


@pytest.mark.parametrize(("call", "where"), [
    (lambda rd: rd.schedule("r", fire_in=float("nan")), r"^/fire_in: nan is not a number JSON can carry"),
    (lambda rd: rd.schedule("r", fire_in=60, max_attempts=float("inf")), r"^/max_attempts: inf"),
    (lambda rd: rd.schedule("r", fire_in=60, payload={"amount": Decimal("-Infinity")}),
     r"^/payload/amount: -Inf"),
    (lambda rd: rd.schedule_many([ScheduleRequest("a", fire_in=60),
                                  ScheduleRequest("b", fire_in=float("nan"))]), r"^/messages/1/fire_in: nan"),
    (lambda rd: rd.preview(cron="0 9 * * *", n=float("nan")), r"^n: nan"),
    (lambda rd: rd.contact_messages("c1", limit=float("inf")), r"^limit: inf"),
])
async def test_nan_and_infinity_are_refused_by_name_before_sending(call: Any, where: str) -> None:
    sent: list[str] = []

    async def exchange(method: str, url: Any, headers: Mapping[str, str], data: bytes | None,
                       ) -> tuple[int, str, bytes, str | None]:
        sent.append(method)
        return 500, "", b"", None

    async with ReminderdClient("http://127.0.0.1:8080", KEY, retry=client.NO_RETRIES) as rd:
        rd._exchange = exchange  # type: ignore[method-assign]  # the network, scripted
        with pytest.raises(ValueError, match=where):
            await call(rd)
    assert sent == []


@pytest.mark.parametrize("timeout_s", [float("nan"), 0, -1, float("inf")])
def test_a_timeout_that_never_ends_or_never_starts_is_refused(timeout_s: float) -> None:
    with pytest.raises(ValueError, match=r"^timeout_s: a finite number of seconds above 0"):
        ReminderdClient("http://127.0.0.1:8080", KEY, timeout_s=timeout_s)


async def test_the_timeout_holds_with_an_exchange_that_never_answers() -> None:
    calls = 0

    async def deaf(method: str, url: Any, headers: Mapping[str, str], data: bytes | None,
                   ) -> tuple[int, str, bytes, str | None]:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()  # never set: no answer, ever
        raise AssertionError("unreachable")

    async with ReminderdClient("http://127.0.0.1:8080", KEY, timeout_s=0.05,
                               retry=RetryPolicy(attempts=2, base_s=0.001, cap_s=0.001)) as rd:
        rd._exchange = deaf  # type: ignore[method-assign]  # the network, scripted
        with pytest.raises(ApiError, match="no answer in time") as raised:
            await asyncio.wait_for(rd.tenant(), 5)
    assert (raised.value.type, raised.value.attempts, calls) == (client.UNREACHABLE, 2, 2)


# What is read


MESSAGE = {
    "id": 7, "ref_id": "booking:1", "status": "pending", "fire_at": "2026-12-24T03:30:00Z",
    "scheduled_for": None, "timezone": "Asia/Kolkata", "cron": None, "rrule": None, "until": None,
    "max_runs": None, "runs": 0, "category": "transactional", "callback_url": None, "max_attempts": None,
    "attempts": 0, "calendar": None, "holiday_rule": None, "backfill": None, "max_lateness_s": 3600,
    "last_error": None, "last_event": "created", "created_at": "2026-12-01T10:00:00.123456+00:00",
    "updated_at": "2026-12-01T10:00:00+00:00", "sent_at": None, "extra_of": None, "contact_id": None,
    "timezone_source": "message",
    "payload": {"to": "+1", "ref_id": "kept as written"},
}


def test_an_answer_is_read_into_its_dataclass_with_aware_instants_and_statuses() -> None:
    message = from_wire(Message, {**MESSAGE, "a_field_added_later": 1})
    assert message.status is Status.PENDING
    assert message.fire_at == datetime(2026, 12, 24, 3, 30, tzinfo=UTC)
    assert message.max_lateness_s == 3600.0 and isinstance(message.max_lateness_s, float)
    assert message.payload == {"to": "+1", "ref_id": "kept as written"}
    detail = from_wire(MessageDetail, {**MESSAGE, "deliveries": [], "events": [
        {"created_at": "2026-12-01T10:00:00Z", "event": "created", "status": "pending",
         "fire_at": None, "reason": None, "actor": "api"}]})
    assert detail.events[0].status is Status.PENDING and detail.deliveries == ()


@pytest.mark.parametrize(("change", "why"), [
    ({"status": "lost"}, "/status: 'lost' is not a known Status"),
    ({"id": "7"}, "/id: int expected, got str"),
    ({"id": True}, "/id: int expected, got bool"),
    ({"fire_at": "2026-12-24T03:30:00"}, "/fire_at: '2026-12-24T03:30:00' has no UTC offset"),
    ({"created_at": None}, "/created_at: null where a value was expected"),
])
def test_an_answer_that_does_not_fit_its_schema_is_named(change: dict[str, Any], why: str) -> None:
    with pytest.raises(client._InvalidResponse, match=f"^{why}$"):
        from_wire(Message, {**MESSAGE, **change})
    missing = dict(MESSAGE)
    del missing["runs"]
    with pytest.raises(client._InvalidResponse, match=r"^/runs: missing$"):
        from_wire(Message, missing)


def test_a_batch_items_error_is_a_problem() -> None:
    item = from_wire(BatchItemResult, {"index": 3, "result": "error", "ref_id": "r", "error": {
        "type": "urn:reminderd:problem:invalid-request", "title": "Invalid request", "status": 422,
        "detail": "fire_at: not RFC 3339",
        "errors": [{"pointer": "/messages/3/fire_at", "detail": "not RFC 3339"}]}})
    assert item.error is not None
    assert item.error.errors == (ProblemField("not RFC 3339", "/messages/3/fire_at"),)


def test_a_problem_answer_and_a_proxys_error_page_are_both_problems() -> None:
    body = b'{"type":"urn:reminderd:problem:not-found","title":"Not found","status":404,' \
        b'"detail":"no message 9"}'
    assert client._problem_of(404, "Not Found", body) == \
        Problem("urn:reminderd:problem:not-found", "Not found", 404, "no message 9")
    page = client._problem_of(502, "Bad Gateway", b"<html>upstream down</html>")
    assert (page.type, page.title, page.status, page.detail) == \
        ("about:blank", "Bad Gateway", 502, "<html>upstream down</html>")


def _extension_members_sent() -> dict[str, str]:
    """Each member a handler adds to a problem (Problem(..., extra={...}), or extra["x"] = ...), by name,
    with the module that adds it: read from the server's source, so a new member cannot be missed."""
    import ast
    from pathlib import Path

    found: dict[str, str] = {}
    for module in sorted(Path(client.__file__).parent.glob("*.py")):
        if module.name == "client.py":
            continue
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            dicts: list[ast.expr] = []
            if isinstance(node, ast.keyword) and node.arg == "extra":
                dicts.append(node.value)
            if isinstance(node, ast.AnnAssign | ast.Assign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id == "extra" and node.value is not None:
                        dicts.append(node.value)
                    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) \
                            and target.value.id == "extra" and isinstance(target.slice, ast.Constant):
                        found[str(target.slice.value)] = module.name
            for value in dicts:
                for inner in ast.walk(value):
                    if isinstance(inner, ast.Dict):
                        for key in inner.keys:
                            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                                found[key.value] = module.name
    return found


def test_every_extension_member_the_server_sends_is_in_the_problem_schema_and_the_problem() -> None:
    sent = _extension_members_sent()
    assert {"sqlstate", "hint", "item", "message_status", "written_through_line"} <= set(sent)
    documented = set(SCHEMAS["Problem"]["properties"])
    assert {name: where for name, where in sent.items() if name not in documented} == {}
    fields = {item.name for item in dataclasses.fields(Problem)}
    assert set(sent) <= fields


def test_an_api_error_says_what_is_wrong_field_by_field() -> None:
    error = ApiError(Problem(INVALID, "Invalid request", 422, "2 fields are invalid",
                             errors=(ProblemField("not RFC 3339", pointer="/fire_at"),
                                     ProblemField("unknown", parameter="order"))))
    assert str(error) == \
        "Invalid request (422): 2 fields are invalid [/fire_at: not RFC 3339; order: unknown]"
    assert (error.status, error.type, error.errors[0].pointer) == (422, INVALID, "/fire_at")


# Retries


def test_the_backoff_is_full_jitter_under_a_doubling_ceiling_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base_s=1, cap_s=8)
    for retry, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (9, 8)]:
        drawn = [policy.delay_s(retry, rng=random.Random(seed)) or 0.0 for seed in range(200)]
        assert all(0 <= delay <= ceiling for delay in drawn)
        assert max(drawn) > 0.9 * ceiling and min(drawn) < 0.1 * ceiling


def test_retry_after_is_waited_for_unless_too_long_and_attempts_run_out() -> None:
    policy = RetryPolicy(attempts=3, max_retry_after_s=30)
    assert policy.delay_s(1, retry_after_s=7) == 7
    assert policy.delay_s(1, retry_after_s=31) is None
    assert policy.delay_s(2) is not None
    assert policy.delay_s(3) is None  # the third try was the last
    assert client.NO_RETRIES.delay_s(1) is None
    assert client._retry_after_s("12") == 12


def test_retry_after_is_read_as_delta_seconds_or_an_http_date_and_an_endless_one_is_too_long() -> None:
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert client._retry_after_s("3", now) == 3
    assert client._retry_after_s("Wed, 02 Dec 2026 10:00:07 GMT", now) == 7
    assert client._retry_after_s("Wed, 02 Dec 2026 09:59:00 GMT", now) == 0
    assert client._retry_after_s("inf", now) == float("inf")
    assert RetryPolicy().delay_s(1, client._retry_after_s("1e400", now)) is None
    for unreadable in ("soon", "-5", "nan", "", None):
        assert client._retry_after_s(unreadable, now) is None, unreadable


@pytest.mark.parametrize(("options", "why"), [
    ({"attempts": 0}, r"RetryPolicy.attempts: a whole number of tries from 1"),
    ({"attempts": -1}, r"RetryPolicy.attempts"),
    ({"attempts": float("nan")}, r"RetryPolicy.attempts"),
    ({"attempts": float("inf")}, r"RetryPolicy.attempts"),
    ({"attempts": 2.5}, r"RetryPolicy.attempts"),
    ({"attempts": True}, r"RetryPolicy.attempts"),
    ({"base_s": float("nan")}, r"RetryPolicy.base_s: a finite number of seconds"),
    ({"cap_s": -1}, r"RetryPolicy.cap_s"),
    ({"max_retry_after_s": float("inf")}, r"RetryPolicy.max_retry_after_s"),
])
def test_a_retry_policy_that_would_retry_forever_or_never_wait_is_refused(
        options: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        RetryPolicy(**options)


@pytest.mark.parametrize(("status", "problem_type", "retried"), [
    (429, "urn:reminderd:problem:rate-limited", True),
    (500, "urn:reminderd:problem:internal", True),
    (502, "about:blank", True),
    (503, "urn:reminderd:problem:unavailable", True),
    (409, "urn:reminderd:problem:idempotency-in-flight", True),
    (409, "urn:reminderd:problem:not-live", False),
    (422, "urn:reminderd:problem:idempotency-mismatch", False),
    (400, "urn:reminderd:problem:invalid-json", False),
    (401, "urn:reminderd:problem:unauthorized", False),
    (404, "urn:reminderd:problem:not-found", False),
])
def test_what_is_retried(status: int, problem_type: str, retried: bool) -> None:
    assert client._retryable(status, problem_type) is retried


def test_idempotency_keys_are_unique_printable_and_within_the_apis_limit() -> None:
    keys = {client.new_idempotency_key() for _ in range(1000)}
    assert len(keys) == 1000
    assert all(key.isascii() and key.isprintable() and " " not in key and len(key) <= 255 for key in keys)


# The key


def test_the_api_key_is_in_no_repr_only_its_visible_prefix() -> None:
    rd = ReminderdClient("http://127.0.0.1:8080", KEY)
    assert repr(rd) == "ReminderdClient('http://127.0.0.1:8080', api_key='rk_abcdefghijkm')"
    assert KEY not in repr(vars(rd)) and "<hidden>" in repr(vars(rd))
    assert "S" * 20 not in repr(ReminderdClient("http://127.0.0.1:8080", "S" * 40))
    with SyncReminderdClient("http://127.0.0.1:8080", KEY) as sync:
        assert "S" * 20 not in repr(sync) and "rk_abcdefghijkm" in repr(sync)
    assert "whsec_secret" not in repr(RotatedSecret("whsec_secret", None))


@pytest.mark.parametrize(("base_url", "key", "why"), [
    ("127.0.0.1:8080", KEY, "base_url: an http:// or https:// URL"),
    ("ftp://127.0.0.1", KEY, "base_url: an http:// or https:// URL"),
    ("http://127.0.0.1:8080", "", "api_key: empty or not printable"),
    ("http://127.0.0.1:8080", "rk_a\nb", "api_key: empty or not printable"),
])
def test_a_bad_base_url_or_key_is_refused_at_once(base_url: str, key: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as raised:
        ReminderdClient(base_url, key)
    assert key == "" or key not in str(raised.value)


@pytest.mark.parametrize("base_url", [
    "http://admin:hunter2@127.0.0.1:8080", "https://rk_abcdefghijkm_hunter2@api.example.com",
    "ftp://u:hunter2@127.0.0.1", "http://u:p/hunter2@127.0.0.1",
])
def test_a_base_url_with_credentials_is_refused_without_echoing_them(base_url: str) -> None:
    with pytest.raises(ValueError, match=r"^base_url: ") as raised:
        ReminderdClient(base_url, KEY)
    assert "hunter2" not in str(raised.value) and "hunter2" not in repr(raised.value)
    if base_url.startswith("http") and "/hunter2" not in base_url:
        assert "credentials go in api_key" in str(raised.value)


def test_scheduled_is_frozen() -> None:
    scheduled = Scheduled(1, "r", Status.PENDING, None, "once", "created")
    with pytest.raises(dataclasses.FrozenInstanceError):
        scheduled.id = 2  # type: ignore[misc]  # the point: it is frozen


def test_the_client_imports_nothing_of_the_server() -> None:
    """An app that only schedules over HTTP loads aiohttp and four small modules, no database driver."""
    import subprocess
    import sys

    script = ("import sys, reminderd.client; print(sorted(m for m in sys.modules if m.startswith('reminderd') "
              "or m.split('.')[0] in ('asyncpg', 'structlog', 'sqlalchemy', 'alembic', 'croniter', 'yaml')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(["reminderd", "reminderd.client", "reminderd.exceptions",
                                       "reminderd.lifecycle", "reminderd.retry"])


# Pages


def _going_round(rd: ReminderdClient) -> list[str | None]:
    """Make `rd` answer GET /v1/messages with one message a page, its next cursor c1, c2, c1, c2, …;
    the cursors asked for."""
    asked: list[str | None] = []
    message = dict(MESSAGE)

    async def call(method: str, path: str, **options: Any) -> tuple[int, Any]:
        asked.append(options["query"]["cursor"])
        if len(asked) > 20:
            raise AssertionError("the walk went on")
        return 200, {"messages": [{**message, "id": len(asked)}], "next_cursor": f"c{2 - len(asked) % 2}"}

    rd._call = call  # type: ignore[method-assign]  # the network, scripted
    return asked


async def test_a_server_answering_a_cursor_already_followed_ends_the_walk_with_an_error() -> None:
    async with ReminderdClient("http://127.0.0.1:8080", KEY) as rd:
        asked = _going_round(rd)
        ids = []
        with pytest.raises(ApiError, match="the server answered cursor c1 again") as raised:
            async for message in rd.list().messages():
                ids.append(message.id)
    assert raised.value.type == client.INVALID_RESPONSE
    assert (ids, asked) == ([1, 2, 3], [None, "c1", "c2"])


def test_the_blocking_walk_ends_on_a_cursor_already_followed_too() -> None:
    with SyncReminderdClient("http://127.0.0.1:8080", KEY) as rd:
        asked = _going_round(rd._client)
        with pytest.raises(ApiError, match="the server answered cursor c1 again"):
            for _ in rd.messages():
                pass
    assert asked == [None, "c1", "c2"]


# Secrets in errors

SIGNING_SECRET = "whsec_" + "c2VjcmV0" * 5 + "="


@pytest.mark.parametrize("api_key", [KEY, "S" * 40])  # the rk_ shape, and a key hidden as itself
@pytest.mark.parametrize("answer", ["echoing", "proxy page", "cut answer"])
async def test_an_error_quoting_a_request_a_url_or_an_answer_shows_no_api_key_or_signing_secret(
        api_key: str, answer: str) -> None:
    hidden = "S" * 40 if api_key != KEY else "S" * 20

    async def exchange(method: str, url: Any, headers: Mapping[str, str], data: bytes | None,
                       ) -> tuple[int, str, bytes, str | None]:
        authorization = headers["Authorization"]
        if answer == "echoing":
            raise aiohttp.ClientError(f"failed: {url}?token={api_key} Authorization: {authorization}")
        if answer == "proxy page":
            return 502, "Bad Gateway", f"bad gateway for Authorization: {authorization}".encode(), None
        return 200, "OK", f'{{"secret":"{SIGNING_SECRET}","previous_secret_valid_until'.encode(), None

    async with ReminderdClient("http://127.0.0.1:8080", api_key, retry=client.NO_RETRIES) as rd:
        rd._exchange = exchange  # type: ignore[method-assign]  # the network, scripted
        with pytest.raises(ApiError) as raised:
            await rd.rotate_secret()
    shown = f"{raised.value} {raised.value!r} {raised.value.problem!r}"
    assert hidden not in shown and "c2VjcmV0" not in shown, shown
