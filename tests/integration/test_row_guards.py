"""Rows the daemon could not read or move on are refused however they are written (migration 0033):

- a time outside the years the daemon reads (Python's datetime ends at 9999) in any of the row's
  timestamp columns, and an attempts or runs whose next +1 would overflow, refused in a sentence
  (22008, 22003) on INSERT and UPDATE; a value a row already had is left alone, so it can still be
  moved on or ended;
- a contact's timezone or resolved_timezone that is no zone, refused (22023) however it is
  written: an UPDATE of resolved_timezone alone, or a session that says reminderd.contacts_resolved
  itself (the bulk path's flag), each distinct zone checked once per statement;
- migration 0033 upgrades a database holding such contacts: a posix/ copy is given its IANA name,
  localtime and the like are left (both said in a WARNING), a zone that is none is resolved again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from support import CALLBACK
from test_audience_cli import sql

from reminderd.migrate import refresh_reference_data, upgrade
from reminderd.testing import add_tenant

pytestmark = pytest.mark.shared_database

READ_DETAIL = "The daemon reads times between 0001-01-02 and 9999-12-30 UTC."
TIME_HINT = "Give a time in that range, like now() + interval '1 hour'."
ZONE_HINT = ("Use an IANA name such as Europe/London or Asia/Kolkata, and set the contact's timezone"
             " (reminderd.upsert_contacts): its resolved_timezone follows.")


@pytest.fixture
async def acme(db: asyncpg.Connection) -> str:
    await add_tenant(db, "acme", CALLBACK)
    return "acme"


@pytest.fixture
async def app(db: asyncpg.Connection, database_url: str, acme: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as an application role of acme's."""
    await db.execute("CREATE ROLE guards_app IN ROLE reminderd_app")
    await db.execute("INSERT INTO reminderd.tenant_members (role_name, tenant_id)"
                     " VALUES ('guards_app', 'acme')")
    connection = await asyncpg.connect(database_url)
    await connection.execute("SET ROLE guards_app")
    try:
        yield connection
    finally:
        await connection.close()
        await db.execute("DELETE FROM reminderd.tenant_members WHERE role_name = 'guards_app'")
        await db.execute("DROP OWNED BY guards_app; DROP ROLE guards_app")


async def refusal(db: asyncpg.Connection, statement: str, *args: object) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as failure:
        await db.execute(statement, *args)
    return failure.value


# Times and counters ------------------------------------------------------------------------------


@pytest.mark.parametrize(("column", "value", "shown"), [
    ("scheduled_for", "10000-01-01 00:00+00", "10000-01-01T00:00:00Z"),
    ("fire_at", "9999-12-31 20:00-05", "10000-01-01T01:00:00Z"),
    ("until", "0001-01-01 00:00+00", "0001-01-01T00:00:00Z"),
    ("sent_at", "infinity", "infinity"),
    ("lease_expires_at", "10000-01-01 00:00+00", "10000-01-01T00:00:00Z"),
    ("created_at", "0500-01-01 00:00+00 BC", "0500-01-01T00:00:00Z BC"),
    ("updated_at", "10000-01-01 00:00+00", "10000-01-01T00:00:00Z"),
])
async def test_a_time_the_daemon_cannot_read_is_refused_naming_it(
    app: asyncpg.Connection, column: str, value: str, shown: str
) -> None:
    await app.fetchval("SELECT reminderd.schedule_cron('acme', 'daily', '0 9 * * *')")
    failure = await refusal(app, f"UPDATE reminderd.scheduled_messages SET {column} = '{value}'"
                                 " WHERE ref_id = 'daily'")
    assert (failure.sqlstate, failure.message, failure.detail, failure.hint) == (
        "22008", f"{column} {shown} of message acme / daily is outside the years the daemon can read",
        READ_DETAIL, TIME_HINT)


async def test_a_wall_time_the_daemon_cannot_read_is_refused(app: asyncpg.Connection) -> None:
    await app.fetchval("SELECT reminderd.schedule('acme', 'wall',"
                       " local_time => (now() + interval '1 day')::timestamp)")
    failure = await refusal(app, "UPDATE reminderd.scheduled_messages SET local_time = '10000-01-01 09:00'"
                                 " WHERE ref_id = 'wall'")
    assert (failure.sqlstate, failure.message) == (
        "22008",
        "local_time 10000-01-01 09:00:00 of message acme / wall is outside the years the daemon can read")


@pytest.mark.parametrize(("column", "value"), [("attempts", 2147483647), ("attempts", -1), ("runs", 2147483647),
                                               ("runs", 1000000001)])
