"""Values SQL refuses in sentences (migration 0021), as the project's rule asks of every refusal: one
line naming the row and the value, a HINT, the SQLSTATE docs/sql.md lists.

- A time that is not finite (`-infinity`, `infinity`) or a delay past what a timestamptz holds is
  refused with 22008 naming the message, wherever a time comes in: schedule(), reschedule(),
  schedule_recurring()'s first_fire_at, schedule_many() (schedule_one and schedule_set refuse it
  and leave the sentence to the item-by-item path), broadcast(), schedule_cadence(), and plain
  INSERT and UPDATE; before, PostgreSQL's own "cannot subtract infinite timestamps".
- A value a CHECK constraint of scheduled_messages refuses (max_attempts 0, a category of capitals,
  an rrule without FREQ, …) is refused by the triggers first, with the constraint's name, 23514
  and a one-line sentence: before, PostgreSQL's "violates check constraint" with a DETAIL of the
  row's 40 columns. reminderd.refusals reads them as one good line.
- A contact's phone that is not +<country code> <number> is refused (22023), in upsert_contacts,
  upsert_contact_rows and plain SQL; every form the docs allow is still taken.
- Migration 0021 upgrades a database holding such rows, written before: they stay and keep moving.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta

import asyncpg
import pytest
from structlog.testing import capture_logs
from support import CALLBACK, db_now, drain, fast_settings

from reminderd.exceptions import DatabaseRefused
from reminderd.housekeeping import BroadcastStager
from reminderd.migrate import refresh_reference_data, upgrade
from reminderd.refusals import one_line
from reminderd.store import Store
from reminderd.testing import Receiver, add_tenant

pytestmark = pytest.mark.shared_database

HORIZON_HINT = "A DBA can change it: UPDATE reminderd.config SET value = '180 days' WHERE key = 'horizon'"
TIME_HINT = "Give a time to send it at, like now() + interval '1 hour'."
WALL_HINT = "Give a wall time, like '2026-12-24 09:00'."
A_CONTACT = "SELECT reminderd.upsert_contacts('acme', '[{\"contact_id\": \"c1\", \"timezone\": \"UTC\"}]')"


@pytest.fixture
async def acme(db: asyncpg.Connection) -> str:
    await add_tenant(db, "acme", CALLBACK)
    return "acme"


async def refusal(db: asyncpg.Connection, statement: str, *args: object) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as failure:
        await db.execute(statement, *args)
    return failure.value


def said(error: asyncpg.PostgresError) -> str:
    """The refusal as the CLI and the HTTP API say it (reminderd.refusals.one_line)."""
    return one_line(DatabaseRefused(error.message, sqlstate=error.sqlstate, detail=error.detail,
                                    hint=error.hint, constraint=getattr(error, "constraint_name", None)))


def one_clear_line(error: asyncpg.PostgresError) -> None:
    """What every refusal here must be: a message and a HINT, each one line, no DETAIL of a row."""
    assert "\n" not in error.message and error.hint and "\n" not in error.hint
    assert error.detail is None, error.detail


# Times that are not finite, delays that overflow ------------------------------------------------

SCHEDULE = "SELECT reminderd.schedule('acme', 's7j', '{}'::timestamptz)"
LOCAL = ("SELECT reminderd.schedule('acme', 's18', local_time => '{}'::timestamp,"
         " timezone => 'Asia/Kolkata')")
RESCHEDULE = "SELECT reminderd.reschedule('acme', 's14', '{}'::timestamptz)"
FIRST_FIRE = ("SELECT reminderd.schedule_recurring('acme', 'k8', '0 9 * * *', NULL, 'UTC', '{{}}', NULL, NULL,"
              " NULL, 'transactional', NULL, NULL, NULL, NULL, NULL, '{}'::timestamptz)")
INSERT_FIRE = ("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
               " VALUES ('acme', 'p1', '{}')")
INSERT_LOCAL = ("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, local_time)"
                " VALUES ('acme', 'p1', now() + interval '1 hour', '{}')")
UPDATE_FIRE = "UPDATE reminderd.scheduled_messages SET fire_at = '{}' WHERE ref_id = 's14'"
UPDATE_LOCAL = "UPDATE reminderd.scheduled_messages SET local_time = '{}' WHERE ref_id = 's14'"
BROADCAST = ("SELECT reminderd.broadcast('acme', 'bx', local_time => '{}'::timestamp,"
             " contact_ids => ARRAY['c1'])")
CADENCE = "SELECT * FROM reminderd.schedule_cadence('acme', 'renewal', '{}'::timestamptz)"

INFINITE = {
    "schedule": (SCHEDULE, "fire_at {} of message acme / s7j is not a finite time", TIME_HINT),
    "local_time": (LOCAL, "local_time {} of message acme / s18 is not a finite time", WALL_HINT),
    "reschedule": (RESCHEDULE, "fire_at {} of message acme / s14 is not a finite time", TIME_HINT),
    "first_fire_at": (FIRST_FIRE, "first_fire_at {} of message acme / k8 is not a finite time",
                      "Leave it NULL: the first occurrence after now is planned for you."),
    "insert fire_at": (INSERT_FIRE, "fire_at {} of message acme / p1 is not a finite time", TIME_HINT),
    "insert local_time": (INSERT_LOCAL, "local_time {} of message acme / p1 is not a finite time", WALL_HINT),
    "update fire_at": (UPDATE_FIRE, "fire_at {} of message acme / s14 is not a finite time", TIME_HINT),
    "update local_time": (UPDATE_LOCAL, "local_time {} of message acme / s14 is not a finite time", WALL_HINT),
    "broadcast": (BROADCAST, 'local_time {} of broadcast "bx" of tenant "acme" is not a finite time',
                  WALL_HINT),
    "cadence": (CADENCE, 'anchor {} of cadence "renewal" of tenant "acme" is not a finite time',
                "Give the time its offsets count from, like a renewal date: '2027-03-01 00:00+00'."),
}


@pytest.mark.parametrize("infinity", ["-infinity", "infinity"])
@pytest.mark.parametrize("case", list(INFINITE))
async def test_a_time_that_is_not_finite_is_refused_naming_the_message(
    db: asyncpg.Connection, acme: str, case: str, infinity: str
) -> None:
    statement, message, hint = INFINITE[case]
    await db.execute("SELECT reminderd.schedule('acme', 's14', now() + interval '1 hour')")
    await db.execute(A_CONTACT)
    before = await db.fetch("SELECT * FROM reminderd.scheduled_messages")
    error = await refusal(db, statement.format(infinity))
    assert (error.sqlstate, error.message, error.hint) == ("22008", message.format(infinity), hint)
    one_clear_line(error)
    assert await db.fetch("SELECT * FROM reminderd.scheduled_messages") == before


async def test_a_delay_past_what_a_timestamp_holds_is_beyond_the_horizon(
    db: asyncpg.Connection, acme: str
) -> None:
    for delay in ("1000000 years", "300000 years", "200001 years"):
        error = await refusal(db, f"SELECT reminderd.schedule('acme', 's17', fire_in => '{delay}')")
        assert (error.sqlstate, error.message, error.hint) == (
            "22008", f"fire_in {delay} of message acme / s17 is further ahead than the horizon of 90 days",
            HORIZON_HINT)
    error = await refusal(db, "SELECT * FROM reminderd.schedule_cadence('acme', 'renewal',"
                              " now() + interval '40 days', offsets => '{-1000000 years}')")
    assert (error.sqlstate, error.message) == (
        "22008",
        'offset -1000000 years of cadence "renewal" of tenant "acme" takes it out of the range of time')
    one_clear_line(error)


async def test_the_horizon_refusal_names_the_message(db: asyncpg.Connection, acme: str) -> None:
    far = await db_now(db) + timedelta(days=400)
    error = await refusal(db, "SELECT reminderd.schedule('acme', 'far', $1)", far)
    assert error.sqlstate == "22008"
    assert error.message.startswith("fire_at ") and error.message.endswith(
        " of message acme / far is further ahead than the horizon of 90 days")
    await db.execute("SELECT reminderd.schedule('acme', 'r1', now() + interval '1 hour')")
    error = await refusal(db, "SELECT reminderd.reschedule('acme', 'r1', $1)", far)
    assert error.message.endswith(" of message acme / r1 is further ahead than the horizon of 90 days")
    assert error.hint == HORIZON_HINT


ITEM = ("SELECT ROW('{ref}', {fire_at}, {fire_in}, {local_time}, NULL, NULL, 'Asia/Kolkata', '{{}}', NULL,"
        " 'transactional', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::reminderd.schedule_item_v2")
ODD_ITEMS = {  # fire_at, fire_in, local_time, and what schedule_many says of it
    "minus": ("'-infinity'", "NULL", "NULL", "fire_at -infinity of message acme / minus is not a finite time"),
    "plus": ("'infinity'", "NULL", "NULL", "fire_at infinity of message acme / plus is not a finite time"),
    "wall": ("NULL", "NULL", "'infinity'", "local_time infinity of message acme / wall is not a finite time"),
    "delay": ("NULL", "'1000000 years'", "NULL",
              "fire_in 1000000 years of message acme / delay is further ahead than the horizon of 90 days"),
}


def item(ref: str, fire_at: str = "now() + interval '1 hour'", fire_in: str = "NULL",
         local_time: str = "NULL") -> str:
    return ITEM.format(ref=ref, fire_at=fire_at, fire_in=fire_in, local_time=local_time)


@pytest.mark.parametrize("ref", list(ODD_ITEMS))
async def test_the_api_functions_refuse_them_and_schedule_many_says_why(
    db: asyncpg.Connection, acme: str, ref: str
) -> None:
    """schedule_one and schedule_set leave the sentence to the item-by-item path (their contract:
    'refused: schedule_many() says why'), never PostgreSQL's own error; schedule_many says it."""
    odd = item(ref, *ODD_ITEMS[ref][:3])
    for statement in (f"SELECT reminderd.schedule_one('acme', ({odd}))",
                      f"SELECT * FROM reminderd.schedule_set('acme', ARRAY[({odd}), ({item('fine')})])"):
        error = await refusal(db, statement)
        assert error.sqlstate == "22023" and "schedule_item" in error.message, error.message
    for items in ([odd], [item("fine"), odd]):
        batch = ", ".join(f"({one})" for one in items)
        rows = await db.fetch(f"SELECT * FROM reminderd.schedule_many('acme', ARRAY[{batch}], false)")
        refused = rows[-1]
        assert (refused["error_sqlstate"], refused["error_message"]) == ("22008", ODD_ITEMS[ref][3])
        assert refused["error_hint"] and refused["error_detail"] is None
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages WHERE ref_id = $1", ref) == 0


