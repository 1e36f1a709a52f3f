"""What a DBA meets in SQL (migration 0005): refusals in sentences with a DETAIL or HINT and the
SQLSTATE docs/sql.md lists, carrying the name of the constraint they pre-empt; a recurring row
given its first fire_at by schedule_recurring. The module shares one database."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import asyncpg
import pytest
from support import CALLBACK, db_now

from reminderd.migrate import head_revision, upgrade
from reminderd.schedule.cron import InvalidSchedule, next_fire, parse_cron
from reminderd.testing import add_tenant

pytestmark = pytest.mark.shared_database


async def test_a_tenant_that_already_exists(db: asyncpg.Connection) -> None:
    """The primary key says it (0025: a trigger saying it first defeated INSERT … ON CONFLICT), and
    reminderd says that in one sentence (tests/integration/test_tenant_writes.py)."""
    await add_tenant(db, "acme", CALLBACK)
    with pytest.raises(asyncpg.UniqueViolationError) as refused:
        await db.execute("INSERT INTO reminderd.tenants (id, callback_url) VALUES ('acme', 'https://a.example/h')")
    error = refused.value
    assert (error.constraint_name, error.detail) == ("tenants_pkey", "Key (id)=(acme) already exists.")


@pytest.mark.parametrize(
    ("values", "message", "constraint"),
    [
        ("('acme', 'ftp://acme.example/h')", 'callback_url "ftp://acme.example/h" of tenant "acme" is not an '
         "http(s) URL", "tenant_callback_url_is_http"),
        ("('has space', NULL)", 'tenant id "has space" is not allowed', "tenant_id_format"),
    ],
    ids=["callback_url", "id"],
)
async def test_a_tenant_of_the_wrong_shape(db: asyncpg.Connection, values: str, message: str,
                                           constraint: str) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await db.execute(f"INSERT INTO reminderd.tenants (id, callback_url) VALUES {values}")
    assert (refused.value.message, refused.value.constraint_name) == (message, constraint)


async def test_a_tenant_calendar_of_the_wrong_shape(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme", CALLBACK)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await db.execute("UPDATE reminderd.tenants SET calendar = 'india' WHERE id = 'acme'")
    assert refused.value.message == 'calendar "india" of tenant "acme" is not a holiday calendar code'
    assert refused.value.constraint_name == "tenant_calendar_format"


async def test_a_holiday_of_an_unknown_tenant_says_unknown_tenant(db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await db.execute(
            "INSERT INTO reminderd.tenant_holidays (tenant_id, day) VALUES ('ghost', '2026-12-31')"
        )
    assert (refused.value.message, refused.value.constraint_name) == (
        'unknown tenant "ghost"', "tenant_holidays_tenant_id_fkey",
    )
    await add_tenant(db, "acme", CALLBACK)
    with pytest.raises(asyncpg.CheckViolationError, match='the holiday 2026-12-31 of tenant "acme" has an'):
        await db.execute("INSERT INTO reminderd.tenant_holidays VALUES ('acme', '2026-12-31', '')")


@pytest.mark.parametrize(
    ("statement", "message", "constraint"),
    [
        ("SELECT reminderd.schedule('acme', 'r1', now() + interval '1 hour', callback_url => 'ftp://x/y')",
         'callback_url "ftp://x/y" of message acme / r1 is not an http(s) URL', "callback_url_is_http"),
        ("SELECT reminderd.schedule_cron('acme', 'r1', '0 9 * *')",
         'cron "0 9 * *" of message acme / r1 is not five fields (minute hour day month weekday)',
         "cron_shape"),
    ],
    ids=["callback_url", "cron"],
)
async def test_a_message_of_the_wrong_shape(db: asyncpg.Connection, statement: str, message: str,
                                            constraint: str) -> None:
    await add_tenant(db, "acme", CALLBACK)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await db.fetchval(statement)
    assert (refused.value.message, refused.value.constraint_name) == (message, constraint)
    assert refused.value.hint


INSERT_CRON = "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron) VALUES ('acme', 'r1', $1)"


@pytest.mark.parametrize(
    ("statement", "cron", "reason"),
    [
        (INSERT_CRON, "61 * * * *", "minute 61 is out of range 0–59"),  # noqa: RUF001 - the message's en dash
        (INSERT_CRON, "0 9 * * Funday",
         'day of week "Funday" is not a day of the week (0–7, SUN–SAT, 1#2 or L5)'),  # noqa: RUF001 - as above
        (INSERT_CRON, "0 0 30 2 *", "it never fires"),
        ("SELECT reminderd.schedule_cron('acme', 'r1', $1)", "0 0 31 4 *", "it never fires"),
        ("UPDATE reminderd.scheduled_messages SET cron = $1 WHERE ref_id = 'daily'", "*/0 * * * *",
         'minute "*/0": the step must be at least 1'),
    ],
    ids=["insert: out of range", "insert: a bad name", "insert: never fires", "schedule_cron", "update"],
)
async def test_a_cron_the_daemon_cannot_read_is_refused_when_written(
    db: asyncpg.Connection, statement: str, cron: str, reason: str
) -> None:
    """Not dead on arrival: the trigger parses the cron as the daemon will (reminderd.cron_parse,
    held to the daemon's parser by tests/integration/test_sql_cron.py), and says what is wrong."""
    await add_tenant(db, "acme", CALLBACK)
    await db.execute(INSERT_CRON.replace("'r1'", "'daily'"), "@daily")
    with pytest.raises(asyncpg.InvalidParameterValueError) as refused:
        await db.execute(statement, cron)
    assert refused.value.message == f'invalid cron "{cron}": {reason}'
    assert refused.value.hint
    with pytest.raises(InvalidSchedule, match=re.escape(f'invalid cron "{cron}"')):
        parse_cron(cron)
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 1
    assert await db.fetchval("SELECT cron FROM reminderd.scheduled_messages") == "@daily"


# First fire_at -----------------------------------------------------------------------------------

RECURRING = (
    "SELECT reminderd.schedule_recurring('acme', 'digest', '0 9 * * *', NULL, 'UTC', '{}', NULL, $1, NULL,"
    " 'transactional', NULL, NULL, NULL, NULL, NULL, $2)"
)


async def test_schedule_recurring_stores_the_first_fire_at_it_is_given(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme", CALLBACK)
    first = (await db_now(db) + timedelta(hours=3)).replace(microsecond=0)
    message_id = await db.fetchval(RECURRING, None, first)
    row = await db.fetchrow("SELECT fire_at, status FROM reminderd.scheduled_messages WHERE id = $1",
                            message_id)
    assert (row["fire_at"], row["status"]) == (first, "pending")
    [event] = await db.fetch("SELECT event, fire_at FROM reminderd.events WHERE message_id = $1", message_id)
    assert (event["event"], event["fire_at"]) == ("created", first)


async def test_without_a_first_fire_at_a_cron_gets_next_cron_occurrence_and_an_rrule_the_planner(
    db: asyncpg.Connection,
) -> None:
    """schedule_cron and schedule_rrule go through reminderd.first_occurrence(): the cron's next
    occurrence, computed in SQL; NULL for an RRULE, which the daemon's planner times
    (tests/integration/test_time.py follows both to the planner)."""
    await add_tenant(db, "acme", CALLBACK)
    cron = await db.fetchrow("SELECT reminderd.schedule_cron('acme', 'digest', '0 9 * * *') AS id, now() AS at")
    rrule = await db.fetchval("SELECT reminderd.schedule_rrule('acme', 'weekly', 'FREQ=WEEKLY')")
    fire_at = "SELECT fire_at FROM reminderd.scheduled_messages WHERE id = $1"
    assert await db.fetchval(fire_at, cron["id"]) == next_fire("0 9 * * *", "UTC", cron["at"])
    assert await db.fetchval(fire_at, rrule) is None
    assert await db.fetchval("SELECT reminderd.first_occurrence(NULL, 'FREQ=WEEKLY', 'UTC', now())") is None


async def test_a_first_fire_at_in_the_past_or_after_until_is_refused(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme", CALLBACK)
    now = await db_now(db)
    with pytest.raises(asyncpg.DatetimeFieldOverflowError, match=r"first_fire_at .* of message acme / digest"):
        await db.fetchval(RECURRING, None, now - timedelta(hours=1))
    with pytest.raises(asyncpg.DatetimeFieldOverflowError) as refused:
        await db.fetchval(RECURRING, now + timedelta(hours=1), now + timedelta(hours=2))
    assert refused.value.message.startswith("message acme / digest has no occurrence before its until ")
    assert refused.value.hint == "Give a later until, or none."


# Migration 0005 on a database in use -------------------------------------------------------------


async def test_a_database_at_0004_with_data_upgrades_to_head(empty_database_url: str) -> None:
    """Rows written before 0005 (one of them now long past its time, as an outage leaves it) stay
    as they are; the new checks apply to what is written from then on."""
    await asyncio.to_thread(upgrade, empty_database_url, "0004")
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute(
            "INSERT INTO reminderd.tenants (id, callback_url) VALUES ('acme', 'https://example.com/cb');"
            "INSERT INTO reminderd.tenant_holidays (tenant_id, day, name) VALUES ('acme', '2026-12-31', 'x');"
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) VALUES"
            " ('acme', 'stale', now() - interval '3 hours'), ('acme', 'soon', now() + interval '1 hour');"
            "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron)"
            " VALUES ('acme', 'daily', '@daily')"
        )
        assert await asyncio.to_thread(upgrade, empty_database_url) == ["0005", *later_than("0005")]
        rows = await connection.fetch("SELECT ref_id, status FROM reminderd.scheduled_messages ORDER BY ref_id")
        config = dict(await connection.fetch("SELECT key, value FROM reminderd.config"))
        with pytest.raises(asyncpg.DatetimeFieldOverflowError):
            await connection.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                                     " VALUES ('acme', 'stale-2', now() - interval '3 hours')")
        version = await connection.fetchval("SELECT version_num FROM reminderd.alembic_version")
    finally:
        await connection.close()
    assert [(r["ref_id"], r["status"]) for r in rows] == [("daily", "pending"), ("soon", "pending"),
                                                           ("stale", "pending")]
    assert config == {"horizon": "90 days", "backfill": "send", "max_lateness": "30 minutes",
                      "lookback": "1 day"}
    assert version == head_revision()


def later_than(revision: str) -> list[str]:
    """Revisions after `revision` on this branch (none yet; the lead chains others after 0005)."""
    from alembic.script import ScriptDirectory

    from reminderd.migrate import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    return [s.revision for s in reversed(list(scripts.walk_revisions(head="heads", base=revision)))
            if s.revision != revision]