async def test_a_counter_the_daemon_would_overflow_is_refused(app: asyncpg.Connection, column: str,
                                                              value: int) -> None:
    await app.fetchval("SELECT reminderd.schedule_cron('acme', 'daily', '0 9 * * *')")
    failure = await refusal(app, f"UPDATE reminderd.scheduled_messages SET {column} = $1"
                                 " WHERE ref_id = 'daily'", value)
    assert (failure.sqlstate, failure.message) == (
        "22003", f"{column} {value} of message acme / daily is outside 0 to 1000000000")
    assert failure.hint is not None and failure.detail is not None


async def test_a_plain_insert_is_refused_them_too(app: asyncpg.Connection) -> None:
    failure = await refusal(app, "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at)"
                                 " VALUES ('acme', 'far', '10000-01-01 00:00+00')")
    assert (failure.sqlstate, failure.message) == (
        "22008", "fire_at 10000-01-01T00:00:00Z of message acme / far is outside the years the daemon can read")
    failure = await refusal(app, "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at,"
                                 " attempts) VALUES ('acme', 'many', now(), 2147483647)")
    assert failure.sqlstate == "22003"


async def test_a_value_written_before_is_left_alone_and_the_row_moves_on(
    db: asyncpg.Connection, acme: str
) -> None:
    """A row holding such a value already (written before 0033) can still be changed otherwise,
    and ended, by the daemon and by hand; a time near the ends of the range is taken."""
    odd = await db.fetchval("SELECT reminderd.schedule('acme', 'odd', now() + interval '1 hour')")
    trigger = "TRIGGER scheduled_messages_values_in_range_update"
    await db.execute(f"ALTER TABLE reminderd.scheduled_messages DISABLE {trigger}")
    await db.execute("UPDATE reminderd.scheduled_messages SET scheduled_for = '10000-01-01 00:00+00',"
                     " attempts = 2147483647 WHERE id = $1", odd)
    await db.execute(f"ALTER TABLE reminderd.scheduled_messages ENABLE {trigger}")
    await db.execute("UPDATE reminderd.scheduled_messages SET payload = '{\"a\": 1}',"
                     " fire_at = now() + interval '2 hours' WHERE id = $1", odd)
    await db.execute("UPDATE reminderd.scheduled_messages SET status = 'dead', last_error = 'unreadable'"
                     " WHERE id = $1", odd)
    assert await db.fetchval("SELECT status FROM reminderd.scheduled_messages WHERE id = $1", odd) == "dead"
    await db.execute("UPDATE reminderd.scheduled_messages SET scheduled_for = '9999-12-29 23:00+00',"
                     " attempts = 1000000000 WHERE id = $1", odd)


# Contacts' zones -----------------------------------------------------------------------------------


async def test_a_resolved_timezone_that_is_no_zone_is_refused_however_it_is_written(
    app: asyncpg.Connection
) -> None:
    await app.execute("""SELECT reminderd.upsert_contacts('acme',
                         '[{"contact_id": "u1"}, {"contact_id": "u2"}]')""")
    failure = await refusal(app, "UPDATE reminderd.contacts SET resolved_timezone = 'Mars/Base',"
                                 " timezone_source = 'contact' WHERE contact_id = 'u1'")
    assert (failure.sqlstate, failure.message, failure.hint) == (
        "22023", 'unknown timezone "Mars/Base" for contact acme / u1 (its resolved_timezone)', ZONE_HINT)
    # The bulk path's flag, said by the session itself, skips the resolving, not the check.
    async with app.transaction():
        await app.execute("SELECT set_config('reminderd.contacts_resolved', 'on', true)")
        failure = await refusal(app, "UPDATE reminderd.contacts SET timezone = 'Mars/Base'"
                                     " WHERE contact_id = 'u2'")
    assert failure.message == 'unknown timezone "Mars/Base" for contact acme / u2 (its timezone)'
    async with app.transaction():
        await app.execute("SELECT set_config('reminderd.contacts_resolved', 'on', true)")
        failure = await refusal(app, "INSERT INTO reminderd.contacts (tenant_id, contact_id, resolved_timezone,"
                                     " timezone_source) VALUES ('acme', 'u3', 'Europe/London', 'contact'),"
                                     " ('acme', 'u4', 'Mars/Base', 'contact')")
    assert failure.message == 'unknown timezone "Mars/Base" for contact acme / u4 (its resolved_timezone)'
    await app.execute("UPDATE reminderd.contacts SET resolved_timezone = 'Asia/Tokyo',"
                      " timezone_source = 'contact' WHERE contact_id = 'u1'")
    rows = await app.fetch("SELECT contact_id, resolved_timezone FROM reminderd.contacts ORDER BY 1")
    assert [tuple(r) for r in rows] == [("u1", "Asia/Tokyo"), ("u2", None)]


