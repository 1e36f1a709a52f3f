"""Nothing dead on arrival: a one-off already too late for its backfill policy, or a recurring row
whose `until` is past, is refused when it is written (plain INSERT, schedule(), reschedule(), the
CLI before it connects) instead of expiring unseen; one slightly late is accepted and sent now.
The database's rule (reminderd.check_arrival) and the CLI's (reminderd.schedule.arrival) are
checked on the same cases. The module shares one database, emptied before each test."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest
from support import CALLBACK, db_now, drain, fast_settings, row_by_ref

from reminderd.schedule import arrival
from reminderd.testing import Receiver, add_tenant

pytestmark = pytest.mark.shared_database

# (seconds late, backfill, max_lateness in seconds): each sent (accepted) or expired at once (refused)
CASES = [
    (-3600, None, None), (1, None, None), (60, None, None), (1795, None, None), (1805, None, None),
    (7200, None, None), (30, "skip", None), (55, "skip", None), (65, "skip", None), (8, "skip", 10),
    (12, "skip", 10), (3 * 3600, "latest", None), (86395, "latest", None), (86405, "latest", None),
    (5400, "send", 7200), (7205, "send", 7200), (5, "send", 0), (5, "latest", 0), (90000, "send", 200000),
    (2 * 86400, "skip", None),
]


async def refused_by_insert(db: asyncpg.Connection, ref: str, late_s: float, backfill: str | None,
                            max_lateness_s: float | None) -> str | None:
    """Insert a one-off `late_s` seconds late; the refusal's message, or None when accepted."""
    try:
        async with db.transaction():
            await db.execute(
                "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, backfill, max_lateness)"
                " VALUES ('acme', $1, now() - make_interval(secs => $2), $3, make_interval(secs => $4))",
                ref, late_s, backfill, max_lateness_s,
            )
    except asyncpg.DatetimeFieldOverflowError as exc:
        return str(exc)
    return None


async def test_the_database_and_the_cli_refuse_exactly_the_same_late_messages(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme", CALLBACK)
    now = await db_now(db)
    verdicts = []
    for number, (late_s, backfill, max_lateness_s) in enumerate(CASES):
        in_sql = await refused_by_insert(db, f"r{number}", late_s, backfill, max_lateness_s) is not None
        in_cli = arrival(now - timedelta(seconds=late_s), now, backfill=backfill,
                         max_lateness_s=max_lateness_s).too_late
        verdicts.append((late_s, backfill, max_lateness_s, in_sql, in_cli))
    disagree = [v for v in verdicts if v[3] != v[4]]
    assert disagree == [], "(late, backfill, max_lateness, SQL refuses, CLI refuses)"
    refused = [(late, policy, lateness) for late, policy, lateness, in_sql, _ in verdicts if in_sql]
    assert refused == [
        (1805, None, None), (7200, None, None), (65, "skip", None), (12, "skip", 10), (86405, "latest", None),
        (7205, "send", 7200), (5, "send", 0), (90000, "send", 200000), (2 * 86400, "skip", None),
    ]


async def test_a_refusal_names_the_message_the_policy_and_what_to_do(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme", CALLBACK)
    with pytest.raises(asyncpg.DatetimeFieldOverflowError) as refused:
        await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                         " VALUES ('acme', 'b1', now() - interval '2 hours')")
    error = refused.value
    assert error.sqlstate == "22008"
    assert error.message.startswith("message acme / b1 is too late to send: due ")
    assert error.message.endswith(", 2h ago")
    assert error.detail == ("backfill=send sends a one-off at most 30m late (reminderd.config 'max_lateness', "
                            "REMINDERD_MAX_LATENESS); it would expire at once.")
    assert "max_lateness" in error.hint

    with pytest.raises(asyncpg.DatetimeFieldOverflowError) as refused:
        await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, backfill)"
                         " VALUES ('acme', 'b2', '2020-01-01T09:00:00Z', 'latest')")
    assert refused.value.message.startswith("message acme / b2 is too late to send: due 2020-01-01T09:00:00Z, ")
    assert refused.value.detail.startswith("Nothing older than the lookback (1d: reminderd.config 'lookback'")


