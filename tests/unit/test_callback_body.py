"""Unit tests for what a callback carries: its JSON body, webhook-id, timestamps and Retry-After."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from support import make_job

from reminderd.callback import callback_body, parse_retry_after
from reminderd.jobs import Job, make_webhook_id
from reminderd.schedule import Timing, iso_utc
from reminderd.signing import generate_secret, sign

OCCURRENCE = datetime(2026, 12, 24, 9, 0, tzinfo=timezone(timedelta(hours=5, minutes=30)))  # 03:30Z
NOW_S = datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp()


def job(**changes: Any) -> Job:
    return make_job(**{"scheduled_for": OCCURRENCE, "attempt": 3, **changes})


def decoded(body: bytes) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(body)
    return message


# The body


def test_body_is_json_with_exactly_the_documented_keys() -> None:
    message = decoded(callback_body(job()))
    assert message == {
        "id": 42,
        "tenant_id": "acme",
        "ref_id": "invoice-7",
        "scheduled_for": "2026-12-24T03:30:00.000Z",
        "attempt": 3,
        "payload": {"amount": 12.5, "currency": "EUR"},
    }


def test_scheduled_for_is_iso_8601_utc_ending_in_z() -> None:
    scheduled_for = decoded(callback_body(job()))["scheduled_for"]
    assert scheduled_for.endswith("Z")
    assert datetime.fromisoformat(scheduled_for) == OCCURRENCE


@pytest.mark.parametrize(
    "payload_json",
    [
        '{"b": 1, "a": {"nested": [1, 2, {"deep": true}]}}',
        '{"text": "héllo ✓ 日本 🎉", "escaped": "\\u00e9\\n\\"q\\""}',
        '{ "spaced" :  [ 1 ,2 ] }',
        "null",
        '[1, "two", 3.0]',
        '"just a string"',
        "12345678901234567890",
        "{}",
    ],
    ids=["nested-order", "unicode", "whitespace", "null", "array", "string", "big-int", "empty"],
)
def test_payload_is_embedded_verbatim(payload_json: str) -> None:
    body = callback_body(job(payload_json=payload_json))
    assert body.endswith(b',"payload":' + payload_json.encode() + b"}")
    assert decoded(body)["payload"] == json.loads(payload_json)


def test_body_is_utf8() -> None:
    body = callback_body(job(payload_json='{"name": "Zoë"}'))
    assert "Zoë".encode() in body
    assert decoded(body)["payload"]["name"] == "Zoë"


@pytest.mark.parametrize(
    ("tenant_id", "ref_id"),
    [
        ('ac"me', 'ref "quoted"'),
        ("back\\slash", "new\nline\ttab"),
        ('","payload":{"evil":1},"x":"', "é✓"),
        ("%d %s", "%%"),
    ],
    ids=["quotes", "control-chars", "injection", "percent"],
)
def test_tenant_and_ref_are_escaped(tenant_id: str, ref_id: str) -> None:
    message = decoded(callback_body(job(tenant_id=tenant_id, ref_id=ref_id)))
    assert (message["tenant_id"], message["ref_id"]) == (tenant_id, ref_id)
    assert set(message) == {"id", "tenant_id", "ref_id", "scheduled_for", "attempt", "payload"}
    assert message["payload"] == {"amount": 12.5, "currency": "EUR"}


def test_attempt_in_body_follows_the_job() -> None:
    assert decoded(callback_body(job(attempt=1)))["attempt"] == 1
    assert decoded(callback_body(job(attempt=8)))["attempt"] == 8


# iso_utc


@pytest.mark.parametrize(
    ("instant", "text"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00.000Z"),
        (datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC), "2026-01-01T00:00:00.123Z"),
        (datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=-7))), "2026-06-01T19:00:00.000Z"),
    ],
)
def test_iso_utc(instant: datetime, text: str) -> None:
    assert iso_utc(instant) == text


# webhook-id


def test_webhook_id_has_no_dot_and_is_signable() -> None:
    webhook_id = job(scheduled_for=datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)).webhook_id
    assert "." not in webhook_id
    assert sign(generate_secret(), webhook_id, 1, b"{}").startswith("v1,")


def test_webhook_id_is_stable_for_one_occurrence() -> None:
    same_instant_in_utc = OCCURRENCE.astimezone(UTC)
    assert make_webhook_id(42, OCCURRENCE) == make_webhook_id(42, OCCURRENCE)
    assert make_webhook_id(42, OCCURRENCE) == make_webhook_id(42, same_instant_in_utc)
    # Retries of the occurrence (attempt changes) keep the id, so receivers can deduplicate.
    assert job(attempt=1).webhook_id == job(attempt=5).webhook_id == make_webhook_id(42, OCCURRENCE)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((42, OCCURRENCE), (42, OCCURRENCE + timedelta(days=1))),
        ((42, OCCURRENCE), (42, OCCURRENCE + timedelta(minutes=1))),
        ((42, OCCURRENCE), (43, OCCURRENCE)),
        ((1, datetime.fromtimestamp(11.234, UTC)), (11, datetime.fromtimestamp(1.234, UTC))),
    ],
    ids=["next-day", "next-minute", "other-message", "no-digit-ambiguity"],
)
def test_webhook_id_differs_between_occurrences(
    first: tuple[int, datetime], second: tuple[int, datetime]
) -> None:
    assert make_webhook_id(*first) != make_webhook_id(*second)


def test_repr_of_a_job_hides_the_signing_secret() -> None:
    secret = generate_secret()
    shown = job(signing_secret=secret)
    assert secret not in repr(shown)
    assert secret.removeprefix("whsec_") not in str(shown)
    assert "invoice-7" in repr(shown)  # the rest is still there for debugging


# Retry-After


@pytest.mark.parametrize(("value", "seconds"), [("120", 120.0), (" 120 ", 120.0), ("0", 0.0)])
def test_retry_after_delta_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW_S) == seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("Thu, 01 Jan 2026 12:02:00 GMT", 120.0),
        ("Thu, 01 Jan 2026 13:00:00 GMT", 3600.0),
        ("Thu, 01 Jan 2026 14:00:00 +0100", 3600.0),
        ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),  # already past: retry now, never a negative delay
    ],
)
def test_retry_after_http_date_is_relative_to_now(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW_S) == seconds


@pytest.mark.parametrize("value", [None, "", "soon", "1.5", "-5", "120s", "Thu, 99 Foo 2026"])
def test_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW_S) is None


def test_retry_after_superscript_digit_is_garbage_not_a_crash() -> None:
    # str.isdigit() is true for "²" but float() rejects it; a receiver's header must not be able to
    # turn a plain 503 into an "internal error" attempt.
    try:
        parsed = parse_retry_after("²", NOW_S)
    except ValueError as exc:
        raise AssertionError(f"BUG: parse_retry_after('²') raised {exc!r} instead of returning None") from None
    assert parsed is None


# A contact's message, and a broadcast's completion (issue 14): more keys, same signing rules


def test_a_contacts_message_says_the_contact_its_zone_and_why() -> None:
    contact_job = job(contact_id="cust_8f", timezone_source="phone", timing=Timing(timezone="America/Chicago"))
    message = decoded(callback_body(contact_job))
    assert message == {
        "id": 42, "tenant_id": "acme", "ref_id": "invoice-7", "scheduled_for": "2026-12-24T03:30:00.000Z",
        "attempt": 3, "contact_id": "cust_8f", "timezone": "America/Chicago", "timezone_source": "phone",
        "payload": {"amount": 12.5, "currency": "EUR"},
    }


def test_a_broadcast_row_names_its_broadcast_too() -> None:
    message = decoded(callback_body(job(contact_id="c1", timezone_source="tenant", broadcast_id=7)))
    assert (message["broadcast_id"], message["contact_id"], message["timezone_source"]) == (7, "c1", "tenant")
    assert message["timezone"] == "UTC"


def test_a_broadcasts_completion_says_its_event() -> None:
    payload = '{"event": "broadcast.completed", "counts": {"sent": 3}}'
    message = decoded(callback_body(job(broadcast_id=7, payload_json=payload)))
    assert message["event"] == "broadcast.completed"
    assert message["broadcast_id"] == 7
    assert "contact_id" not in message
    assert message["payload"] == json.loads(payload)


@pytest.mark.parametrize("contact_id", ['a"b', "x\\y", "é@example.com"])
def test_the_added_keys_are_escaped_and_the_payload_stays_verbatim_and_last(contact_id: str) -> None:
    body = callback_body(job(contact_id=contact_id, timezone_source="contact", payload_json='{ "k" : 1 }'))
    assert decoded(body)["contact_id"] == contact_id
    assert body.endswith(b',"payload":{ "k" : 1 }}')
