"""Every error reminderd raises on purpose. A class's docstring is its default message."""

from __future__ import annotations

# Exit statuses of the command line and the daemon.
EX_USAGE = 2  # bad command-line input (argparse's own status)
EX_CONFIG = 78  # sysexits.h: a configuration error; systemd should not restart-loop on it


class ReminderdError(Exception):
    """reminderd failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class ConfigError(ReminderdError):
    """The configuration is invalid: fix the named REMINDERD_* setting."""


class CallbackRefused(ReminderdError):
    """The callback address is not allowed (not http(s), or not a public address): every attempt
    would be refused, so the row is dead-lettered at once."""


class CallbackFailed(ReminderdError):
    """The callback's HTTP exchange failed before a complete answer (connection, TLS or protocol):
    a retry may succeed."""


class DatabaseError(ReminderdError):
    """The database failed."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached right now (refused, reset, timed out, restarting): retry."""


class DatabaseRefused(DatabaseError):
    """The database refused a statement; its SQLSTATE, message, DETAIL and HINT say why."""

    def __init__(
        self, message: str, *, sqlstate: str | None = None, detail: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint


class SchemaMissing(DatabaseRefused):
    """The reminderd schema is missing or out of date: run `reminderd migrate`."""