async def test_the_database_reads_its_defaults_from_reminderd_config(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme", CALLBACK)
    assert await refused_by_insert(db, "a", 3600, None, None) is not None
    await db.execute("UPDATE reminderd.config SET value = '2 hours' WHERE key = 'max_lateness'")
    assert await refused_by_insert(db, "b", 3600, None, None) is None
    await db.execute("UPDATE reminderd.config SET value = 'latest' WHERE key = 'backfill'")
    await db.execute("UPDATE reminderd.config SET value = '3 hours' WHERE key = 'lookback'")
    assert await refused_by_insert(db, "c", 3 * 3600 - 60, None, None) is None
    assert "lookback (3h" in str(await refused_by_insert(db, "d", 3 * 3600 + 60, None, None))


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT reminderd.schedule('acme', 'late', now() - interval '1 hour')",
        "SELECT reminderd.schedule('acme', 'late', timezone => 'Asia/Kolkata',"
        " local_time => (now() - interval '1 hour') AT TIME ZONE 'Asia/Kolkata')",
        "SELECT reminderd.schedule('acme', 'late', now() - interval '2 minutes', backfill => 'skip')",
    ],
    ids=["fire_at", "local_time", "skip"],
)
async def test_schedule_refuses_the_same_way(db: asyncpg.Connection, statement: str) -> None:
    await add_tenant(db, "acme", CALLBACK)
    with pytest.raises(asyncpg.DatetimeFieldOverflowError, match="message acme / late is too late to send"):
        await db.fetchval(statement)
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


async def test_reschedule_refuses_a_time_already_too_late(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme", CALLBACK)
    await db.execute(
        "SELECT reminderd.schedule('acme', 'm', now() + interval '1 hour', max_lateness => '5 minutes')"
    )
    with pytest.raises(asyncpg.DatetimeFieldOverflowError, match="at most 5m late \\(its max_lateness\\)"):
        await db.fetchval("SELECT reminderd.reschedule('acme', 'm', now() - interval '10 minutes')")
    assert await db.fetchval("SELECT reminderd.reschedule('acme', 'm', now() - interval '1 minute')") == 1


async def test_a_slightly_late_message_is_accepted_and_sent_at_once(
    database_url: str, db: asyncpg.Connection, receiver: Receiver,
) -> None:
    await add_tenant(db, "acme", receiver.url)
    await db.execute("SELECT reminderd.schedule('acme', 'late', now() - interval '10 minutes')")
    await drain(fast_settings(database_url))
    assert (await row_by_ref(db, "late"))["status"] == "sent"
    assert [r.message["ref_id"] for r in receiver.received] == ["late"]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron, until)"
        " VALUES ('acme', 'over', '@daily', now() - interval '1 day')",
        "SELECT reminderd.schedule_cron('acme', 'over', '@daily', until => now() - interval '1 second')",
        "SELECT reminderd.schedule_rrule('acme', 'over', 'FREQ=DAILY', until => now())",
    ],
    ids=["insert", "schedule_cron", "schedule_rrule"],
)
async def test_a_recurring_message_whose_until_is_past_is_refused(
    db: asyncpg.Connection, statement: str
) -> None:
    await add_tenant(db, "acme", CALLBACK)
    with pytest.raises(asyncpg.DatetimeFieldOverflowError) as refused:
        await db.execute(statement)
    assert refused.value.message.startswith("message acme / over ends before it starts: its until ")
    assert refused.value.hint == "Give an until in the future, or none."


