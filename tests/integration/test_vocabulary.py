"""One vocabulary, checked against the database itself: its status constraint, the events its
functions and triggers write, and the composite types the daemon's batch writes use."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import asyncpg
import pytest
from conftest import emptied
from support import make_job

from reminderd.lifecycle import Event, Status
from reminderd.outcome import AttemptResult, Outcome, Plan
from reminderd.store import Release, _outcome_v1, _plan_v1, _release_v1

PICKED_AT = datetime(2026, 12, 24, 3, 30, 0, 123000, tzinfo=UTC)


@pytest.fixture
def database_url(module_database_url: str) -> str:
    return emptied(module_database_url)


async def test_the_status_constraint_allows_exactly_the_status_enum(db: asyncpg.Connection) -> None:
    check = await db.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'status_is_known'"
    )
    assert set(re.findall(r"'(\w+)'::text", check)) == {s.value for s in Status}


async def test_every_event_the_sql_functions_and_triggers_write_is_an_event(db: asyncpg.Connection) -> None:
    rows = await db.fetch(  # the functions that write last_event (not, say, the cron parser's CASEs)
        "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'reminderd' AND p.prosrc LIKE '%last_event%'"
    )
    sources = "\n".join(row["prosrc"] for row in rows)
    written = set(re.findall(r"last_event\s*=\s*'(\w+)'", sources))
    written |= set(re.findall(r"coalesce\(\w+\.last_event,\s*'(\w+)'\)", sources))
    for case in re.findall(r"last_event\s*=\s*CASE(.*?)END", sources):
        written |= set(re.findall(r"(?:THEN|ELSE)\s+'(\w+)'", case))
    written |= set(re.findall(r"ELSE\s+'(\w+)'\s+END", sources))
    assert written == {
        "created", "replaced", "cancelled", "paused", "resumed", "rescheduled", "requeued", "updated",
        "endpoint_disabled",
        "sent_now", "edited", "replanned", "approved", "rejected",
    }
    assert written <= {e.value for e in Event}


async def as_json(db: asyncpg.Connection, type_name: str, value: tuple[object, ...]) -> dict[str, object]:
    """The value as PostgreSQL reads it into the composite type, attribute by attribute."""
    text = await db.fetchval(f"SELECT to_jsonb(($1::reminderd.{type_name}[])[1])::text", [value])
    decoded: dict[str, object] = json.loads(text)
    return decoded


async def test_an_outcome_reaches_each_attribute_of_outcome_v1_by_name(db: asyncpg.Connection) -> None:
    job = make_job(id=41, attempt=3, picked_at=PICKED_AT)
    outcome = Outcome(
        job, AttemptResult(False, 503, "HTTP 503", 17), Event.RETRY_SCHEDULED, Status.PENDING,
        retry_in_s=2.5, next_scheduled_for=job.scheduled_for, refund_attempt=True, ran=True,
        last_error="retrying",
    )
    assert await as_json(db, "outcome_v1", _outcome_v1(outcome)) == {
        "message_id": 41, "picked_at": "2026-12-24T03:30:00.123+00:00", "attempt": 3,
        "tenant_id": "acme",
        "webhook_id": job.webhook_id, "occurrence": "2026-12-24T03:30:00+00:00", "attempted": True,
        "status_code": 503, "error": "HTTP 503", "duration_ms": 17, "event": "retry_scheduled",
        "next_status": "pending", "next_fire_at": None, "retry_in_s": 2.5,
        "next_scheduled_for": "2026-12-24T03:30:00+00:00", "reset_attempts": False, "refund_attempt": True,
        "ran": True, "delivered": False, "last_error": "retrying",
    }


async def test_a_plan_and_a_release_reach_their_types_by_name(db: asyncpg.Connection) -> None:
    plan = Plan(8, None, PICKED_AT, Status.PENDING, "note")
    assert await as_json(db, "plan_v1", _plan_v1(plan)) == {
        "message_id": 8, "seen_fire_at": None, "next_fire_at": "2026-12-24T03:30:00.123+00:00",
        "next_status": "pending", "event": "planned", "last_error": "note",
    }
    release = Release(make_job(id=9, picked_at=PICKED_AT), started=True)
    assert await as_json(db, "release_v1", _release_v1(release)) == {
        "message_id": 9, "picked_at": "2026-12-24T03:30:00.123+00:00", "started": True,
    }
