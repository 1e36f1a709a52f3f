"""Sending limits a CHECK or a foreign key refuses, written in plain SQL (migration 0029): refused
in a sentence naming the value and whose it is, with a HINT, the constraint's SQLSTATE and name,
as the CLI and the API have said them all along."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest
from test_audience_cli import sql

from reminderd.exceptions import DatabaseRefused
from reminderd.migrate import upgrade
from reminderd.refusals import one_line
from reminderd.testing import add_tenant

PER_SECOND_HINT = "Give how many messages it may send in a rolling second, at least 1, or NULL for no limit."
PER_HOUR_HINT = "Give how many messages it may send in a rolling hour, at least 1, or NULL for no limit."
IN_FLIGHT_HINT = ("Give how many of its callbacks may be in flight at once, all daemons together, at least 1,"
                  " or NULL for each daemon's REMINDERD_CONCURRENCY.")
ENDPOINT_RATE_HINT = "Give how many callbacks it may get in a rolling second, at least 1, or NULL for no limit."
POLICY_HINT = ("Over a frequency cap a message waits until the cap allows it (defer) or is skipped (skip).")
MESSAGES_HINT = "Give how many messages of the category one recipient may get in the window, at least 1."
PER_HINT = "Give the rolling window the cap counts in, more than 0 and at most 366 days, like 1 day."

CAP = "INSERT INTO reminderd.frequency_caps VALUES ('acme', 'marketing', {}, {})"
REFUSED: dict[str, tuple[str, str, str, str, str]] = {  # statement, SQLSTATE, constraint, message, HINT
    "tenant max_per_second": (
        "UPDATE reminderd.tenants SET max_per_second = 0 WHERE id = 'acme'", "23514",
        "max_per_second_positive", 'max_per_second 0 of tenant "acme" is less than 1', PER_SECOND_HINT),
    "tenant max_per_hour": (
        "UPDATE reminderd.tenants SET max_per_hour = -5 WHERE id = 'acme'", "23514",
        "max_per_hour_positive", 'max_per_hour -5 of tenant "acme" is less than 1', PER_HOUR_HINT),
    "new tenant max_per_hour": (
        "INSERT INTO reminderd.tenants (id, callback_url, max_per_hour)"
        " VALUES ('beta', 'http://127.0.0.1:9/', 0)",
        "23514", "max_per_hour_positive", 'max_per_hour 0 of tenant "beta" is less than 1', PER_HOUR_HINT),
    "frequency_cap_policy": (
        "UPDATE reminderd.tenants SET frequency_cap_policy = 'drop' WHERE id = 'acme'", "23514",
        "frequency_cap_policy_is_known", 'frequency_cap_policy "drop" of tenant "acme" is not defer or skip',
        POLICY_HINT),
    "endpoint max_in_flight": (
        "UPDATE reminderd.endpoints SET max_in_flight = 0", "23514", "max_in_flight_positive",
        'max_in_flight 0 of endpoint "127.0.0.1:9" is less than 1', IN_FLIGHT_HINT),
    "new endpoint max_per_second": (
        "INSERT INTO reminderd.endpoints (endpoint, max_per_second) VALUES ('hooks.example.com:443', -1)",
        "23514", "endpoint_max_per_second_positive",
        'max_per_second -1 of endpoint "hooks.example.com:443" is less than 1', ENDPOINT_RATE_HINT),
    "cap max_messages": (
        CAP.format(0, "'1 day'"), "23514", "max_messages_positive",
        'max_messages 0 of the marketing frequency cap of tenant "acme" is less than 1', MESSAGES_HINT),
    "cap per 0": (
        CAP.format(2, "'0 s'"), "23514", "per_in_range",
        'per 00:00:00 of the marketing frequency cap of tenant "acme" is not more than 0', PER_HINT),
    "cap per over a year": (
        CAP.format(2, "'400 days'"), "23514", "per_in_range",
        'per 400 days of the marketing frequency cap of tenant "acme" is more than 366 days', PER_HINT),
    "cap of a ghost": (
        "INSERT INTO reminderd.frequency_caps VALUES ('ghost', 'marketing', 2, '1 day')", "23503",
        "frequency_caps_tenant_id_fkey", 'unknown tenant "ghost"',
        "Create the tenant first (reminderd tenant add), then its caps."),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_limit_its_constraint_refuses_is_refused_in_a_sentence(
    db: asyncpg.Connection, case: str
) -> None:
    await add_tenant(db, "acme", "http://127.0.0.1:9/cb")
    statement, sqlstate, constraint, message, hint = REFUSED[case]
    with pytest.raises(asyncpg.PostgresError) as refused:
        await db.execute(statement)
    error = refused.value
    assert (error.sqlstate, error.constraint_name, error.message, error.hint, error.detail) == (
        sqlstate, constraint, message, hint, None)
    line = one_line(DatabaseRefused(error.message, sqlstate=error.sqlstate, constraint=error.constraint_name,
                                    detail=error.detail, hint=error.hint))
    assert line == f"{message}; {hint[0].lower()}{hint[1:].rstrip('.')}"


async def test_valid_limits_and_a_cap_of_a_known_tenant_are_taken(db: asyncpg.Connection) -> None:
    await add_tenant(db, "acme", "http://127.0.0.1:9/cb")
    await db.execute("UPDATE reminderd.tenants SET max_per_second = 1, max_per_hour = 1,"
                     " frequency_cap_policy = 'skip' WHERE id = 'acme'")
    await db.execute("UPDATE reminderd.tenants SET max_per_second = NULL, max_per_hour = NULL"
                     " WHERE id = 'acme'")
    await db.execute("UPDATE reminderd.endpoints SET max_in_flight = 1, max_per_second = 1")
    await db.execute(CAP.format(1, "'366 days'"))
    await db.execute("UPDATE reminderd.frequency_caps SET max_messages = 3, per = '1 day'")
    assert await db.fetchval("SELECT max_messages FROM reminderd.frequency_caps") == 3


def test_0029_runs_forward_over_limits_and_caps_already_there(empty_database_url: str) -> None:
    url = empty_database_url
    upgrade(url, "0028")
    sql(url, "INSERT INTO reminderd.tenants (id, callback_url, max_per_second, max_per_hour)"
             " VALUES ('acme', 'http://127.0.0.1:9/cb', 5, 100)")
    sql(url, "UPDATE reminderd.endpoints SET max_in_flight = 4")
    sql(url, CAP.format(2, "'1 day'"))
    assert upgrade(url, "0029") == ["0029"]
    limits = sql(url, "SELECT max_per_second, max_per_hour FROM reminderd.tenants")
    assert [tuple(r) for r in limits] == [(5, 100)]
    assert [tuple(r) for r in sql(url, "SELECT max_messages, per FROM reminderd.frequency_caps")] == [
        (2, timedelta(days=1))]
    with pytest.raises(asyncpg.CheckViolationError, match=r'max_in_flight 0 of endpoint "127\.0\.0\.1:9"'):
        sql(url, "UPDATE reminderd.endpoints SET max_in_flight = 0")