async def test_rows_that_are_not_live_and_recurring_rows_due_in_the_past_are_not_refused(
    db: asyncpg.Connection,
) -> None:
    """History (a sent row) and a recurring row's missed occurrence (the planner's business) are
    not dead on arrival."""
    await add_tenant(db, "acme", CALLBACK)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status) VALUES"
        " ('acme', 'old', now() - interval '9 days', 'sent'),"
        " ('acme', 'dead', now() - interval '9 days', 'dead')"
    )
    await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, cron, fire_at)"
                     " VALUES ('acme', 'cron', '@hourly', now() - interval '5 days')")
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 3


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, rrule, timezone, payload) VALUES"
        " ('acme', 'over', E'DTSTART:20200101T090000\\nRRULE:FREQ=DAILY;UNTIL=20200201T000000Z',"
        " 'Europe/Paris', '{}')",
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, rrule, timezone) VALUES"
        " ('acme', 'over', E'DTSTART:20200101T090000\\nRRULE:FREQ=DAILY;UNTIL=20200201', 'Europe/Paris')",
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, rrule, timezone) VALUES"
        " ('acme', 'over', 'FREQ=WEEKLY;until=20200201T235959', 'Asia/Kolkata')",
        "SELECT reminderd.schedule_rrule('acme', 'over', E'DTSTART:20200101T090000\\nRRULE:FREQ=DAILY;"
        "UNTIL=20200201T000000Z', 'Europe/Paris')",
    ],
    ids=["insert-utc", "insert-date", "insert-floating", "schedule_rrule"],
)
async def test_a_recurring_message_whose_rrule_until_is_past_is_refused(
    db: asyncpg.Connection, statement: str
) -> None:
    """An RRULE's own UNTIL, already past, leaves it nothing: refused as a past until is."""
    await add_tenant(db, "acme", CALLBACK)
    with pytest.raises(asyncpg.DatetimeFieldOverflowError) as refused:
        await db.execute(statement)
    assert refused.value.message.startswith("message acme / over ends before it starts: its RRULE's UNTIL ")
    assert refused.value.hint is not None and "UNTIL" in refused.value.hint
    assert refused.value.detail is not None and refused.value.detail.startswith("UNTIL ends it at 2020-0")
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


async def test_an_rrule_until_in_the_future_or_on_the_rows_own_clock_today_is_accepted(
    db: asyncpg.Connection,
) -> None:
    """An UNTIL still ahead is kept; a wall-time UNTIL is read on the row's clock: an hour from now
    in Pacific/Pago_Pago (UTC-11) would be ten hours past if it were read in UTC."""
    await add_tenant(db, "acme", CALLBACK)
    await db.execute(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, rrule, timezone) VALUES"
        " ('acme', 'ahead', E'DTSTART:20200101T090000\\nRRULE:FREQ=DAILY;UNTIL=29990101T000000Z',"
        "  'Europe/Paris'),"
        " ('acme', 'west', 'FREQ=HOURLY;UNTIL=' || to_char(now() AT TIME ZONE 'Pacific/Pago_Pago'"
        "   + interval '1 hour', 'YYYYMMDD\"T\"HH24MISS'), 'Pacific/Pago_Pago')"
    )
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 2


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("FREQ=DAILY;UNTIL=20200201T000000Z", "2020-02-01T00:00:00Z"),
        ("RRULE:FREQ=DAILY;UNTIL=20200201", "2020-02-01T22:59:59Z"),  # its whole day in Paris
        ("FREQ=DAILY;until = 20200701T120000;BYHOUR=9", "2020-07-01T10:00:00Z"),
        ("FREQ=DAILY;UNTIL=20240229T000000Z", "2024-02-29T00:00:00Z"),
        ("FREQ=DAILY;UNTIL=20230229T000000Z", None),  # not a date: the planner's to name
        ("FREQ=DAILY;UNTIL=20200201T250000Z", None),
        ("FREQ=DAILY;UNTIL=tomorrow", None),
        ("FREQ=DAILY", None),
    ],
)
async def test_rrule_until_reads_an_until_as_the_daemon_does(
    db: asyncpg.Connection, rule: str, expected: str | None
) -> None:
    until = await db.fetchval("SELECT to_char(reminderd.rrule_until($1, 'Europe/Paris') AT TIME ZONE 'UTC', "
                              "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')", rule)
    assert until == expected