async def test_a_row_with_a_time_not_finite_written_before_keeps_moving(
    db: asyncpg.Connection, acme: str
) -> None:
    """Written before 0021 (here: the triggers bypassed): its other columns can change, it can be
    cancelled; only a new time that is not finite is refused."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, local_time)"
                         " VALUES ('acme', 'old', '-infinity', 'infinity')")
    await db.execute("UPDATE reminderd.scheduled_messages SET category = 'marketing', max_attempts = 3,"
                     " fire_at = fire_at, local_time = local_time WHERE ref_id = 'old'")
    assert await db.fetchval("SELECT reminderd.cancel('acme', 'old')") == 1


# Values a CHECK constraint refuses ------------------------------------------------------------------

ONE_OFF = "SELECT reminderd.schedule('acme', 'm0', now() + interval '1 hour', {})"
INSERT = "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, {}) VALUES ('acme', 'r1', {})"
CATEGORY_HINT = ("A category is lower-case letters, digits, _ and -, starting with a letter, at most 32"
                 " characters, like marketing.")
RRULE_HINT = ("An RRULE says how often it repeats, like FREQ=WEEKLY;BYDAY=MO: FREQ is YEARLY, MONTHLY, WEEKLY,"
              " DAILY, HOURLY, MINUTELY or SECONDLY.")
ENDS_HINT = "until and max_runs end a recurring message: give it a cron or an rrule, or leave them NULL."
REFUSED: dict[str, tuple[str, str, str, str]] = {  # statement, constraint, message, HINT
    "max_attempts": (ONE_OFF.format("max_attempts => 0"), "max_attempts_positive",
                     "max_attempts 0 of message acme / m0 is less than 1",
                     "Give at least 1 attempt, or NULL for the daemon's REMINDERD_MAX_ATTEMPTS."),
    "category": (ONE_OFF.format("category => 'Bad Cat'"), "category_format",
                 'category "Bad Cat" of message acme / m0 is not a category name', CATEGORY_HINT),
    "long category": (ONE_OFF.format(f"category => '{'a' * 33}'"), "category_format",
                      f'category "{"a" * 33}" of message acme / m0 is not a category name', CATEGORY_HINT),
    "backfill": (ONE_OFF.format("backfill => 'bogus'"), "backfill_is_known",
                 'backfill "bogus" of message acme / m0 is not send, latest or skip',
                 "After an outage: send (what is at most max_lateness late), latest (only the most recent"
                 " missed occurrence) or skip (nothing late); NULL takes REMINDERD_BACKFILL."),
    "holiday_rule": (ONE_OFF.format("holiday_rule => 'bogus'"), "holiday_rule_is_known",
                     'holiday_rule "bogus" of message acme / m0 is not skip or send',
                     "skip moves a message off its holidays, send sends on them; NULL takes the tenant's"
                     " rule."),
    "max_lateness": (ONE_OFF.format("max_lateness => '-5 min'"), "max_lateness_not_negative",
                     "max_lateness -00:05:00 of message acme / m0 is negative",
                     "Give how late it may still be sent, 0 or more, like 30 minutes; NULL takes"
                     " REMINDERD_MAX_LATENESS."),
    "calendar": (ONE_OFF.format("calendar => 'india'"), "calendar_format",
                 'calendar "india" of message acme / m0 is not a holiday calendar code',
                 "A country code such as IN or GB, or a subdivision such as US-CA (the holidays package's"
                 " codes); NULL takes the tenant's."),
    "long calendar": (ONE_OFF.format("calendar => 'US-ABCDEFGHIJK'"), "calendar_format",
                      'calendar "US-ABCDEFGHIJK" of message acme / m0 is not a holiday calendar code',
                      "A country code such as IN or GB, or a subdivision such as US-CA (the holidays package's"
                      " codes); NULL takes the tenant's."),
    "max_runs": ("SELECT reminderd.schedule_cron('acme', 'k2', '0 9 * * *', max_runs => 0)",
                 "max_runs_positive", "max_runs 0 of message acme / k2 is less than 1",
                 "Give how many occurrences it sends, at least 1, or NULL for no limit."),
    "rrule": ("SELECT reminderd.schedule_rrule('acme', 'k3', 'BYDAY=MO')", "rrule_has_freq",
              'rrule "BYDAY=MO" of message acme / k3 has no FREQ', RRULE_HINT),
    "rrule of lines": (INSERT.format("rrule", "E'DTSTART:20301201T090000\\nBYDAY=MO'"), "rrule_has_freq",
                       'rrule "DTSTART:20301201T090000\\nBYDAY=MO" of message acme / r1 has no FREQ',
                       RRULE_HINT),
    "empty ref": ("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                  " VALUES ('acme', '', now() + interval '1 hour')", "ref_id_not_empty",
                  'a message of tenant "acme" has an empty ref_id',
                  "Name it, like booking:b7d2:24h: its ref is how it is cancelled, moved or replaced."),
    "no time": (INSERT.format("payload", "'{}'"), "one_off_needs_fire_at",
                "message acme / r1 has no fire_at, cron or rrule",
                "Give a one-off message its fire_at, or a recurring one a cron or an rrule."),
    "cron and rrule": (INSERT.format("cron, rrule", "'@daily', 'FREQ=DAILY'"), "one_recurrence",
                       "message acme / r1 has both a cron and an rrule",
                       "A message recurs by one of them: give the cron or the rrule."),
    "until of a one-off": (INSERT.format("fire_at, until", "now() + interval '1 hour', now() + interval '9 h'"),
                           "end_conditions_need_recurrence",
                           "message acme / r1 has an until but no cron or rrule", ENDS_HINT),
    "max_runs of a one-off": (INSERT.format("fire_at, max_runs", "now() + interval '1 hour', 3"),
                              "end_conditions_need_recurrence",
                              "message acme / r1 has a max_runs but no cron or rrule", ENDS_HINT),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_value_its_constraint_refuses_is_refused_in_a_sentence(
    db: asyncpg.Connection, acme: str, case: str
) -> None:
    statement, constraint, message, hint = REFUSED[case]
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await db.execute(statement)
    error = refused.value
    assert (error.sqlstate, error.constraint_name, error.message, error.hint) == (
        "23514", constraint, message, hint)
    one_clear_line(error)
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


CHANGES = {  # what an UPDATE sets: the constraint and the message it is refused with
    "max_attempts = 0": ("max_attempts_positive", "max_attempts 0 of message acme / {} is less than 1"),
    "max_runs = -1": ("max_runs_positive", "max_runs -1 of message acme / {} is less than 1"),
    "category = 'Promo'": ("category_format", 'category "Promo" of message acme / {} is not a category name'),
    "calendar = 'gb'": ("calendar_format",
                        'calendar "gb" of message acme / {} is not a holiday calendar code'),
    "holiday_rule = 'never'": ("holiday_rule_is_known",
                               'holiday_rule "never" of message acme / {} is not skip or send'),
    "backfill = 'all'": ("backfill_is_known",
                         'backfill "all" of message acme / {} is not send, latest or skip'),
    "max_lateness = '-1 hour'": ("max_lateness_not_negative",
                                 "max_lateness -01:00:00 of message acme / {} is negative"),
    "rrule = 'INTERVAL=2'": ("rrule_has_freq", 'rrule "INTERVAL=2" of message acme / {} has no FREQ'),
    "ref_id = ''": ("ref_id_not_empty", 'a message of tenant "acme" has an empty ref_id'),
    "until = now() + interval '1 day'": ("end_conditions_need_recurrence",
                                         "message acme / {} has an until but no cron or rrule"),
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_changed_value_is_refused_in_the_same_sentence(
    db: asyncpg.Connection, acme: str, change: str
) -> None:
    await db.execute("SELECT reminderd.schedule('acme', 'once', now() + interval '1 hour')")
    await db.execute("SELECT reminderd.schedule_rrule('acme', 'weekly', 'FREQ=WEEKLY')")
    constraint, message = CHANGES[change]
    ref = "weekly" if change.startswith(("max_runs", "rrule")) else "once"
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await db.execute(f"UPDATE reminderd.scheduled_messages SET {change} WHERE ref_id = $1", ref)
    assert (refused.value.constraint_name, refused.value.message) == (constraint, message.format(ref))
    one_clear_line(refused.value)


async def test_a_broadcast_is_refused_the_values_its_messages_could_not_have(
    db: asyncpg.Connection, acme: str
) -> None:
    await db.execute(A_CONTACT)
    wall = (await db_now(db) + timedelta(days=2)).replace(tzinfo=None)
    cases = [("max_attempts => 0", "max_attempts_positive", "max_attempts 0"),
             ("backfill => 'bogus'", "backfill_is_known", 'backfill "bogus"'),
             ("category => 'Promo'", "broadcast_category_format", 'category "Promo"'),
             ("max_lateness => '-1 minute'", "max_lateness_not_negative", "max_lateness -00:01:00")]
    for given, constraint, value in cases:
        with pytest.raises(asyncpg.CheckViolationError) as refused:
            await db.execute("SELECT reminderd.broadcast('acme', 'bz', $1, contact_ids => ARRAY['c1'],"
                             f" {given})", wall)
        assert refused.value.constraint_name == constraint
        assert refused.value.message.startswith(f'{value} of broadcast "bz" of tenant "acme" ')
        one_clear_line(refused.value)
    with pytest.raises(asyncpg.CheckViolationError) as refused:  # one the holidays package does not know (0035)
        await db.execute("SELECT reminderd.broadcast('acme', 'bz', $1, contact_ids => ARRAY['c1'],"
                         " calendar => 'ZZ')", wall)
    assert refused.value.constraint_name == "broadcast_calendar_known"
    assert refused.value.message == ('unknown holiday calendar "ZZ" of broadcast "bz" of tenant "acme":'
                                     " no public holidays known for country ZZ")
    one_clear_line(refused.value)
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_requests") == 0


@pytest.mark.parametrize(
    ("statement", "line"),
    [
        (REFUSED["max_attempts"][0], "max_attempts 0 of message acme / m0 is less than 1; give at least 1"
                                     " attempt, or NULL for the daemon's REMINDERD_MAX_ATTEMPTS"),
        (REFUSED["category"][0], 'category "Bad Cat" of message acme / m0 is not a category name; a category is'
                                 " lower-case letters, digits, _ and -, starting with a letter, at most 32"
                                 " characters, like marketing"),
        (SCHEDULE.format("-infinity"), "fire_at -infinity of message acme / s7j is not a finite time; give a"
                                       " time to send it at, like now() + interval '1 hour'"),
    ],
    ids=["max_attempts", "category", "-infinity"],
)
async def test_the_cli_and_the_api_say_them_in_one_line(
    db: asyncpg.Connection, acme: str, statement: str, line: str
) -> None:
    assert said(await refusal(db, statement)) == line


async def test_valid_values_are_taken_as_before(db: asyncpg.Connection, acme: str) -> None:
    """What the quick tests in front of the sentences let through: every value the constraints take."""
    await db.execute("SELECT reminderd.schedule('acme', 'a', now() + interval '1 hour', max_attempts => 1,"
                     " category => 'x', calendar => 'US-CA', holiday_rule => 'send', backfill => 'latest',"
                     " max_lateness => '0')")
    # The longest code of the right shape, as a holidays package may one day list one (migration 0035).
    await db.execute("INSERT INTO reminderd.holiday_calendars VALUES ('GB-ABCDEFGHIJ', 'GB', 'ABCDEFGHIJ')")
    await db.execute("SELECT reminderd.schedule('acme', 'b', now() + interval '1 hour', category => $1,"
                     " calendar => 'GB-ABCDEFGHIJ', holiday_rule => 'skip', backfill => 'skip')",
                     "a" + "_-9" * 10 + "z")
    await db.execute("SELECT reminderd.schedule_rrule('acme', 'c',"
                     " E'DTSTART:20301201T090000\\nRRULE:FREQ=DAILY', max_runs => 1)")
    await db.execute("SELECT reminderd.schedule_cron('acme', 'd', '@daily',"
                     " until => now() + interval '9 days')")
    await db.execute("UPDATE reminderd.scheduled_messages SET backfill = 'send', max_lateness = '1 hour',"
                     " category = 'transactional', calendar = 'IN' WHERE ref_id = 'a'")
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 4


# Phones ------------------------------------------------------------------------------------------

PHONE_HINT = ("A phone is written +<country code> <number>, like +44 20 7946 0018: a +, then digits, with"
              " spaces, dashes, dots, slashes or parentheses between them if you like.")
# Every form the docs allow (+<country code> <number>; spaces, dashes, dots, slashes, parentheses),
# and the zone each gives.
PHONES = {
    "+44 20 7946 0018": "Europe/London",
    "+44 (0)20 7946 0018": "Europe/London",
    "+1 (415) 555-2671": "America/Los_Angeles",
    "+1.312.555.0100": "America/Chicago",
    "+1/212/555/0100": "America/New_York",
    "(+91) 98765-43210": "Asia/Kolkata",
    "+61 7 3224 4000": "Australia/Brisbane",
    "+12125550100": "America/New_York",
    "+1 212 000 0000": None,  # not a valid number, but written as one: it falls through
    "+1\x0b212 555 0100": "America/New_York",  # a vertical tab, which SQL read as the letter v before 0021
}
NOT_PHONES = ["hello world", "notaphone", "020 7946 0018", "+44 20 7946 0018 ext. 12", "+1-800-FLOWERS",
              "+0 123", "+12", "44+20 7946 0018", "++44 20 7946 0018", "+\u0663\u0663\u0663\u0663",
              "+1v212v555v0100"]
NOT_A_PHONE = "which is not +<country code> <number>"


async def test_every_written_form_of_a_phone_is_taken(db: asyncpg.Connection, acme: str) -> None:
    contacts = [{"contact_id": f"p{n}", "phone": phone} for n, phone in enumerate(PHONES)]
    written = await db.fetchval("SELECT reminderd.upsert_contacts('acme', $1::jsonb)", json.dumps(contacts))
    assert written == len(PHONES)
    for n, phone in enumerate(PHONES):
        await db.execute("INSERT INTO reminderd.contacts (tenant_id, contact_id, phone)"
                         " VALUES ('acme', $1, $2)", f"plain{n}", phone)
    zones = {row["contact_id"]: row["resolved_timezone"]
             for row in await db.fetch("SELECT contact_id, resolved_timezone FROM reminderd.contacts")}
    assert zones == {**{f"p{n}": zone for n, zone in enumerate(PHONES.values())},
                     **{f"plain{n}": zone for n, zone in enumerate(PHONES.values())}}
    cleared = [{"contact_id": "p0", "phone": "  "}, {"contact_id": "p1", "phone": ""},
               {"contact_id": "p2", "phone": None}]
    assert await db.fetchval("SELECT reminderd.upsert_contacts('acme', $1::jsonb)", json.dumps(cleared)) == 3
    assert await db.fetchval("SELECT count(*) FROM reminderd.contacts WHERE contact_id IN ('p0', 'p1', 'p2')"
                             " AND phone IS NULL") == 3


@pytest.mark.parametrize("phone", NOT_PHONES)
async def test_a_phone_that_is_not_one_is_refused_naming_the_contact(
    db: asyncpg.Connection, acme: str, phone: str
) -> None:
    quoted = json.dumps(phone, ensure_ascii=False)
    batch = json.dumps([{"contact_id": "ok", "phone": "+12125550100"}, {"contact_id": "p1", "phone": phone}])
    error = await refusal(db, "SELECT reminderd.upsert_contacts('acme', $1::jsonb)", batch)
    assert (error.sqlstate, error.message, error.detail, error.hint) == (
        "22023", f'contact 2 of the batch (contact_id "p1") has phone {quoted}, {NOT_A_PHONE}',
        "Nothing in this batch was changed.", PHONE_HINT)
    rows = ("SELECT reminderd.upsert_contact_rows('acme', ARRAY[ROW('p1', NULL, $1, NULL, NULL, false, true,"
            " false, false)]::reminderd.contact_v1[])")
    error = await refusal(db, rows, phone)
    assert (error.sqlstate, error.message) == (
        "22023", f'contact 1 of the batch (contact_id "p1") has phone {quoted}, {NOT_A_PHONE}')
    error = await refusal(db, "INSERT INTO reminderd.contacts (tenant_id, contact_id, phone)"
                              " VALUES ('acme', 'p1', $1)", phone)
    assert (error.sqlstate, error.message, error.hint) == (
        "22023", f"phone {quoted} of contact acme / p1 is not +<country code> <number>", PHONE_HINT)
    await db.execute("INSERT INTO reminderd.contacts (tenant_id, contact_id) VALUES ('acme', 'p2')")
    error = await refusal(db, "UPDATE reminderd.contacts SET phone = $1 WHERE contact_id = 'p2'", phone)
    assert (error.sqlstate, error.message) == (
        "22023", f"phone {quoted} of contact acme / p2 is not +<country code> <number>")
    assert await db.fetchval("SELECT count(*) FROM reminderd.contacts WHERE phone IS NOT NULL") == 0


async def test_a_contact_with_a_phone_written_before_keeps_moving(db: asyncpg.Connection, acme: str) -> None:
    """Written before 0021 (here: the trigger bypassed): its other fields can change; the phone is
    checked when it is given again."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute("INSERT INTO reminderd.contacts (tenant_id, contact_id, phone)"
                         " VALUES ('acme', 'c9', 'notaphone')")
    await db.execute("UPDATE reminderd.contacts SET country = 'GB' WHERE contact_id = 'c9'")
    assert await db.fetchval("SELECT reminderd.upsert_contacts('acme', $1::jsonb)",
                             json.dumps([{"contact_id": "c9", "attributes": {"plan": "gold"}}])) == 1
    row = await db.fetchrow("SELECT phone, resolved_timezone, timezone_source FROM reminderd.contacts")
    assert tuple(row) == ("notaphone", "Europe/London", "country")
    error = await refusal(db, "SELECT reminderd.upsert_contacts('acme', $1::jsonb)",
                          json.dumps([{"contact_id": "c9", "phone": "notaphone"}]))
    assert error.sqlstate == "22023"