async def test_a_contacts_zone_written_before_is_left_alone(db: asyncpg.Connection, acme: str) -> None:
    await db.execute("""SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "u1", "country": "IN"}]')""")
    await db.execute("ALTER TABLE reminderd.contacts DISABLE TRIGGER contacts_check_zones_update")
    await db.execute("UPDATE reminderd.contacts SET resolved_timezone = 'Mars/Base' WHERE contact_id = 'u1'")
    await db.execute("ALTER TABLE reminderd.contacts ENABLE TRIGGER contacts_check_zones_update")
    await db.execute("UPDATE reminderd.contacts SET attributes = '{\"plan\": \"pro\"}' WHERE contact_id = 'u1'")
    await db.execute("UPDATE reminderd.contacts SET country = 'JP' WHERE contact_id = 'u1'")
    assert await db.fetchval("SELECT resolved_timezone FROM reminderd.contacts") == "Asia/Tokyo"


def test_0033_resolves_again_the_contacts_whose_zone_is_none(empty_database_url: str) -> None:
    url = empty_database_url
    upgrade(url, "0032")
    asyncio.run(refresh_reference_data(url))
    sql(url, "INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', 'https://example.com/cb',"
             " 'UTC')")
    sql(url, """SELECT reminderd.upsert_contacts('acme', '[{"contact_id": "own", "timezone": "Asia/Tokyo",
                "country": "IN"}, {"contact_id": "by_hand", "country": "IN"}, {"contact_id": "bare"},
                {"contact_id": "fine", "timezone": "Europe/Paris"}]')""")
    sql(url, "UPDATE reminderd.contacts SET resolved_timezone = 'Mars/Base', timezone_source = 'contact'"
             " WHERE contact_id IN ('by_hand', 'bare')")
    sql(url, "DO $$ BEGIN PERFORM set_config('reminderd.contacts_resolved', 'on', true);"
             " UPDATE reminderd.contacts SET timezone = 'Mars/Olympus', resolved_timezone = 'Mars/Olympus'"
             " WHERE contact_id = 'own'; END $$")
    assert upgrade(url, "0033") == ["0033"]
    rows = sql(url, "SELECT contact_id, timezone, resolved_timezone, timezone_source FROM reminderd.contacts"
                    " ORDER BY 1")
    assert [tuple(r) for r in rows] == [("bare", None, None, None),
                                        ("by_hand", None, "Asia/Kolkata", "country"),
                                        ("fine", "Europe/Paris", "Europe/Paris", "contact"),
                                        ("own", None, "Asia/Kolkata", "country")]


