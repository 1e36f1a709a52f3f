"""Which database errors mean "not now" (retried through: the daemon's outcomes wait for the
database) and which mean "not this" (a refusal of the statement's content): store.unavailable()
and the reminderd exception translated() makes of each."""

from __future__ import annotations

import asyncpg
import pytest

from reminderd.exceptions import DatabaseRefused, DatabaseUnavailable
from reminderd.store import translated, unavailable


def refusal(sqlstate: str, message: str = "refused") -> asyncpg.PostgresError:
    """The exception asyncpg raises for an ErrorResponse with this SQLSTATE."""
    error = asyncpg.PostgresError.new({"C": sqlstate, "M": message, "S": "ERROR"})
    assert isinstance(error, asyncpg.PostgresError)
    return error


NOT_NOW = [
    # A session terminated mid-call (pg_terminate_backend, a PgBouncer restart): asyncpg 0.32's
    # protocol is left in a state it did not expect, and says so with a plain Exception.
    asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    ConnectionResetError(104, "Connection reset by peer"),
    TimeoutError(),
    refusal("08006", "connection failure"),
    refusal("08P99", "a class 08 state asyncpg has no class for"),
    refusal("57P01", "terminating connection due to administrator command"),
    refusal("57P02", "terminating connection because of crash of another server process"),
    refusal("57P03", "the database system is starting up"),
    refusal("57P05", "terminating connection due to idle-session timeout"),
    refusal("53300", "sorry, too many clients already"),
    refusal("25006", "cannot execute INSERT in a read-only transaction"),
    refusal("40001", "could not serialize access due to concurrent update"),
    refusal("40P01", "deadlock detected"),
    refusal("40003", "statement completion unknown"),
]

NOT_THIS = [
    refusal("23505", "duplicate key value violates unique constraint"),
    refusal("22P02", "invalid input syntax for type integer"),
    refusal("P0001", "a function's own refusal"),
    refusal("42501", "permission denied for table scheduled_messages"),
    refusal("57014", "canceling statement due to statement timeout"),  # the statement, not the server
    refusal("25P02", "current transaction is aborted"),
    asyncpg.DataError("invalid input for query argument $1: 'x' (an integer is required)"),
]


@pytest.mark.parametrize("error", NOT_NOW, ids=lambda e: f"{type(e).__name__}-{getattr(e, 'sqlstate', '')}")
def test_lost_connections_restarts_failovers_and_conflicts_are_unavailable(error: Exception) -> None:
    assert unavailable(error)
    mine = translated(error)
    assert isinstance(mine, DatabaseUnavailable)
    assert str(mine).startswith(type(error).__name__)  # the log's `error` names what happened


@pytest.mark.parametrize("error", NOT_THIS, ids=lambda e: f"{type(e).__name__}-{getattr(e, 'sqlstate', '')}")
def test_a_refusal_of_the_content_is_not_unavailable(error: Exception) -> None:
    assert not unavailable(error)
    assert not isinstance(translated(error), DatabaseUnavailable)


def test_a_refusal_keeps_its_sqlstate() -> None:
    mine = translated(refusal("23505", "duplicate key"))
    assert isinstance(mine, DatabaseRefused) and mine.sqlstate == "23505"


def test_errors_that_are_not_the_databases_are_neither() -> None:
    bug = KeyError("a bug")
    assert not unavailable(bug)
    assert translated(bug) is bug
    assert not unavailable(asyncpg.ClientConfigurationError("invalid sslmode"))  # the URL must change