# Migration 0021 on a database with data in it --------------------------------------------------


async def test_0021_upgrades_a_database_holding_what_it_now_refuses(
    empty_database_url: str, receiver: Receiver
) -> None:
    """Written under 0019, which took them: a one-off due at 'infinity' (it would never fire, and
    broke the claim loop's sleep: seconds_until_next_due), one at '-infinity' (an UPDATE took it),
    a recurring row whose first_fire_at was 'infinity', a contact's message whose wall time was
    'infinity' (its contact's zone could not change), contacts whose phone is no phone. 0021
    dead-letters the first with the reason, leaves the second to the expirer, has the third planned
    again, drops the fourth's wall time; the contacts stay as written and their other fields change.
    The daemon then sends the good message without a claim failing; new such values are refused."""
    await asyncio.to_thread(upgrade, empty_database_url, "0020")
    await refresh_reference_data(empty_database_url)  # as `reminderd migrate` loads it
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme", receiver.url)
        await db.execute("UPDATE reminderd.tenants SET timezone = 'Europe/London' WHERE id = 'acme'")
        await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                         " VALUES ('acme', 'forever', 'infinity')")
        await db.execute("SELECT reminderd.schedule('acme', 'ancient', now() + interval '1 hour')")
        await db.execute("UPDATE reminderd.scheduled_messages SET fire_at = '-infinity'"
                         " WHERE ref_id = 'ancient'")
        await db.execute(FIRST_FIRE.replace("'k8'", "'weekly'").format("infinity"))
        await db.execute("SELECT reminderd.schedule('acme', 'good', now())")
        await db.execute("SELECT reminderd.upsert_contacts('acme', $1::jsonb)",
                         json.dumps([{"contact_id": "c9", "phone": "hello world", "country": "GB"}]))
        await db.execute("INSERT INTO reminderd.contacts (tenant_id, contact_id, phone)"
                         " VALUES ('acme', 'c8', 'notaphone')")
        await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, contact_id,"
                         " timezone, timezone_source, local_time) VALUES ('acme', 'wall',"
                         " now() + interval '2 hours', 'c8', 'Europe/London', 'tenant', 'infinity')")

        await asyncio.to_thread(upgrade, empty_database_url)

        moved = ("SELECT status, fire_at, local_time, last_error FROM reminderd.scheduled_messages"
                 " WHERE ref_id = $1")
        forever = await db.fetchrow(moved, "forever")
        assert (forever["status"], forever["last_error"]) == (
            "dead", "fire_at infinity is no time it can fire at (refused since migration 0021): requeue it to"
                    " send it now, or cancel it")
        assert (await db.fetchrow(moved, "weekly"))["fire_at"] is None  # for the planner
        assert (await db.fetchrow(moved, "wall"))["local_time"] is None
        contacts = "SELECT contact_id, phone, resolved_timezone FROM reminderd.contacts ORDER BY contact_id"
        assert [tuple(r) for r in await db.fetch(contacts)] == [("c8", "notaphone", None),
                                                               ("c9", "hello world", "Europe/London")]
        await db.execute("UPDATE reminderd.contacts SET country = 'IN' WHERE contact_id = 'c8'")  # replans
        await db.execute("SELECT reminderd.upsert_contacts('acme', $1::jsonb)",
                         json.dumps([{"contact_id": "c9", "attributes": {"plan": "gold"}}]))
        assert [tuple(r) for r in await db.fetch(contacts)] == [("c8", "notaphone", "Asia/Kolkata"),
                                                               ("c9", "hello world", "Europe/London")]
        await db.execute("UPDATE reminderd.scheduled_messages SET category = 'marketing'"
                         " WHERE ref_id = 'ancient'")
        with pytest.raises(asyncpg.DatetimeFieldOverflowError, match="acme / again is not a finite time"):
            await db.execute("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                             " VALUES ('acme', 'again', 'infinity')")
        with pytest.raises(asyncpg.InvalidParameterValueError, match=re.escape(NOT_A_PHONE)):
            await db.execute("SELECT reminderd.upsert_contacts('acme', $1::jsonb)",
                             json.dumps([{"contact_id": "c7", "phone": "hello world"}]))
        with capture_logs() as logs:
            await drain(fast_settings(empty_database_url))
        rows = {r["ref_id"]: r for r in await db.fetch(
            "SELECT ref_id, status, fire_at, timezone FROM reminderd.scheduled_messages")}
    finally:
        await db.close()
    assert {ref: row["status"] for ref, row in rows.items()} == {
        "forever": "dead", "ancient": "expired", "weekly": "pending", "good": "sent", "wall": "pending"}
    assert rows["weekly"]["fire_at"] is not None and rows["wall"]["timezone"] == "Asia/Kolkata"
    assert [item.message["ref_id"] for item in receiver.received] == ["good"]
    assert [e for e in logs if e["event"] in ("claim_failed", "send_crashed") or e.get("exc_info")] == []


# Broadcasts' wall times and values (migration 0022) --------------------------------------------

PREVIEW = ("SELECT * FROM reminderd.broadcast_preview('acme', '{}'::timestamp,"
           " contact_ids => ARRAY['c1', 'ny'])")
NEW_YORK = ("SELECT reminderd.upsert_contacts('acme',"
            " '[{\"contact_id\": \"ny\", \"timezone\": \"America/New_York\"}]')")
END_OF_TIME = "294276-12-31 23:00:00"  # a timestamp; its instant in New York is past the last timestamptz
PAST_RANGE = "local_time {} of {} is past the range of time a zone can place (4714 BC to 294276 AD)"


@pytest.mark.parametrize("wall", ["-infinity", "infinity", END_OF_TIME])
async def test_a_broadcast_preview_refuses_a_wall_time_no_zone_can_place(
    db: asyncpg.Connection, acme: str, wall: str
) -> None:
    """Before 0022: "cannot subtract infinite timestamps", "timestamp out of range"."""
    await db.execute(A_CONTACT)
    await db.execute(NEW_YORK)
    error = await refusal(db, PREVIEW.format(wall))
    subject = 'the broadcast preview of tenant "acme"'
    message = (f"local_time {wall} of {subject} is not a finite time" if wall.endswith("infinity")
               else PAST_RANGE.format(wall, subject))
    assert (error.sqlstate, error.message, error.hint) == ("22008", message, WALL_HINT)
    one_clear_line(error)


@pytest.mark.parametrize(
    "statement",
    [f"SELECT reminderd.broadcast('acme', 'bx', local_time => '{END_OF_TIME}', contact_ids => ARRAY['ny'])",
     f"SELECT reminderd.schedule('acme', 's1', local_time => '{END_OF_TIME}', timezone => 'America/New_York')",
     f"SELECT reminderd.local_instant('{END_OF_TIME}', 'America/New_York')"],
    ids=["broadcast", "schedule", "local_instant"],
)
async def test_a_wall_time_past_the_range_of_time_is_refused_naming_it(
    db: asyncpg.Connection, acme: str, statement: str
) -> None:
    await db.execute(NEW_YORK)
    error = await refusal(db, statement)
    assert (error.sqlstate, error.message, error.hint) == (
        "22008", PAST_RANGE.format(END_OF_TIME, "this call"), WALL_HINT)
    assert await db.fetchval("SELECT reminderd.local_instant('294276-12-29 23:00', 'America/New_York')"
                             " IS NOT NULL")


@pytest.mark.parametrize(
    ("given", "sqlstate", "message", "hint"),
    [("until => '-infinity'", "22008",
      'until -infinity of broadcast "bw" of tenant "acme" is not a finite time',
      "Give the time it ends at, or NULL for no end."),
     ("until => 'infinity'", "22008", 'until infinity of broadcast "bw" of tenant "acme" is not a finite time',
      "Give the time it ends at, or NULL for no end."),
     ("stage_ahead => '100000 years'", "22023",
      'stage_ahead 100000 years of broadcast "bw" of tenant "acme" is more than a year',
      "Give how long before an occurrence its messages are written, like 1 hour (at most 366 days).")],
    ids=["-infinity", "infinity", "stage_ahead"],
)
async def test_a_recurring_broadcast_is_refused_times_its_stager_cannot_count_with(
    db: asyncpg.Connection, acme: str, given: str, sqlstate: str, message: str, hint: str
) -> None:
    """Before 0022 they were taken, and the daemon's stager failed on them at every round (a
    TypeError comparing datetime.max, an OverflowError)."""
    await db.execute(A_CONTACT)
    error = await refusal(db, f"SELECT reminderd.broadcast('acme', 'bw', cron => '0 9 * * *',"
                              f" contact_ids => ARRAY['c1'], {given})")
    assert (error.sqlstate, error.message, error.hint) == (sqlstate, message, hint)
    one_clear_line(error)
    assert await db.fetchval("SELECT count(*) FROM reminderd.broadcast_requests") == 0


WRITTEN_BEFORE = {  # recurring broadcasts 0021 refuses, written with the triggers bypassed: (column, value)
    "r-att": ("max_attempts", "0"), "r-bf": ("backfill", "'bogus'"), "r-cal": ("calendar", "'xx'"),
    "r-late": ("max_lateness", "'-1 minute'"),
    "r-big": ("payload", "jsonb_build_object('x', repeat('a', 300000))"),
}
ENDED = {
    "r-att": 'max_attempts 0 of broadcast "r-att" of tenant "acme" is less than 1',
    "r-bf": 'backfill "bogus" of broadcast "r-bf" of tenant "acme" is not send, latest or skip',
    "r-cal": 'calendar "xx" of broadcast "r-cal" of tenant "acme" is not a holiday calendar code',
    "r-late": 'max_lateness -00:01:00 of broadcast "r-late" of tenant "acme" is negative',
    "r-big": "its payload is 300017 bytes; at most 262144 (256 KiB)",
}


REQUESTS = "reminderd.broadcast_requests (tenant_id, ref_prefix, contact_ids, cron, created_by"


async def write_before(db: asyncpg.Connection) -> None:
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        for prefix, (column, value) in WRITTEN_BEFORE.items():
            await db.execute(f"INSERT INTO {REQUESTS}, {column}) VALUES ('acme', '{prefix}', ARRAY['c1'],"
                             f" '0 * * * *', 'x', {value})")
        for prefix, until, stage_ahead in (("r-never", "-infinity", "1 hour"),
                                           ("r-ever", "infinity", "1 hour"), ("r-ahead", None, "100000 years")):
            await db.execute(f"INSERT INTO {REQUESTS}, until, stage_ahead) VALUES ('acme', $1, ARRAY['c1'],"
                             " '0 * * * *', 'x', $2::text::timestamptz, $3::text::interval)",
                             prefix, until, stage_ahead)


async def test_the_stager_ends_a_broadcast_whose_values_its_messages_could_not_have_once(
    db: asyncpg.Connection, database_url: str, acme: str
) -> None:
    """Written before 0021 refused them: staging failed on a CHECK constraint (or the payload's
    size) at every occurrence. Now stage_broadcast ends it the first time, saying why."""
    await db.execute(A_CONTACT)
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        for prefix, (column, value) in WRITTEN_BEFORE.items():
            await db.execute(f"INSERT INTO {REQUESTS}, {column}, next_occurrence) VALUES ('acme', '{prefix}',"
                             f" ARRAY['c1'], '0 * * * *', 'x', {value},"
                             " date_trunc('hour', now() AT TIME ZONE 'UTC') + interval '1 hour')")
    with capture_logs() as logs:
        await drain(fast_settings(database_url))
    rows = {r["ref_prefix"]: r for r in await db.fetch(
        "SELECT ref_prefix, ended_at, ended_reason, last_error FROM reminderd.broadcast_requests")}
    for prefix, problem in ENDED.items():
        assert rows[prefix]["ended_at"] is not None
        assert rows[prefix]["ended_reason"] == f"cannot be staged: {problem}"
        assert rows[prefix]["last_error"].endswith(f" not staged: {problem}")
    assert [e for e in logs if e["event"] == "broadcast_step_failed"] == []
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0


async def test_0022_repairs_or_ends_the_recurring_broadcasts_0021_would_refuse(
    empty_database_url: str, receiver: Receiver
) -> None:
    """A 0021 database holding recurring broadcasts written before (the triggers bypassed): values
    their messages could not have, an until that is not finite, a stage_ahead of 100000 years.
    0022 ends the first with the reason, takes until infinity as no end and ends -infinity's,
    brings stage_ahead to a year; the daemon's stager then fails on none of them."""
    await asyncio.to_thread(upgrade, empty_database_url, "0021")
    db = await asyncpg.connect(empty_database_url)
    try:
        await add_tenant(db, "acme", receiver.url)
        await db.execute(A_CONTACT)
        await write_before(db)
        await asyncio.to_thread(upgrade, empty_database_url)
        rows = {r["ref_prefix"]: r for r in await db.fetch(
            "SELECT ref_prefix, ended_at, ended_reason, last_error, until, stage_ahead"
            " FROM reminderd.broadcast_requests")}
        for prefix, problem in ENDED.items():
            assert rows[prefix]["ended_reason"] == f"cannot be staged: {problem} (refused since migration 0021)"
            assert rows[prefix]["last_error"] == f"{problem} (refused since migration 0021)"
        assert rows["r-never"]["ended_reason"] == ("cannot be staged: until -infinity is no time (refused since"
                                                   " migration 0022)")
        assert (rows["r-ever"]["ended_at"], rows["r-ever"]["until"]) == (None, None)
        assert rows["r-ever"]["last_error"] == ("until infinity is no time (refused since migration 0022): it"
                                                " recurs with no end")
        assert (rows["r-ahead"]["ended_at"], rows["r-ahead"]["stage_ahead"]) == (None, timedelta(days=366))
        store = await Store.connect(empty_database_url)
        try:
            with capture_logs() as logs:
                for _ in range(3):  # plan, stage, the next: each step of the stager
                    await BroadcastStager(store).run_once()
        finally:
            await store.close()
        planned = await db.fetch("SELECT ref_prefix FROM reminderd.broadcast_requests"
                                 " WHERE ended_at IS NULL AND next_occurrence IS NOT NULL ORDER BY ref_prefix")
    finally:
        await db.close()
    assert [r["ref_prefix"] for r in planned] == ["r-ahead", "r-ever"]
    assert [e for e in logs if e["event"] == "broadcast_step_failed"] == []