def test_0033_gives_a_posix_copy_its_iana_name_and_leaves_a_host_zone_saying_so(
    empty_database_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """posix/Asia/Kolkata is Asia/Kolkata by another name: its contact keeps its zone (spelt as an
    IANA name) and its messages their times. localtime is some host's zone: left as it is, for an
    operator to see to. Neither moves a message, and the migration says how many it changed or left."""
    url = empty_database_url
    upgrade(url, "0031")  # before 0032 refused these names
    asyncio.run(refresh_reference_data(url))
    sql(url, "INSERT INTO reminderd.tenants (id, callback_url, timezone) VALUES ('acme', 'https://example.com/cb',"
             " 'UTC')")
    sql(url, """SELECT reminderd.upsert_contacts('acme', '[
                {"contact_id": "kolkata", "timezone": "posix/Asia/Kolkata"},
                {"contact_id": "host", "timezone": "localtime"},
                {"contact_id": "fine", "timezone": "Europe/Paris"}]')""")
    sql(url, "SELECT reminderd.broadcast('acme', 'wave', date_trunc('day', now() AT TIME ZONE 'UTC')"
             " + interval '10 days 04:00', everyone => true)")
    planned = "SELECT contact_id, fire_at, timezone FROM reminderd.scheduled_messages ORDER BY contact_id"
    before = [tuple(r) for r in sql(url, planned)]
    capfd.readouterr()
    assert upgrade(url, "0033") == ["0032", "0033"]
    said = capfd.readouterr().err
    rows = sql(url, "SELECT contact_id, timezone, resolved_timezone FROM reminderd.contacts ORDER BY 1")
    assert [tuple(r) for r in rows] == [("fine", "Europe/Paris", "Europe/Paris"),
                                        ("host", "localtime", "localtime"),
                                        ("kolkata", "Asia/Kolkata", "Asia/Kolkata")]
    after = [tuple(r) for r in sql(url, planned)]
    assert [(contact, fire_at) for contact, fire_at, _ in after] == [(c, f) for c, f, _ in before]
    assert [zone for _, _, zone in after] == ["Europe/Paris", "localtime", "Asia/Kolkata"]
    assert "reminderd migrate: warning: 1 contact with a posix/ zone given its IANA name" in said
    assert "reminderd migrate: warning: 1 contact left in the zone of no IANA name (localtime)" in said



# Zones stored under their IANA name (migration 0039) ------------------------------------------------

async def warnings_of(db: asyncpg.Connection, statement: str, *args: object) -> list[str]:
    """The WARNINGs `statement` raised, each as message / DETAIL / HINT."""
    said: list[asyncpg.PostgresMessage] = []

    def listen(_connection: object, message: asyncpg.PostgresMessage) -> None:
        said.append(message)

    db.add_log_listener(listen)
    try:
        await db.execute(statement, *args)
    finally:
        db.remove_log_listener(listen)
    return [f"{m.message} / {m.detail} / {m.hint}" for m in said if m.severity == "WARNING"]


def renamed(subject: str) -> str:
    return (f'timezone "posix/Europe/Paris" for {subject} stored as "Europe/Paris" / posix/Europe/Paris is'
            " tzdata's copy of Europe/Paris under another name, which the zone lists of Python, the dashboard"
            " and the CLI do not have. / Write Europe/Paris.")


@pytest.mark.parametrize(
    ("statement", "subject"),
    [
        ("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, timezone)"
         " VALUES ('acme', 'r1', now() + interval '1 day', 'posix/Europe/Paris')", "message acme / r1"),
        ("SELECT reminderd.schedule('acme', 'r1', fire_in => '1 day', timezone => 'posix/Europe/Paris')",
         'a message of tenant "acme"'),
        ("SELECT reminderd.schedule('acme', 'r1', local_time => '{local}', timezone => 'posix/Europe/Paris')",
         'a message of tenant "acme"'),
        ("SELECT reminderd.schedule_cron('acme', 'r1', '0 9 * * *', 'posix/Europe/Paris')",
         'a message of tenant "acme"'),
    ],
    ids=["insert", "schedule", "local_time", "cron"],
)
async def test_a_message_given_a_posix_copy_of_a_zone_stores_its_iana_name_saying_so(
    db: asyncpg.Connection, statement: str, subject: str
) -> None:
    await add_tenant(db, "acme", CALLBACK)
    local = datetime.combine(date.today() + timedelta(days=30), time(9))
    assert await warnings_of(db, statement.replace("{local}", local.isoformat(" "))) == [renamed(subject)]
    row = await db.fetchrow("SELECT timezone, fire_at FROM reminderd.scheduled_messages WHERE ref_id = 'r1'")
    assert row["timezone"] == "Europe/Paris"
    if "local_time" in statement:  # timed in Paris
        assert row["fire_at"] == local.replace(tzinfo=ZoneInfo("Europe/Paris"))
    assert await warnings_of(db, "UPDATE reminderd.scheduled_messages SET timezone = 'posix/Europe/Paris'"
                                 " WHERE ref_id = 'r1'") == [renamed("message acme / r1")]
    assert await db.fetchval("SELECT timezone FROM reminderd.scheduled_messages WHERE ref_id = 'r1'") == (
        "Europe/Paris")


async def test_a_tenant_given_a_posix_copy_of_a_zone_stores_its_iana_name_saying_so(
    db: asyncpg.Connection,
) -> None:
    insert = ("INSERT INTO reminderd.tenants (id, callback_url, timezone)"
              " VALUES ('acme', $1, 'posix/Europe/Paris')")
    assert await warnings_of(db, insert, CALLBACK) == [renamed('tenant "acme"')]
    await db.execute("UPDATE reminderd.tenants SET timezone = 'Asia/Kolkata'")
    assert await warnings_of(db, "UPDATE reminderd.tenants SET timezone = 'posix/Europe/Paris'") == [
        renamed('tenant "acme"')]
    assert await db.fetchval("SELECT timezone FROM reminderd.tenants") == "Europe/Paris"


@pytest.mark.parametrize(
    ("statement", "subject"),
    [
        ("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, timezone)"
         " VALUES ('acme', 'r1', now() + interval '1 day', $1)", " for message acme / r1"),
        ("UPDATE reminderd.tenants SET timezone = $1", ' for tenant "acme"'),
        ("SELECT reminderd.schedule('acme', 'r1', local_time => now()::timestamp + interval '1 day',"
         " timezone => $1)", ""),
    ],
    ids=["message", "tenant", "local_time"],
)
async def test_a_zone_counting_leap_seconds_is_refused_naming_the_zone_to_use(
    db: asyncpg.Connection, statement: str, subject: str
) -> None:
    await add_tenant(db, "acme", CALLBACK)
    with pytest.raises(asyncpg.InvalidParameterValueError) as refused:
        await db.execute(statement, "right/Europe/Paris")
    error = refused.value
    assert (error.message, error.detail, error.hint) == (
        f'unknown timezone "right/Europe/Paris"{subject}',
        "right/Europe/Paris is a copy of Europe/Paris counting leap seconds, not an IANA zone.",
        "Use Europe/Paris.")
    assert await db.fetchval("SELECT count(*) FROM reminderd.scheduled_messages") == 0
